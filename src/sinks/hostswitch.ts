import http from 'node:http';
import https from 'node:https';
import {
  asyncScheduler,
  defer,
  finalize,
  interval,
  Observable,
  Subscription,
  take,
  throwError,
  timeout,
  timer,
  type ObservableInput,
  type SchedulerLike,
} from 'rxjs';
import { errorMessage } from '../errors.js';
import { moduleLogger, type Logger } from '../log.js';
import { portKey, type Forward, type PortDelta, type PortKey } from '../model.js';
import { jitteredDelay, type Backoff } from '../backoff.js';
import {
  classifyReply,
  entryFor,
  entryKey,
  exposeBody,
  forwarderPaths,
  laneOf,
  parseForwarderList,
  unexposeBody,
  type ForwarderEntry,
  type Reply,
} from './hostswitchPlan.js';
import type { Sink, SinkReport } from './sink.js';

/** One call of the forwarder API; `path` is one of `forwarderPaths`. */
export interface HostSwitchRequest {
  readonly method: 'GET' | 'POST';
  readonly path: string;
  readonly body?: string;
}

/** An answer of the host-switch API: its status and body. */
export interface HostSwitchResponse {
  readonly status: number;
  readonly body: string;
}

/**
 * Makes one request. It errors only when no HTTP answer came (refused, reset, timed out); any
 * status is an answer. An Observable is best: the sink unsubscribes to cancel (its own timeout,
 * shutdown). A promise works too.
 */
export type HostSwitchRequester = (request: HostSwitchRequest) => ObservableInput<HostSwitchResponse>;

/** Where the host-switch sink sends, how it addresses forwards, and how it retries and logs. */
export interface HostSwitchSinkOptions {
  /** `-hostSwitchURL`, e.g. `http://192.168.127.1:80`. Needed unless `request` is given. */
  readonly url?: string | undefined;
  /** Replaces the HTTP client (tests, or a transport of your own such as a unix socket). */
  readonly request?: HostSwitchRequester | undefined;
  /** `-tap-interface-ip`. */
  readonly tapInterfaceIp?: string | undefined;
  /** `-adminInstall`. */
  readonly adminInstall?: boolean | undefined;
  /** At most this many expose/unexpose requests at once. */
  readonly concurrency?: number | undefined;
  /** Bound on every request. */
  readonly requestTimeoutMs?: number | undefined;
  /** Bound on withdrawing everything after the input completes. */
  readonly withdrawTimeoutMs?: number | undefined;
  /**
   * While idle with something published, re-read the host's forwards this often (0: never), so
   * a host switch that restarted empty while nothing changed here gets its forwards back.
   */
  readonly resyncMs?: number | undefined;
  readonly backoff?: Backoff | undefined;
  /** The random source of the jitter, in [0, 1) (tests pass a fixed one). */
  readonly random?: (() => number) | undefined;
  readonly scheduler?: SchedulerLike | undefined;
  /** Where it logs, through a child naming its module; without one it logs nothing. */
  readonly logger?: Logger | undefined;
}

/** The values the host-switch sink uses for the options left out. */
export const hostSwitchDefaults = {
  tapInterfaceIp: '192.168.127.2',
  concurrency: 4,
  requestTimeoutMs: 5_000,
  withdrawTimeoutMs: 5_000,
  resyncMs: 3_000,
} as const;

/** A forward on the host as far as the sink knows: `unknown` after a request that got no answer. */
interface Published {
  readonly entry: ForwarderEntry;
  state: 'present' | 'unknown';
  /** Found there (from an earlier run) rather than exposed by this one; removed all the same. */
  adopted: boolean;
  /** The forwards it stands for, for reports. */
  forwards: Forward[];
  /** Its forwards were reported as `wrote` added. */
  reported: boolean;
}

/** A wanted forwarder entry and the forwards that map to it (without -adminInstall, every host IP of a port shares one). */
interface Claim {
  readonly entry: ForwarderEntry;
  readonly forwards: Map<PortKey, Forward>;
}

