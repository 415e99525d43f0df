import { asyncScheduler, defer, map, mergeMap, timer, type Observable, type SchedulerLike } from 'rxjs';
import { moduleLogger, type Logger } from '../src/log.js';
import type { SourceEvent } from '../src/model.js';
import { errorMessage } from '../src/errors.js';
import { reconnectWithBackoff, retryLogLevel, type BackoffOptions } from '../operators/reconnectWithBackoff.js';
import { publishable, type ForwardPolicy, type Skip } from './procnetPolicy.js';
import { StabilityGate } from './procnetStability.js';
import type { ListeningSocket } from './procnetTable.js';

/** One read of the namespace's socket table. */
export interface SocketRead {
  /**
   * Equal fingerprints mean equal sockets, so an unchanged table costs a comparison, not a
   * decode (the sock_diag reader's raw records; the /proc/net reader's text).
   */
  readonly fingerprint: Buffer | string;
  decode(): readonly ListeningSocket[];
}

/** Where the sockets come from: sock_diag, /proc/net (procnetClient.ts), or a test's script. */
export interface SocketTable {
  /** For the log line that says which reader is used. */
  readonly name: string;
  /** Reads the whole table; throws when it cannot. */
  read(): SocketRead;
  /**
   * The inodes, among `candidates`, of sockets that are the agent's own (its placeholders, status
   * endpoint, loopback forwarders) or a `portstream host` running in the VM. Asked only when a
   * scan shows sockets not seen before.
   */
  ownInodes(candidates: ReadonlySet<number>): ReadonlySet<number>;
  /**
   * Optional: a cheap token that changes whenever a socket is bound or starts listening (the
   * kernel's per-namespace counts of sockets in use). While it stays the same, a settled scan
   * skips the read; a read every `fullScanMs` covers the changes that cancel out in the counts.
   */
  changeToken?(): string;
}

/** What the host-network source publishes (its policy), how often it looks and how long a socket must stand. */
export interface ProcnetOptions {
  readonly policy: ForwardPolicy;
  /** How often the table is read. */
  readonly scanMs?: number;
  /** How long a port must stand before it is published. */
  readonly stableMs?: number;
  /**
   * The table is read at least this often even when the change token says nothing changed (a
   * listener opened as a connection closed leaves the counts as they were).
   */
  readonly fullScanMs?: number;
  /** An unchanged table is still re-evaluated this often (the interface's addresses may change). */
  readonly refreshMs?: number;
  readonly backoff?: BackoffOptions;
  readonly scheduler?: SchedulerLike;
  /** Where it logs, through a child naming its module; without one it logs nothing. */
  readonly logger?: Logger | undefined;
}

/** The figures behind these are in docs/procnet.md ("Choosing the intervals"). */
export const procnetDefaults = { scanMs: 200, stableMs: 1000, fullScanMs: 2000, refreshMs: 30_000 } as const;

/**
 * Listeners of the VM's own network namespace (host-network containers, a dev server started in
 * the VM) as source events: TCP in LISTEN and bound, unconnected UDP, minus the agent's own
 * sockets, excluded ports and addresses the host end cannot reach. The table is read every
 * `scanMs`; a port is published once it has stood for `stableMs` and removed at the first scan
 * it is gone from. A failing read keeps what is published and is retried with back-off.
 *
 *   scans:   x----x----x----x----x----x----x---   x = read (scanMs); A listens from the 2nd
 *   events:  s--------------a--------r---------   s = snapshot, a = +A after stableMs, r = −A
 */
