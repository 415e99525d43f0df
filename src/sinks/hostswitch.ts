import {
  asyncScheduler,
  catchError,
  connect,
  defer,
  EMPTY,
  filter,
  finalize,
  from,
  interval,
  map,
  merge,
  mergeMap,
  type Observable,
  of,
  scan,
  startWith,
  endWith,
  Subject,
  take,
  takeUntil,
  throwError,
  throwIfEmpty,
  timeout,
  timer,
  type SchedulerLike,
} from 'rxjs';
import { errorMessage } from '../errors.js';
import { moduleLogger, type Logger } from '../log.js';
import { trampoline } from '../../operators/trampoline.js';
import { eachOf, feedInto } from '../reconcileLoop.js';
import type { PortDelta } from '../model.js';
import { jitteredDelay, type Backoff } from '../backoff.js';
import { classifyReply, exposeBody, forwarderPaths, parseForwarderList, unexposeBody } from './hostswitch/api.js';
import { httpRequester, newAgent } from './hostswitch/http.js';
import { reconcile } from './hostswitch/reconcile.js';
import { initialState, type Command, type Env, type Input, type Step } from './hostswitch/state.js';
import type { HostSwitchRequest, HostSwitchRequester, HostSwitchResponse } from './hostswitch/types.js';
import type { Sink, SinkReport } from './sink.js';

export { httpRequester };
export type { HostSwitchRequest, HostSwitchRequester, HostSwitchResponse };

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
   * Re-read the host's forwards this often while something is published (0: never), so a host
   * switch that restarted empty while nothing changed here gets its forwards back.
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

/**
 * Publishes the agent's forwards through the host-switch expose API (gvisor-tap-vsock's
 * forwarder; docs/host-switch.md). The decisions are `reconcile` (pure, in hostswitch/); this
 * runs them: a `scan` over every input, each command carried out, and what comes of it fed back.
 *
 *   deltas:   a---b---c---|         a = +8080/tcp, b = -8080/tcp, c = +8081/tcp
 *   requests: LE--U---E---U         L = GET /all, E = expose, U = unexpose (each answered 200 a frame later)
 *   reports:  --w--x---v---(y|)     w = wrote +8080, x = wrote -8080, v = wrote +8081, y = withdrawn 1
 *
 * (marbles/hostswitch.test.ts runs this diagram as it stands here.)
 *
 * - Requests: `mergeMap` bounded by `concurrency` (+1 for the list read), each bounded by
 *   `requestTimeoutMs`. The reconciler sends at most `concurrency` at once and one per host port
 *   (a property test holds it to that), so per-port order needs no `groupBy` queue here: one would
 *   keep a group per port ever seen, and hold requests where a stop could not withdraw them.
 * - Timers: each entry's retry, the list's retry, the `resyncMs` re-read and the withdraw
 *   deadline are RxJS timers on `scheduler`, fed back as inputs.
 * - A throw anywhere (the requester, the logger, the reconciler) is an error notification.
 */
export function hostSwitchSink(opts: HostSwitchSinkOptions): Sink {
  const concurrency = Math.max(1, opts.concurrency ?? hostSwitchDefaults.concurrency);
  const requestTimeoutMs = opts.requestTimeoutMs ?? hostSwitchDefaults.requestTimeoutMs;
  if (opts.request === undefined) {
    // Thrown at start-up, so a bad URL is reported once rather than as endless failed requests.
    if (opts.url === undefined) throw new Error('hostSwitchSink needs a url or a request function');
    if (!URL.canParse(opts.url) || !/^https?:$/.test(new URL(opts.url).protocol)) throw new Error(`-hostSwitchURL ${JSON.stringify(opts.url)}: must be an http:// or https:// URL`);
  }
  const random = opts.random ?? Math.random;
  const env: Env = {
    addressing: { tapInterfaceIp: opts.tapInterfaceIp ?? hostSwitchDefaults.tapInterfaceIp, adminInstall: opts.adminInstall ?? false },
    concurrency,
    withdrawTimeoutMs: opts.withdrawTimeoutMs ?? hostSwitchDefaults.withdrawTimeoutMs,
    delayOf: (attempt) => jitteredDelay(attempt, opts.backoff, random),
    where: opts.url ?? 'the host switch',
  };
  const run: Runner = {
    env,
    resyncMs: opts.resyncMs ?? hostSwitchDefaults.resyncMs,
    requestTimeoutMs,
    scheduler: opts.scheduler ?? asyncScheduler,
    log: moduleLogger('hostswitch', opts.logger),
  };
  return (deltas$) =>
    defer(() => {
      const agent = opts.request === undefined ? newAgent(opts.url ?? '', concurrency) : undefined;
      const request = opts.request ?? httpRequester(opts.url ?? '', { timeoutMs: requestTimeoutMs, ...(agent && { agent }) });
      return reconciled(deltas$, { ...run, request }).pipe(finalize(() => agent?.destroy()));
    });
}