/**
 * Publishes the agent's forwards through the host-switch expose API (gvisor-tap-vsock's
 * forwarder, contracts.md). State-based, one forwarder entry at a time:
 *
 *   deltas:   a----b---------|        a = +8080/tcp, b = -8080/tcp
 *   requests: G(E)-----(U)------      G = GET /all at start-up, E = expose, U = unexpose
 *   reports:  --w--------x----(y|)    w, x = wrote, y = withdrawn
 *
 * - Start-up, after any failure to reach the host switch, and every `resyncMs` while idle with
 *   something published: `GET /services/forwarder/all`.
 *   An entry that is exactly one we want (protocol, local and remote) is adopted; one that we had
 *   published but is gone is exposed again; anything else is the host's and left alone.
 * - `proxy already running` on expose: adopted (ours, from an earlier run). `proxy not found`
 *   on unexpose: already gone. A bind error or another refusal: reported, retried later with
 *   back-off for that entry only. No answer: back off, then re-read the host's state.
 * - At most `concurrency` requests at once, each bounded by `requestTimeoutMs`; requests of one
 *   host port (protocol and port number) run one at a time, removals first.
 * - IPv6 forwards are skipped with one log line: the API is IPv4 only.
 * - When the input completes, everything published (adopted ones too) is unexposed, bounded by
 *   `withdrawTimeoutMs`; then `withdrawn` and complete.
 */