export function procnetEvents(table: SocketTable, opts: ProcnetOptions): Observable<SourceEvent> {
  const { scanMs, stableMs, fullScanMs, refreshMs } = { ...procnetDefaults, ...withoutUndefined(opts) };
  const scheduler = opts.scheduler ?? asyncScheduler;
  const log = moduleLogger('procnet', opts.logger);
  return defer(() => {
    log.info(`host-network listeners: reading ${table.name}, checked every ${String(scanMs)} ms; a port is published once it has stood ${String(stableMs)} ms`);
    const gate = new StabilityGate(stableMs);
    const own = new OwnInodes(table, Math.floor(stableMs / 2));
    const said = new Map<string, Skip>();
    let last: Buffer | string | undefined;
    let lastRead = -Infinity;
    let lastFull = -Infinity;
    let token: string | undefined;
    let failing = false;
    const scan = (): SourceEvent[] => {
      const now = scheduler.now();
      // Waiting ports need every scan (their time is counted by scans); otherwise ask the token.
      const quiet = gate.settled && now - lastRead < fullScanMs;
      const nextToken = table.changeToken?.();
      if (quiet && nextToken !== undefined && nextToken === token) return [];
      token = nextToken;
      const read = table.read();
      lastRead = now;
      if (failing) log.info(`reading ${table.name} works again`);
      failing = false;
      if (gate.settled && last !== undefined && now - lastFull < refreshMs && sameFingerprint(read.fingerprint, last)) return [];
      last = read.fingerprint;
      lastFull = now;
      const sockets = read.decode();
      const { forwards, skipped } = publishable(sockets, own.of(sockets, now), opts.policy);
      sayOnce(log, said, skipped);
      return gate.step(forwards, now);
    };
    return timer(0, scanMs, scheduler).pipe(
      map(scan),
      reconnectWithBackoff({
        ...opts.backoff,
        scheduler,
        onRetry: (error, attempt, delayMs) => {
          failing = true;
          log[retryLogLevel(attempt)]({ attempt, delayMs }, `cannot read ${table.name} (${errorMessage(error)}); what is published stays; trying again in ${String(delayMs)} ms`);
        },
      }),
      mergeMap((events) => events),
    );
  });
}

/**
 * Which sockets are the agent's own, asking the table only about inodes it has not seen, and
 * only once they have stood for `askAfterMs`. Asking reads the agent's descriptors and the
 * process list, a millisecond or two, and a new listener most often appears as a container
 * starts (docker-proxy binds its port just before the start event): asked at once, that work
 * landed on the path of the container's own ports. Until it is asked about, a socket counts as
 * not the agent's; `askAfterMs` is shorter than the time a port must stand before it is
 * published, so an own socket is still never published.
 */
class OwnInodes {
  private known = new Map<number, boolean>();
  /** Inodes not asked about yet, with when they were first seen. */
  private young = new Map<number, number>();

  constructor(
    private readonly table: SocketTable,
    private readonly askAfterMs: number,
  ) {}

  of(sockets: readonly ListeningSocket[], now: number): ReadonlySet<number> {
    const fresh = new Set<number>();
    const young = new Map<number, number>();
    for (const s of sockets) {
      if (this.known.has(s.inode)) continue;
      const since = this.young.get(s.inode) ?? now;
      if (now - since >= this.askAfterMs) fresh.add(s.inode);
      else young.set(s.inode, since);
    }
    const mine = fresh.size > 0 ? this.table.ownInodes(fresh) : emptySet;
    const next = new Map<number, boolean>();
    const own = new Set<number>();
    for (const s of sockets) {
      if (young.has(s.inode)) continue;
      const isOwn = this.known.get(s.inode) ?? mine.has(s.inode);
      next.set(s.inode, isOwn);
      if (isOwn) own.add(s.inode);
    }
    this.known = next;
    this.young = young;
    return own;
  }
}

const emptySet: ReadonlySet<number> = new Set();

/** Each address passed over is said once (at debug), and again only after it went away. */
function sayOnce(log: Logger, said: Map<string, Skip>, skipped: ReadonlyMap<string, Skip>): void {
  for (const [what, why] of skipped) {
    if (said.get(what) !== why) log.debug(`not forwarding the listener ${what}: ${why}`);
  }
  said.clear();
  for (const [what, why] of skipped) said.set(what, why);
}

function sameFingerprint(a: Buffer | string, b: Buffer | string): boolean {
  if (typeof a === 'string' || typeof b === 'string') return a === b;
  return a.equals(b);
}

function withoutUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
