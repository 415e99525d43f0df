import {
  asyncScheduler,
  catchError,
  concatMap,
  concatWith,
  defaultIfEmpty,
  defer,
  EMPTY,
  forkJoin,
  map,
  merge,
  mergeMap,
  Observable,
  of,
  take,
  tap,
  throwError,
  timer,
  type SchedulerLike,
} from 'rxjs';
import { moduleLogger, type Logger } from '../src/log.js';
import { snapshot, type Forward, type SourceEvent } from '../src/model.js';
import { coalesceTriggers } from '../operators/coalesceTriggers.js';
import { exhaustMapWithTrailing } from '../operators/exhaustMapWithTrailing.js';
import { reconnectWithBackoff, retryLogLevel, type BackoffOptions } from '../operators/reconnectWithBackoff.js';
import { cniPortmapRules, parseIptablesSave, unreadableTable, type CountingRule, type Family } from './iptablesRules.js';
import { errorMessage } from '../src/errors.js';
import type { ConnectionReporter } from '../src/status/observer.js';
import { definedOptions } from '../src/options.js';

export type { Family } from './iptablesRules.js';

/** The programs that can tell when rules change: `nft monitor`, or `stdbuf -oL xtables-monitor -e`. */
export type MonitorKind = 'nft' | 'xtables';

/** Each monitor as a command line, for logs. */
const monitorCommands: Readonly<Record<MonitorKind, string>> = {
  nft: 'nft monitor',
  xtables: 'stdbuf -oL xtables-monitor -e',
};

/**
 * What the iptables stream needs of the machine. `nodeIptablesClient` (iptablesClient.ts) is the
 * real one; tests script their own.
 */
export interface IptablesClient {
  /**
   * `iptables-save -t nat` (ipv4) or `ip6tables-save -t nat` (ipv6): emits its output once and
   * completes, or errors when the command fails. A command that is not installed errors with
   * `code: 'ENOENT'`.
   */
  save(family: Family): Observable<string>;
  /** A rule monitor: one value per line it prints; it errors or completes when the process ends. */
  monitor(kind: MonitorKind): Observable<string>;
  /**
   * `iptables --version` (e.g. `iptables v1.8.9 (nf_tables)`). With the `legacy` flavour no
   * monitor sees rule changes, so the stream polls.
   */
  version(): Observable<string>;
}

/** How `iptablesEvents` notices rule changes (monitors, polling), how it batches re-reads, and which rules count. */
export interface IptablesStreamOptions {
  /** Where it logs, through a child naming its module; without one it logs nothing. */
  readonly logger?: Logger | undefined;
  readonly scheduler?: SchedulerLike | undefined;
  /** Back-off of a failing iptables-save, and of restarting a monitor that died. */
  readonly backoff?: BackoffOptions | undefined;
  /** Monitors to try, in order; none works (or none given) → polling. Default: nft, xtables. */
  readonly monitors?: readonly MonitorKind[] | undefined;
  /** A monitor that has run this long works; one that ends sooner is passed over. Default 1 s. */
  readonly settleMs?: number | undefined;
  /** The first change after quiet is read at once; changes inside this window fold into one more read. Default 20 ms. */
  readonly coalesceMs?: number | undefined;
  /** While changes keep coming the window doubles up to this. Default 500 ms. */
  readonly maxCoalesceMs?: number | undefined;
  /** A re-read even without a change, in case a monitor missed one. Default 30 s. */
  readonly safetyMs?: number | undefined;
  /** The re-read period when no monitor works. Default 2 s. */
  readonly pollMs?: number | undefined;
  /** What counts as a published port. Default: CNI portmap. */
  readonly rules?: readonly CountingRule[] | undefined;
  /** Told when the backend is reached and when it is lost (the agent's status, docs/status.md). */
  readonly connection?: ConnectionReporter | undefined;
}

/** The values `iptablesEvents` uses for the options left out. */
export const iptablesDefaults = {
  monitors: ['nft', 'xtables'] as readonly MonitorKind[],
  settleMs: 1000,
  coalesceMs: 20,
  maxCoalesceMs: 500,
  safetyMs: 30_000,
  pollMs: 2000,
} as const;

/** Why the stream reads the rules; for logs and tests. */
type Trigger =
  | { readonly reason: 'start'; readonly mode: MonitorKind | 'poll' }
  | { readonly reason: 'settled'; readonly mode: MonitorKind }
  | { readonly reason: 'change'; readonly mode: MonitorKind }
  | { readonly reason: 'poll' }
  | { readonly reason: 'safety' };