export function hostSwitchSink(opts: HostSwitchSinkOptions): Sink {
  const addressing = { tapInterfaceIp: opts.tapInterfaceIp ?? hostSwitchDefaults.tapInterfaceIp, adminInstall: opts.adminInstall ?? false };
  const concurrency = Math.max(1, opts.concurrency ?? hostSwitchDefaults.concurrency);
  const requestTimeoutMs = opts.requestTimeoutMs ?? hostSwitchDefaults.requestTimeoutMs;
  const withdrawTimeoutMs = opts.withdrawTimeoutMs ?? hostSwitchDefaults.withdrawTimeoutMs;
  const resyncMs = opts.resyncMs ?? hostSwitchDefaults.resyncMs;
  const scheduler = opts.scheduler ?? asyncScheduler;
  const random = opts.random ?? Math.random;
  const log = moduleLogger('hostswitch', opts.logger);
  const delayOf = (attempt: number): number => jitteredDelay(attempt, opts.backoff, random);
  const where = opts.url ?? 'the host switch';
  if (opts.request === undefined) {
    // Thrown at start-up, so a bad URL is reported once rather than as endless failed requests.
    if (opts.url === undefined) throw new Error('hostSwitchSink needs a url or a request function');
    if (!URL.canParse(opts.url) || !/^https?:$/.test(new URL(opts.url).protocol)) throw new Error(`-hostSwitchURL ${JSON.stringify(opts.url)}: must be an http:// or https:// URL`);
  }

  return (deltas$) =>
    defer(() => {
      const agent = opts.request === undefined ? newAgent(opts.url ?? '', concurrency) : undefined;
      const request = opts.request ?? httpRequester(opts.url ?? '', { timeoutMs: requestTimeoutMs, ...(agent && { agent }) });
      return run(deltas$, request).pipe(finalize(() => agent?.destroy()));
    });

  function run(deltas$: Observable<PortDelta>, request: HostSwitchRequester): Observable<SinkReport> {
    return new Observable<SinkReport>((subscriber) => {
      const claims = new Map<string, Claim>();
      const onHost = new Map<string, Published>();
      /** The host's entries at the last GET /all, to tell an earlier run's forwards from the host's own. */
      let listed = new Map<string, ForwarderEntry>();
      const inFlight = new Map<string, Subscription>();
      const busyLanes = new Set<string>();
      const keyRetry = new Map<string, { attempt: number; timer: Subscription | undefined }>();
      const skipped = new Set<PortKey>();
      let ipv6Said = false;
      let needSync = true;
      let syncing: Subscription | undefined;
      let globalRetry: Subscription | undefined;
      let globalAttempt = 0;
      let globalFailures = 0;
      let lastError = '';
      let withdrawing: { readonly deadline: Subscription; removed: number } | undefined;
      let resync: Subscription | undefined; // the periodic re-read of the host's forwards
      let reconciling = false;
      /** Counts reconcile calls made while one runs: the running one then goes round again. */
      let calledWhileRunning = 0;

      const send = (req: HostSwitchRequest): Observable<HostSwitchResponse> =>
        defer(() => request(req)).pipe(
          take(1),
          timeout({
            first: requestTimeoutMs,
            scheduler,
            with: () => throwError(() => new Error(`no answer to ${req.method} ${req.path} within ${String(requestTimeoutMs)} ms`)),
          }),
        );

      const report = (r: SinkReport): void => {
        if (!subscriber.closed) subscriber.next(r);
      };

      // ---- what is wanted ------------------------------------------------------------------

      const want = (f: Forward): void => {
        const key = portKey(f);
        const entry = entryFor(f, addressing);
        if (entry === undefined) {
          if (!skipped.has(key)) {
            skipped.add(key);
            // Docker publishes every -p on :: too: said once, not at every container start.
            log[ipv6Said ? 'debug' : 'info']({ port: key }, `skipping ${key}: the host-switch API is IPv4 only${ipv6Said ? '' : ' (further IPv6 ports are skipped quietly)'}`);
            ipv6Said = true;
          }
          return;
        }
        const k = entryKey(entry);
        let claim = claims.get(k);
        if (!claim) {
          claim = { entry, forwards: new Map() };
          claims.set(k, claim);
        }
        claim.forwards.set(key, f);
        const pub = onHost.get(k);
        if (pub && !pub.forwards.some((g) => portKey(g) === key)) pub.forwards.push(f);
      };

      const unwant = (f: Forward): void => {
        const key = portKey(f);
        if (skipped.delete(key)) return;
        const entry = entryFor(f, addressing);
        if (entry === undefined) return;
        const k = entryKey(entry);
        const claim = claims.get(k);
        if (!claim) return;
        claim.forwards.delete(key);
        if (claim.forwards.size === 0) claims.delete(k);
      };

      // ---- the loop -----------------------------------------------------------------------

      const reconcile = (): void => {
        if (reconciling) {
          calledWhileRunning += 1;
          return;
        }
        reconciling = true;
        try {
          let seen: number;
          do {
            seen = calledWhileRunning;
            step();
          } while (seen !== calledWhileRunning && !subscriber.closed);
        } finally {
          reconciling = false;
        }
      };

      const step = (): void => {
        if (subscriber.closed || globalRetry !== undefined || syncing !== undefined) return;
        if (needSync && !withdrawing) {
          if (inFlight.size === 0) sync();
          return;
        }
        // Removals first: they free host ports that adds in the same lane may want.
        for (const [k, pub] of onHost) {
          if (inFlight.size >= concurrency) break;
          if (!claims.has(k)) start(k, 'unexpose', pub.entry);
        }
        for (const [k, claim] of claims) {
          if (inFlight.size >= concurrency) break;
          const pub = onHost.get(k);
          if (pub?.state === 'present') continue;
          const other = listed.get(k);
          if (!pub && other && other.remote !== claim.entry.remote) {
            blocked(k, claim.entry, other);
            continue;
          }
          start(k, 'expose', claim.entry);
        }
        if (withdrawing && onHost.size === 0 && inFlight.size === 0) finishWithdraw();
      };

      const start = (k: string, op: 'expose' | 'unexpose', entry: ForwarderEntry): void => {
        const lane = laneOf(entry);
        if (inFlight.has(k) || busyLanes.has(lane) || keyRetry.get(k)?.timer !== undefined) return;
        busyLanes.add(lane);
        const sub = new Subscription();
        inFlight.set(k, sub);
        const settle = (): void => {
          inFlight.delete(k);
          busyLanes.delete(lane);
        };
        const body = op === 'expose' ? exposeBody(entry) : unexposeBody(entry);
        // What the request stands for, should the claim go while it is in flight.
        const forwardsAtStart = [...(claims.get(k)?.forwards.values() ?? [])];
        sub.add(
          send({ method: 'POST', path: forwarderPaths[op], body }).subscribe({
            next: (res) => {
              settle();
              answered(k, op, entry, classifyReply(op, res.status, res.body), forwardsAtStart);
              reconcile();
            },
            error: (err: unknown) => {
              settle();
              noAnswer(k, op, entry, errorMessage(err), forwardsAtStart);
              reconcile();
            },
          }),
        );
      };

      const answered = (k: string, op: 'expose' | 'unexpose', entry: ForwarderEntry, reply: Reply, forwardsAtStart: Forward[]): void => {
        const what = `${entry.local} (${entry.protocol})`;
        switch (reply.kind) {
          case 'done':
          case 'adopted':
          case 'gone': {
            if (op === 'expose') {
              const other = listed.get(k);
              if (reply.kind === 'adopted' && other && other.remote !== entry.remote) {
                blocked(k, entry, other);
                return;
              }
              if (reply.kind === 'adopted' && other === undefined) {
                // Exposed since the last read of the host's forwards, so maybe not by an earlier
                // run of ours: read them again and adopt it only if it forwards where we would.
                log.debug({ local: entry.local, protocol: entry.protocol }, `${what} is already exposed, but was not when last read; reading the host's forwards again`);
                const forwards = union(forwardsAtStart, claims.get(k)?.forwards.values() ?? []);
                onHost.set(k, { entry, state: 'unknown', adopted: true, forwards, reported: false });
                keyRetry.delete(k);
                needSync = true;
                return;
              }
              if (reply.kind === 'adopted') saidAdopted(entry);
              const forwards = union(forwardsAtStart, claims.get(k)?.forwards.values() ?? []);
              onHost.set(k, { entry, state: 'present', adopted: reply.kind === 'adopted', forwards, reported: true });
              keyRetry.delete(k);
              report({ sink: 'hostswitch', type: 'wrote', added: forwards, removed: [] });
            } else {
              const pub = onHost.get(k);
              onHost.delete(k);
              keyRetry.delete(k);
              if (withdrawing) withdrawing.removed += 1;
              else report({ sink: 'hostswitch', type: 'wrote', added: [], removed: pub?.forwards ?? [] });
            }
            return;
          }
          case 'refused': {
            const error = reply.bindError
              ? `cannot expose ${what}: the host port is taken (${reply.message})`
              : `the host switch refused to ${op} ${what}: HTTP ${String(reply.status)} ${reply.message}`;
            keyFailure(k, error);
            return;
          }
          case 'unexpected':
            markUnknown(k, op, entry, forwardsAtStart);
            globalFailure(`${op} ${what} answered ${reply.message}`);
            return;
        }
      };

      const saidAdopted = (entry: ForwarderEntry): void => {
        log.info({ local: entry.local, protocol: entry.protocol }, `${entry.local} (${entry.protocol}) was already exposed (by an earlier run): adopted; it is removed like any other`);
      };

      const noAnswer = (k: string, op: 'expose' | 'unexpose', entry: ForwarderEntry, error: string, forwardsAtStart: Forward[]): void => {
        markUnknown(k, op, entry, forwardsAtStart);
        globalFailure(`could not ${op} ${entry.local} (${entry.protocol}): ${error}`);
      };

      /** The request may or may not have taken effect. */
      const markUnknown = (k: string, op: 'expose' | 'unexpose', entry: ForwarderEntry, forwardsAtStart: Forward[]): void => {
        const pub = onHost.get(k);
        if (pub) pub.state = 'unknown';
        else if (op === 'expose') onHost.set(k, { entry, state: 'unknown', adopted: false, forwards: forwardsAtStart, reported: false });
      };

      /** A forward of ours whose place the host gives to another one: leave it, look again later. */
      const blocked = (k: string, entry: ForwarderEntry, other: ForwarderEntry): void => {
        if (keyRetry.get(k)?.timer !== undefined) return;
        keyFailure(k, `cannot expose ${entry.local} (${entry.protocol}): the host switch forwards it to ${other.remote} (not ours, left alone)`, true);
      };

      const keyFailure = (k: string, error: string, resyncAfter = false): void => {
        const retry = keyRetry.get(k) ?? { attempt: 0, timer: undefined };
        keyRetry.set(k, retry);
        retry.attempt += 1;
        const retryInMs = delayOf(retry.attempt);
        log[retry.attempt === 1 ? 'warn' : 'debug']({ key: k, err: error, attempt: retry.attempt, retryInMs }, `${error}; retrying in ${String(retryInMs)} ms`);
        report({ sink: 'hostswitch', type: 'failed', error, retryInMs });
        retry.timer = timer(retryInMs, scheduler).subscribe(() => {
          retry.timer = undefined;
          if (resyncAfter) needSync = true;
          reconcile();
        });
      };

      const globalFailure = (error: string): void => {
        needSync = true;
        lastError = error;
        if (globalRetry !== undefined) return; // one outage, several requests in flight: one retry
        globalAttempt += 1;
        globalFailures += 1;
        const retryInMs = delayOf(globalAttempt);
        log[globalFailures === 1 ? 'warn' : 'debug'](
          { url: where, err: error, failures: globalFailures, retryInMs },
          `host switch (${where}): ${error}; retrying in ${String(retryInMs)} ms, then re-reading its forwards`,
        );
        report({ sink: 'hostswitch', type: 'failed', error, retryInMs });
        globalRetry = timer(retryInMs, scheduler).subscribe(() => {
          globalRetry = undefined;
          reconcile();
        });
      };

      // ---- start-up and re-sync ---------------------------------------------------------------

      const sync = (): void => {
        const sub = new Subscription();
        syncing = sub;
        sub.add(
          send({ method: 'GET', path: forwarderPaths.all }).subscribe({
            next: (res) => {
              syncing = undefined;
              if (res.status !== 200) {
                globalFailure(`GET ${forwarderPaths.all} answered HTTP ${String(res.status)}${res.body.trim() ? `: ${res.body.trim().slice(0, 200)}` : ''}`);
                return;
              }
              const list = parseForwarderList(res.body);
              if ('error' in list) {
                globalFailure(list.error);
                return;
              }
              applyList(list);
              reconcile();
            },
            error: (err: unknown) => {
              syncing = undefined;
              globalFailure(`could not read ${forwarderPaths.all}: ${errorMessage(err)}`);
            },
          }),
        );
      };

      const applyList = (list: readonly ForwarderEntry[]): void => {
        listed = new Map(list.map((e) => [entryKey(e), e]));
        for (const [k, pub] of onHost) {
          const there = listed.get(k);
          if (there?.remote !== pub.entry.remote) {
            onHost.delete(k); // gone (the host restarted), or replaced by someone else's
            continue;
          }
          pub.state = 'present';
          if (!pub.reported) {
            // An expose that got no answer did arrive, or one found running forwards where ours would.
            if (pub.adopted) saidAdopted(there);
            pub.forwards = union(pub.forwards, claims.get(k)?.forwards.values() ?? []);
            pub.reported = true;
            report({ sink: 'hostswitch', type: 'wrote', added: pub.forwards, removed: [] });
          }
        }
        for (const [k, there] of listed) {
          if (onHost.has(k)) continue;
          const claim = claims.get(k);
          if (claim?.entry.remote !== there.remote) continue; // the host's own, or not wanted: left alone
          const forwards = [...claim.forwards.values()];
          onHost.set(k, { entry: there, state: 'present', adopted: true, forwards, reported: true });
          log.info({ local: there.local, protocol: there.protocol }, `${there.local} (${there.protocol}) is already exposed (by an earlier run): adopted`);
          report({ sink: 'hostswitch', type: 'wrote', added: forwards, removed: [] });
        }
        needSync = false;
        if (globalFailures > 0) log.info({ url: where, failures: globalFailures }, `reached the host switch (${where}) again`);
        globalFailures = 0;
        globalAttempt = 0;
        lastError = '';
      };

      // ---- shutdown -------------------------------------------------------------------------

      const startWithdraw = (): void => {
        resync?.unsubscribe();
        // A re-read in flight would hold every unexpose back until it answers or times out; the
        // withdraw needs no list (it unexposes all it published, and "proxy not found" is fine).
        syncing?.unsubscribe();
        syncing = undefined;
        claims.clear();
        skipped.clear();
        // Shutdown should not sit out a long back-off: try now, and back off afresh from here.
        globalRetry?.unsubscribe();
        globalRetry = undefined;
        globalAttempt = 0;
        for (const retry of keyRetry.values()) retry.timer?.unsubscribe();
        keyRetry.clear();
        withdrawing = {
          removed: 0,
          deadline: timer(withdrawTimeoutMs, scheduler).subscribe(() => {
            log.warn(
              { url: where, forwards: onHost.size, err: lastError },
              `gave up withdrawing ${String(onHost.size)} forward${onHost.size === 1 ? '' : 's'} from the host switch (${where}) after ${String(withdrawTimeoutMs)} ms` +
                (lastError ? ` (last error: ${lastError})` : ''),
            );
            subscriber.complete();
          }),
        };
        reconcile();
      };

      const finishWithdraw = (): void => {
        report({ sink: 'hostswitch', type: 'withdrawn', count: withdrawing?.removed ?? 0 });
        subscriber.complete();
      };

      const input = deltas$.subscribe({
        next: (delta) => {
          for (const f of delta.removed) unwant(f);
          for (const f of delta.added) want(f);
          reconcile();
        },
        error: (err: unknown) => {
          subscriber.error(err);
        },
        complete: startWithdraw,
      });
      // Start-up: read the host's forwards even before the first delta.
      reconcile();
      // The expose API has no way to say it restarted: look, now and then, when nothing else is going on.
      if (resyncMs > 0 && !withdrawing) {
        resync = interval(resyncMs, scheduler).subscribe(() => {
          const idle = inFlight.size === 0 && syncing === undefined && globalRetry === undefined && !needSync;
          if (!idle || withdrawing || (claims.size === 0 && onHost.size === 0)) return;
          needSync = true;
          reconcile();
        });
      }

      return () => {
        resync?.unsubscribe();
        input.unsubscribe();
        for (const sub of inFlight.values()) sub.unsubscribe();
        syncing?.unsubscribe();
        globalRetry?.unsubscribe();
        for (const retry of keyRetry.values()) retry.timer?.unsubscribe();
        withdrawing?.deadline.unsubscribe();
      };
    });
  }
}