interface Runner {
  readonly env: Env;
  readonly resyncMs: number;
  readonly requestTimeoutMs: number;
  readonly scheduler: SchedulerLike;
  readonly log: Logger;
}

/**
 * The loop: inputs → scan(reconcile) → commands → effects → inputs. Inputs go through the queue
 * scheduler, so an input that arises while a step's commands are carried out (a requester that
 * answers synchronously) waits for them all: commands and reports keep their order, and 10,000
 * synchronous answers are a loop rather than a recursion that would overflow the stack.
 */
function reconciled(deltas$: Observable<PortDelta>, run: Runner & { readonly request: HostSwitchRequester }): Observable<SinkReport> {
  const feedback = new Subject<Input>();
  const ticks$ = run.resyncMs > 0 ? interval(run.resyncMs, run.scheduler).pipe(map((): Input => ({ type: 'tick' }))) : EMPTY;
  const inputs$ = merge(
    feedback,
    deltas$.pipe(
      map((delta): Input => ({ type: 'delta', delta })),
      startWith<Input>({ type: 'start' }),
      endWith<Input>({ type: 'stop' }),
    ),
    ticks$,
  ).pipe(trampoline());
  const seed: Step = { state: initialState(), commands: [] };
  return inputs$.pipe(
    scan((step: Step, input: Input) => reconcile(step.state, input, run.env), seed),
    eachOf((step) => step.commands),
    connect((commands$) => {
      const done$ = commands$.pipe(filter((c) => c.type === 'done'));
      const cancelList$ = commands$.pipe(filter((c) => c.type === 'cancelList'));
      return merge(
        commands$.pipe(mergeMap((c) => requestFor(c, run, cancelList$), run.env.concurrency + 1), feedInto(feedback)),
        commands$.pipe(mergeMap((c) => timerFor(c, run.scheduler)), feedInto(feedback)),
        commands$.pipe(mergeMap((c) => effectOf(c, run.log))),
      ).pipe(takeUntil(done$));
    }),
  );
}

/** The request a command makes, and its answer as an input; nothing for other commands. */
function requestFor(c: Command, run: Runner & { readonly request: HostSwitchRequester }, cancelList$: Observable<Command>): Observable<Input> {
  if (c.type === 'list') {
    return call(run, { method: 'GET', path: forwarderPaths.all }).pipe(
      map((res): Input => ({ type: 'listed', seq: c.seq, list: res.status === 200 ? parseForwarderList(res.body) : { error: `GET ${forwarderPaths.all} answered HTTP ${String(res.status)}${res.body.trim() ? `: ${res.body.trim().slice(0, 200)}` : ''}` } })),
      catchError((err: unknown) => of<Input>({ type: 'listed', seq: c.seq, list: { error: `could not read ${forwarderPaths.all}: ${errorMessage(err)}` } })),
      takeUntil(cancelList$),
    );
  }
  if (c.type !== 'expose' && c.type !== 'unexpose') return EMPTY;
  const body = c.type === 'expose' ? exposeBody(c.entry) : unexposeBody(c.entry);
  return call(run, { method: 'POST', path: forwarderPaths[c.type], body }).pipe(
    map((res): Input => ({ type: 'answer', key: c.key, op: c.type, answer: classifyReply(c.type, res.status, res.body) })),
    catchError((err: unknown) => of<Input>({ type: 'answer', key: c.key, op: c.type, answer: { kind: 'none', message: errorMessage(err) } })),
  );
}

/**
 * One request, bounded by the timeout. It errors when no answer came; a synchronous throw of the
 * requester is not that but a bug, and ends the sink with an error notification.
 */
function call(run: Runner & { readonly request: HostSwitchRequester }, req: HostSwitchRequest): Observable<HostSwitchResponse> {
  let answer$: Observable<HostSwitchResponse>;
  try {
    answer$ = from(run.request(req));
  } catch (err) {
    throw new Error(`the host-switch requester threw on ${req.method} ${req.path}: ${errorMessage(err)}`, { cause: err });
  }
  const late = (): Observable<never> => throwError(() => new Error(`no answer to ${req.method} ${req.path} within ${String(run.requestTimeoutMs)} ms`));
  return answer$.pipe(
    take(1),
    throwIfEmpty(() => new Error(`${req.method} ${req.path} ended without an answer`)),
    timeout({ first: run.requestTimeoutMs, scheduler: run.scheduler, with: late }),
  );
}

function timerFor(c: Command, scheduler: SchedulerLike): Observable<Input> {
  if (c.type === 'wait') return timer(c.ms, scheduler).pipe(map((): Input => ({ type: 'retry', key: c.key, gen: c.gen })));
  if (c.type === 'deadline') return timer(c.ms, scheduler).pipe(map((): Input => ({ type: 'deadline' })));
  return EMPTY;
}

/** Reports go out; log lines are written. */
function effectOf(c: Command, log: Logger): Observable<SinkReport> {
  if (c.type === 'report') return of(c.report);
  if (c.type === 'log') log[c.level](c.fields, c.msg);
  return EMPTY;
}
