import {
  asyncScheduler,
  catchError,
  concat,
  connectable,
  identity,
  defer,
  EMPTY,
  ignoreElements,
  merge,
  Observable,
  of,
  race,
  ReplaySubject,
  retry,
  startWith,
  Subject,
  Subscription,
  take,
  takeUntil,
  tap,
  throwError,
  timer,
  type Connectable,
  type MonoTypeOperatorFunction,
  type SchedulerLike,
} from 'rxjs';
import { fromEvent, isObservable, NEVER } from 'rxjs';
import { coalesceDeltas } from '../operators/coalesceDeltas.js';
import { mergeDeltas } from '../operators/mergeDeltas.js';
import { reconnectWithBackoff } from '../operators/reconnectWithBackoff.js';
import { toPortDeltas } from '../operators/toPortDeltas.js';
import { defaultBackoff, jitteredDelay, retryLogLevel, type Backoff } from './backoff.js';
import { errorMessage } from './errors.js';
import { moduleLogger, type Logger } from './log.js';
import { portKey, type Forward, type PortDelta, type PortKey, type SourceEvent } from './model.js';
import type { Sink, SinkReport } from './sinks/sink.js';
import type { AgentObserver } from './status/observer.js';

/** A sink and the names of the sources whose ports it publishes. */
export interface Route<S extends string = string> {
  readonly sink: Sink;
  readonly sources: readonly S[];
  /** For logs: which sink failed. Defaults to `sink N` (1-based, in plan order). */
  readonly name?: string | undefined;
}

/**
 * What `createAgent` runs: named sources and the routes from them to sinks. `S` is inferred from
 * the keys of `sources` alone, so a route that names a source the plan lacks is a type error.
 */
export interface AgentPlan<S extends string = string> {
  /** Each source's raw events, by name (`docker`, `iptables`, or a library user's own). */
  readonly sources: Readonly<Record<S, Observable<SourceEvent>>>;
  readonly routes: readonly Route<NoInfer<S>>[];
  /** Window in which bursts are coalesced into one sink write; a lone change is never delayed. */
  readonly coalesceMs?: number | undefined;
  /** How wide the window may grow while a burst goes on: the longest a change waits in one. */
  readonly maxCoalesceMs?: number | undefined;
  /** The waits before a failed source is resubscribed or a failed sink restarted. */
  readonly backoff?: AgentBackoff | undefined;
  /** Where it logs, through a child naming its module; without one it logs nothing. */
  readonly logger?: Logger | undefined;
  readonly scheduler?: SchedulerLike | undefined;
  /** Told what flows through the agent, for its status (`statusTracker`, docs/status.md). */
  readonly observer?: AgentObserver | undefined;
}

/** `Backoff`, plus how long a part must run without failing for its waits to start small again. */
export interface AgentBackoff extends Backoff {
  readonly stableMs?: number;
  readonly random?: () => number;
}

/**
 * How to stop an agent: an AbortSignal, an Observable whose first value stops it, or both (the
 * first to fire wins). Either makes the agent withdraw everything it published and complete.
 */
export interface AgentOptions {
  readonly signal?: AbortSignal | undefined;
  readonly stop$?: Observable<unknown> | undefined;
}

/** The coalescing window when the plan names none, in ms. */
export const defaultCoalesceMs = 50;
/** The longest a coalescing window may grow to during a burst when the plan names none, in ms. */
export const defaultMaxCoalesceMs = 1000;

/** What a source and a route share: the stop, the log, the clock and the back-off. */
interface Context {
  readonly stopped: Observable<void>;
  readonly log: Logger;
  readonly scheduler: SchedulerLike;
  readonly backoff: AgentBackoff;
}

/**
 * Wires sources to sinks: each source folds into its own port set and diffs, independently of
 * the others (a reconnect re-lists one source only); each sink gets the ref-counted merge of its
 * sources, coalesced. When `stop$` emits, the sources are cut off, every sink sees its input
 * complete and withdraws what it published, and the returned stream completes.
 *
 *   docker   ─ toPortDeltas ─┐
 *   iptables ─ toPortDeltas ─┴ mergeDeltas → coalesceDeltas → sink → reports
 *
 * No failure ends the agent (docs/failures.md). A source whose stream errors is logged with its
 * name and resubscribed with back-off; its fresh snapshot is diffed against what it had, so
 * nothing it still publishes is withdrawn and re-added. A sink that errors is logged, reported
 * as `failed` and restarted with back-off, and is then given the whole merged state again. The
 * other sources and sinks keep forwarding meanwhile.
 *
 *   docker:   -a--#                  a = +80; the stream fails at 4
 *   (again):         -s              resubscribed after a back-off of 3: s lists 80 again
 *   iptables: ------b----            b = +443
 *   sink:     -a----b----            nothing for s: 80 never left
 *
 * Every way to end it withdraws: `signal` aborting and `stop$` emitting (the withdrawal's reports
 * arrive, then completion), and unsubscribing (the withdrawal still runs to its end, bounded by
 * each sink's own timeout, but its reports go nowhere). An Observable as the second argument is
 * the same as `{ stop$ }`.
 */