/** `a` and then the forwards of `b` that `a` lacks (by port key). */
function union(a: readonly Forward[], b: Iterable<Forward>): Forward[] {
  const out = [...a];
  const keys = new Set(a.map(portKey));
  for (const f of b) if (!keys.has(portKey(f))) out.push(f);
  return out;
}

function newAgent(url: string, concurrency: number): http.Agent {
  const options = { keepAlive: true, maxSockets: concurrency + 1 };
  return url.startsWith('https:') ? new https.Agent(options) : new http.Agent(options);
}

/**
 * The HTTP client of the sink: node:http(s), one request per call, the whole body read (up to
 * 1 MiB), bounded by `timeoutMs`; unsubscribing aborts it.
 */
export function httpRequester(url: string, options: { readonly timeoutMs: number; readonly agent?: http.Agent }): HostSwitchRequester {
  const base = url.endsWith('/') ? url : `${url}/`;
  const maxBody = 1024 * 1024;
  return (req) =>
    new Observable<HostSwitchResponse>((subscriber) => {
      const target = new URL(req.path.replace(/^\//, ''), base);
      const client = target.protocol === 'https:' ? https : http;
      const headers: http.OutgoingHttpHeaders = req.body === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(req.body) };
      const call = client.request(target, { method: req.method, headers, ...(options.agent && { agent: options.agent }) }, (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > maxBody) call.destroy(new Error(`answer to ${req.method} ${req.path} is larger than ${String(maxBody)} bytes`));
          else chunks.push(chunk);
        });
        res.on('end', () => {
          subscriber.next({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') });
          subscriber.complete();
        });
        res.on('error', (err) => {
          subscriber.error(err);
        });
      });
      const deadline = setTimeout(() => call.destroy(new Error(`no answer to ${req.method} ${req.path} within ${String(options.timeoutMs)} ms`)), options.timeoutMs);
      call.on('error', (err) => {
        subscriber.error(err);
      });
      call.on('close', () => {
        clearTimeout(deadline);
      });
      call.end(req.body);
      return () => {
        clearTimeout(deadline);
        call.destroy();
      };
    });
}