/**
 * The nat table's published ports as a stream of snapshots. A rule monitor says when something
 * changed; each change triggers a re-read of both families (`iptables-save`, `ip6tables-save`),
 * and each re-read whose rules differ from the last one told is a snapshot, so nothing depends on
 * parsing the monitor's output (and a re-read of the same rules, by a poll, a safety re-read or a
 * change to another table, costs no parse and no event). The first
 * change after quiet is read at once; a burst folds into a few re-reads (`coalesceTriggers`), and
 * changes during a read fold into one more (`exhaustMapWithTrailing`). A slow safety re-read
 * runs as well. Where no monitor works the stream polls. A failing iptables-save is retried with
 * back-off; a monitor that dies is restarted (and the rules re-read, since changes may have been
 * missed meanwhile). The stream never errors or completes.
 *
 *   monitor:   ---c-----ccccccc-----X               c = a line from nft monitor, X = it died
 *   triggers:  s--c-----c-c---c-----(back-off)s     s = (re)start and settle, c = change(s)
 *   events:    S--S-----S-S---S-----(back-off)S     S = a snapshot of both families (when it changed)
 *
 * (a burst of lines: the first is read at once, the rest fold into one read per window)
 */
export function iptablesEvents(client: IptablesClient, opts: IptablesStreamOptions = {}): Observable<SourceEvent> {
  const log = moduleLogger('iptables', opts.logger);
  const scheduler = opts.scheduler ?? asyncScheduler;
  const o = { ...iptablesDefaults, ...definedOptions(opts) };
  return defer(() => {
    const logged: Logged = { problems: new Set(), noIpv6: false, failing: false, lastIpv6: '', ipv6Failing: false };
    return merge(
      ruleTriggers(client, log, scheduler, opts),
      timer(o.safetyMs, o.safetyMs, scheduler).pipe(map((): Trigger => ({ reason: 'safety' }))),
    ).pipe(
      coalesceTriggers(o.coalesceMs, scheduler, o.maxCoalesceMs),
      exhaustMapWithTrailing(() => readRules(client, log, scheduler, opts, logged)),
    );
  });
}

/**
 * The triggers of re-reads: the lines of the first monitor that works, or a poll timer. A
 * monitor works when it is still running after `settleMs`; one that ends sooner is passed over
 * for the next. A working monitor that dies later is restarted with back-off, trying the
 * monitors in order again. Each (re)start triggers a read at once and another once the monitor
 * has settled (a change made while it was starting is seen by that one).
 *
 *   nft:       #                              nft monitor fails at once
 *   xtables:   ---c---------c-----X           stdbuf -oL xtables-monitor -e works; dies later
 *   triggers:  ss-c-S-------c-----(back-off)s-----S...
 *              s = start (one per monitor tried), S = settled (settleMs), c = change
 */
function ruleTriggers(
  client: IptablesClient,
  log: Logger,
  scheduler: SchedulerLike,
  opts: IptablesStreamOptions = {},
): Observable<Trigger> {
  return defer(() => triggersOf(client, log, scheduler, opts));
}

/** `ruleTriggers` for one subscription (its state: what failed, which mode was announced). */
function triggersOf(client: IptablesClient, log: Logger, scheduler: SchedulerLike, opts: IptablesStreamOptions): Observable<Trigger> {
  const o = { ...iptablesDefaults, ...definedOptions(opts) };
  const failures: string[] = [];
  let announced: MonitorKind | 'poll' | undefined;
  const announce = (mode: MonitorKind | 'poll', message: string): void => {
    if (announced === mode) return;
    announced = mode;
    log.info({ mode }, message);
  };

  const poll = (why: string): Observable<Trigger> =>
    defer(() => {
      announce('poll', `${why}; polling the rules every ${String(o.pollMs)} ms`);
      return merge(
        of<Trigger>({ reason: 'start', mode: 'poll' }),
        timer(o.pollMs, o.pollMs, scheduler).pipe(map((): Trigger => ({ reason: 'poll' }))),
      );
    });

  const tryMonitor = (index: number): Observable<Trigger> => {
    const kind = o.monitors[index];
    if (kind === undefined) {
      const why = o.monitors.length === 0 ? 'no rule monitor configured' : `no rule monitor works (${failures.join('; ')})`;
      return poll(why);
    }
    return defer(() => {
      let settled = false;
      return merge(
        of<Trigger>({ reason: 'start', mode: kind }),
        client.monitor(kind).pipe(
          map((): Trigger => ({ reason: 'change', mode: kind })),
          concatWith(throwError(() => new Error(`${monitorCommands[kind]} exited`))),
        ),
        timer(o.settleMs, scheduler).pipe(
          tap(() => {
            settled = true;
            failures.length = 0;
            announce(kind, `watching rule changes with ${monitorCommands[kind]}`);
          }),
          map((): Trigger => ({ reason: 'settled', mode: kind })),
        ),
      ).pipe(
        catchError((error: unknown) => {
          if (settled) return throwError(() => error); // a working monitor died: restart below
          failures.push(`${monitorCommands[kind]}: ${errorMessage(error)}`);
          log.debug({ monitor: kind }, `${monitorCommands[kind]} does not work here (${errorMessage(error)}); trying the next way`);
          return tryMonitor(index + 1);
        }),
      );
    });
  };

  const watch = defer(() => {
    failures.length = 0;
    return tryMonitor(0);
  }).pipe(
    reconnectWithBackoff({
      ...opts.backoff,
      scheduler,
      onRetry: (error, attempt, delayMs) => {
        announced = undefined;
        log[retryLogLevel(attempt)]({ attempt, delayMs }, `the rule monitor stopped (${errorMessage(error)}); restarting it and re-reading the rules in ${String(delayMs)} ms`);
      },
    }),
  );

  if (o.monitors.length === 0) return poll('no rule monitor configured');
  return client.version().pipe(
    catchError((error: unknown) => {
      log.debug(`iptables --version failed (${errorMessage(error)}); assuming the nf_tables flavour`);
      return of('');
    }),
    defaultIfEmpty(''),
    take(1),
    concatMap((version) =>
      /\blegacy\b/.test(version) ? poll('iptables is the legacy flavour, whose changes no monitor reports') : watch,
    ),
  );
}