export function createAgent<S extends string>(plan: AgentPlan<S>, stop: Observable<unknown> | AgentOptions = {}): Observable<SinkReport> {
  const { signal, stop$: given } = isObservable(stop) ? { stop$: stop, signal: undefined } : stop;
  const stop$ = merge(given ?? NEVER, signal ? aborted(signal) : NEVER);
  for (const route of plan.routes) {
    for (const name of route.sources) {
      if (!Object.hasOwn(plan.sources, name)) throw new Error(`a route names the source "${name}", which the plan does not have`);
    }
  }
  const windowMs = plan.coalesceMs ?? defaultCoalesceMs;
  const maxWindowMs = Math.max(windowMs, plan.maxCoalesceMs ?? defaultMaxCoalesceMs);
  const routes = plan.routes.map((route, i) => ({ ...route, name: route.name ?? `sink ${String(i + 1)}` })).filter((r) => r.sources.length > 0);
  if (routes.length === 0) return EMPTY;
  const seen = observing(plan.observer);
  return new Observable<SinkReport>((subscriber) => {
    plan.observer?.start([...new Set(routes.flatMap((route) => route.sources))], routes.map((route) => route.name));
    // One stop for every part, however late it subscribes (a sink restarting after the stop).
    const stopped = new ReplaySubject<void>(1);
    const ctx: Context = {
      stopped,
      log: moduleLogger('agent', plan.logger),
      scheduler: plan.scheduler ?? asyncScheduler,
      backoff: plan.backoff ?? {},
    };
    const subscription = new Subscription();
    const stopNow = (): void => {
      stopped.next();
      stopped.complete();
    };
    subscription.add(
      stop$.pipe(take(1)).subscribe(stopNow),
    );
    // One subscription per source however many sinks it feeds, made once every sink listens: a
    // source that emits as it is subscribed (the Kubernetes API port, a library user's `of(...)`)
    // reaches all of them. The sources stop at the stop, before the sinks' withdrawal.
    const shared = new Map<string, Connectable<PortDelta>>();
    const deltasOf = (name: string): Observable<PortDelta> => {
      let deltas = shared.get(name);
      if (!deltas) {
        const events = resilientDeltas(name, ((plan.sources as Readonly<Record<string, Observable<SourceEvent> | undefined>>)[name] ?? EMPTY).pipe(seen.event(name)), ctx).pipe(seen.claims(name));
        deltas = connectable(events, { connector: () => new Subject<PortDelta>(), resetOnDisconnect: false });
        shared.set(name, deltas);
      }
      return deltas;
    };
    const runs = routes.map((route) => {
      const merged = mergeDeltas(...route.sources.map(deltasOf)).pipe(coalesceDeltas(windowMs, plan.scheduler, maxWindowMs));
      return runSink(route.name, route.sink, merged.pipe(seen.routed(route.name)), ctx).pipe(seen.report(route.name));
    });
    // Not tied to `subscriber`: unsubscribing stops the agent as `stop$` does, and the sinks'
    // withdrawal then runs to its end, unobserved.
    subscription.add(
      merge(...runs).subscribe({
        next: (report) => { subscriber.next(report); },
        error: (error: unknown) => {
          subscriber.error(error);
          subscription.unsubscribe();
        },
        complete: () => {
          subscriber.complete();
          subscription.unsubscribe();
        },
      }),
    );
    for (const deltas of shared.values()) subscription.add(deltas.connect());
    return stopNow;
  });
}

/** Emits once when `signal` aborts, at once if it already has. */
function aborted(signal: AbortSignal): Observable<unknown> {
  return signal.aborted ? of(signal.reason) : fromEvent(signal, 'abort').pipe(take(1));
}

/**
 * One source's deltas, never ending in an error. A failing stream is resubscribed before the
 * fold, so the fold's state outlives it and the fresh snapshot is diffed against what the source
 * had. A throw in the fold itself (a forward that cannot be keyed) leaves that state unusable:
 * then everything the source published is withdrawn and it starts over, also with back-off.
 */