/** Reads both families and parses them into one snapshot; retries (with back-off) until both reads succeed. */
function readRules(
  client: IptablesClient,
  log: Logger,
  scheduler: SchedulerLike,
  opts: IptablesStreamOptions,
  state: Logged,
): Observable<SourceEvent> {
  const rules = opts.rules ?? cniPortmapRules;
  // IPv4 decides whether a read worked. IPv6 may fail for good (a kernel without IPv6 or its nat
  // table) or for a moment: then its rules last read stand (none at first), said once.
  const readIpv6 = readable(client.save('ipv6')).pipe(
    tap((text) => {
      if (state.ipv6Failing) log.info('reading the IPv6 nat table works again');
      state.ipv6Failing = false;
      state.lastIpv6 = text;
    }),
    catchError((error: unknown) => {
      if (code(error) === 'ENOENT') {
        if (!state.noIpv6) log.info('ip6tables-save is not installed; reading IPv4 rules only');
        state.noIpv6 = true;
        state.lastIpv6 = '';
      } else if (!state.ipv6Failing) {
        state.ipv6Failing = true;
        log.warn(`cannot read the IPv6 nat table (${errorMessage(error)}); IPv4 goes on, and the IPv6 rules last read (${state.lastIpv6 === '' ? 'none' : 'kept'}) stand until it works`);
      }
      return of(state.lastIpv6);
    }),
  );
  return defer(() => forkJoin([readable(client.save('ipv4')), readIpv6])).pipe(
    reconnectWithBackoff({
      ...opts.backoff,
      scheduler,
      onRetry: (error, attempt, delayMs) => {
        state.failing = true;
        opts.connection?.disconnected(error);
        log[retryLogLevel(attempt)]({ attempt, delayMs }, `cannot read the nat table (${errorMessage(error)}); trying again in ${String(delayMs)} ms`);
      },
    }),
    mergeMap(([v4, v6]) => {
      if (state.failing) log.info('reading the nat table works again');
      state.failing = false;
      opts.connection?.connected();
      // The same rules as the last read (a safety re-read, a poll, a change to another table):
      // nothing to tell, and parsing thousands of rules again would only make garbage.
      const rulesRead = withoutComments(v4) + '\0' + withoutComments(v6);
      if (rulesRead === state.lastRules) return EMPTY;
      state.lastRules = rulesRead;
      const owners = new Map<string, Forward[]>();
      const problems = new Set<string>();
      for (const [family, text] of [['ipv4', v4], ['ipv6', v6]] as const) {
        const parsed = parseIptablesSave(text, family, rules);
        for (const f of parsed.forwards) {
          const list = owners.get(f.owner);
          if (list) list.push(f);
          else owners.set(f.owner, [f]);
        }
        for (const p of parsed.problems) problems.add(`${family === 'ipv4' ? 'iptables-save' : 'ip6tables-save'}: ${p}`);
      }
      // A rule that cannot be read is logged once, not on every re-read; again if it comes back.
      // Known by what it says, not where: rules added above it move it to another line.
      const seen = new Set<string>();
      for (const p of problems) {
        const key = p.replace(/: line \d+ /, ': ');
        if (!state.problems.has(key)) log.warn(p);
        seen.add(key);
      }
      state.problems = seen;
      return of(snapshot(owners));
    }),
  );
}

/**
 * The nat table as read, or an error when iptables-save could not show it (see `unreadableTable`):
 * a failed read keeps what was published, where an empty table would withdraw it all.
 */
function readable(save: Observable<string>): Observable<string> {
  return save.pipe(
    map((text) => {
      const why = unreadableTable(text);
      if (why !== undefined) throw new Error(why);
      return text;
    }),
  );
}

/** What one subscription has logged already, so that a re-read repeats nothing. */
interface Logged {
  problems: Set<string>;
  noIpv6: boolean;
  failing: boolean;
  /** The last IPv6 nat table read, which stands while ip6tables-save fails. */
  lastIpv6: string;
  ipv6Failing: boolean;
  /** Both tables as last emitted, without comments; undefined until the first. */
  lastRules?: string;
}

/** iptables-save's text without its comment lines, which carry the time of the read. */
function withoutComments(text: string): string {
  return text.replace(/^#.*\n?/gm, '');
}

function code(error: unknown): unknown {
  return (error as { code?: unknown } | null)?.code;
}