function resilientDeltas(name: string, events: Observable<SourceEvent>, ctx: Context): Observable<PortDelta> {
  const { log, scheduler, backoff } = ctx;
  const onRetry = (what: string) => (error: unknown, attempt: number, delayMs: number): void => {
    log[retryLogLevel(attempt)]({ source: name, attempt, delayMs }, `source ${name}: ${what} (${errorMessage(error)}); resubscribing in ${String(delayMs)} ms`);
  };
  return defer(() => {
    const published = new Map<PortKey, Forward>(); // what this attempt has added, net
    return events.pipe(
      reconnectWithBackoff({ ...backoff, scheduler, onRetry: onRetry('its stream failed; its next list is diffed against what it has') }),
      toPortDeltas(),
      tap((delta) => {
        for (const f of delta.removed) published.delete(portKey(f));
        for (const f of delta.added) published.set(portKey(f), f);
      }),
      catchError((error: unknown) => {
        const withdrawal: PortDelta = { added: [], removed: [...published.values()] };
        published.clear();
        const failure = throwError(() => new Error(`cannot fold its events (${errorMessage(error)}); withdrew its ${String(withdrawal.removed.length)} ports`));
        return withdrawal.removed.length > 0 ? concat(of(withdrawal), failure) : failure;
      }),
    );
  }).pipe(
    reconnectWithBackoff({ ...backoff, scheduler, onRetry: onRetry('failed') }),
    // Last, so that a stop also ends a wait for the next attempt.
    takeUntil(ctx.stopped),
  );
}

/**
 * Runs one sink on the merged deltas of its route. The merged stream is followed once, whatever
 * the sink does, and folded into the route's current state; a sink that fails is restarted after
 * a back-off (at once if the agent is stopping meanwhile, so that it withdraws) with that whole
 * state as its first delta. A sink that fails after its input ended (while withdrawing) is given up.
 */
function runSink(name: string, sink: Sink, merged: Observable<PortDelta>, ctx: Context): Observable<SinkReport> {
  const { log, scheduler, backoff } = ctx;
  return defer(() => {
    const state = new Map<PortKey, Forward>();
    const input = new Subject<PortDelta>();
    const failures = new Subject<SinkReport>();
    let inputEnded = false;
    let attempt = 0;
    let startedAt = scheduler.now();
    const follow = merged.pipe(
      // eslint-disable-next-line rxjs-x/no-unsafe-takeuntil -- coalesceDeltas flushes at the stop; the sink must see its input complete
      takeUntil(ctx.stopped),
      tap({
        next: (delta) => {
          for (const f of delta.removed) state.delete(portKey(f));
          for (const f of delta.added) state.set(portKey(f), f);
          input.next(delta);
        },
        complete: () => {
          inputEnded = true;
          input.complete();
        },
      }),
      catchError((error: unknown) => {
        // Only a defect in the merge can get here (the sources never error): withdraw this route.
        log.error({ sink: name, err: errorMessage(error) }, `sink ${name}: its merged input failed (${errorMessage(error)}); withdrawing its forwards`);
        inputEnded = true;
        input.complete();
        return EMPTY;
      }),
      ignoreElements(),
    );
    const runs = defer(() => {
      startedAt = scheduler.now();
      return state.size === 0 ? input.pipe(sink) : input.pipe(startWith<PortDelta>({ added: [...state.values()], removed: [] }), sink);
    }).pipe(
      retry({
        delay: (error: unknown) => {
          const message = errorMessage(error);
          if (inputEnded) {
            log.error({ sink: name, err: message }, `sink ${name} failed while withdrawing (${message}); giving up on it`);
            return EMPTY;
          }
          if (scheduler.now() - startedAt >= (backoff.stableMs ?? defaultBackoff.stableMs)) attempt = 0;
          attempt += 1;
          const delayMs = jitteredDelay(attempt, backoff, backoff.random);
          log[retryLogLevel(attempt)]({ sink: name, attempt, delayMs }, `sink ${name} failed (${message}); restarting it in ${String(delayMs)} ms with the whole state`);
          failures.next({ sink: name, type: 'failed', error: message, retryInMs: delayMs });
          return race(timer(delayMs, scheduler), ctx.stopped);
        },
      }),
      tap({ finalize: () => { failures.complete(); } }),
    );
    return merge(failures, runs, follow);
  });
}

interface Taps {
  event(source: string): MonoTypeOperatorFunction<SourceEvent>;
  claims(source: string): MonoTypeOperatorFunction<PortDelta>;
  routed(sink: string): MonoTypeOperatorFunction<PortDelta>;
  report(sink: string): MonoTypeOperatorFunction<SinkReport>;
}

/** Taps for the observer; without one, the pipeline is exactly what it was (no tap at all). */
function observing(observer: AgentObserver | undefined): Taps {
  if (!observer) return { event: () => identity, claims: () => identity, routed: () => identity, report: () => identity };
  return {
    event: (source: string) => tap<SourceEvent>(() => { observer.event(source); }),
    claims: (source: string) => tap<PortDelta>((delta) => { observer.claims(source, delta); }),
    routed: (sink: string) => tap<PortDelta>((delta) => { observer.routed(sink, delta); }),
    report: (sink: string) => tap<SinkReport>((report) => { observer.report(sink, report); }),
  };
}
