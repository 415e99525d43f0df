import { connectable, EMPTY, fromEvent, isObservable, merge, NEVER, Observable, of, Subject, take, takeUntil, type Connectable, type SchedulerLike } from 'rxjs';
import { coalesceDeltas } from '../operators/coalesceDeltas.js';
import { mergeDeltas } from '../operators/mergeDeltas.js';
import { toPortDeltas } from '../operators/toPortDeltas.js';
import type { PortDelta, SourceEvent } from './model.js';
import type { Sink, SinkReport } from './sinks/sink.js';

/** A sink and the names of the sources whose ports it publishes. */
export interface Route<S extends string = string> {
  readonly sink: Sink;
  readonly sources: readonly S[];
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
  /** The scheduler of the coalescing window (tests pass a TestScheduler). */
  readonly scheduler?: SchedulerLike | undefined;
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

/**
 * Wires sources to sinks: each source folds into its own port set and diffs, independently of
 * the others (a reconnect re-lists one source only); each sink gets the ref-counted merge of its
 * sources, coalesced. When `stop$` emits, the sources are cut off, every sink sees its input
 * complete and withdraws what it published, and the returned stream completes.
 *
 * Every way to end it withdraws: `signal` aborting, `stop$` emitting (the reports of the withdrawal
 * arrive, then completion), and unsubscribing (the withdrawal still runs to its end, bounded by each
 * sink's own timeout, but its reports go nowhere: prefer `signal` to see them). Passing an
 * Observable as the second argument is the same as `{ stop$ }`.
 *
 *   docker   ─ toPortDeltas ─┐
 *   iptables ─ toPortDeltas ─┴ mergeDeltas → coalesceDeltas → sink → reports
 *
 * `toPortDeltas` is `toPortSet → diffPortSets` fused, at a cost per event of what the event
 * changes rather than of everything the source publishes.
 */
export function createAgent<S extends string>(plan: AgentPlan<S>, stop: Observable<unknown> | AgentOptions = {}): Observable<SinkReport> {
  for (const route of plan.routes) {
    for (const name of route.sources) {
      if (!Object.hasOwn(plan.sources, name)) throw new Error(`a route names the source "${name}", which the plan does not have`);
    }
  }
  const windowMs = plan.coalesceMs ?? defaultCoalesceMs;
  const maxWindowMs = Math.max(windowMs, plan.maxCoalesceMs ?? defaultMaxCoalesceMs);
  const routes = plan.routes.filter((route) => route.sources.length > 0);
  if (routes.length === 0) return EMPTY;
  const { signal, stop$: given } = isObservable(stop) ? { stop$: stop, signal: undefined } : stop;
  return new Observable<SinkReport>((subscriber) => {
    // Unsubscribing stops the agent as `stop$` does; the withdrawal then runs on unobserved.
    const unsubscribed = new Subject<void>();
    const stop$ = merge(given ?? NEVER, signal ? aborted(signal) : NEVER, unsubscribed).pipe(take(1));
    // One subscription per source however many sinks it feeds, made once every sink listens: a
    // source that emits as it is subscribed (the Kubernetes API port, a library user's `of(...)`)
    // reaches all of them. The sources stop at `stop$`, before the sinks' withdrawal.
    const shared = new Map<string, Connectable<PortDelta>>();
    const deltasOf = (name: string): Observable<PortDelta> => {
      let deltas = shared.get(name);
      if (!deltas) {
        const events = (plan.sources as Readonly<Record<string, Observable<SourceEvent> | undefined>>)[name] ?? EMPTY;
        // toPortDeltas after takeUntil only maps what came before the stop; it subscribes to nothing.
        // eslint-disable-next-line rxjs-x/no-unsafe-takeuntil
        deltas = connectable(events.pipe(takeUntil(stop$), toPortDeltas()), { connector: () => new Subject<PortDelta>(), resetOnDisconnect: false });
        shared.set(name, deltas);
      }
      return deltas;
    };
    const runs = routes.map((route) =>
      mergeDeltas(...route.sources.map(deltasOf)).pipe(
        // Deliberately before the sink: it must see its input complete to withdraw its forwards.
        // eslint-disable-next-line rxjs-x/no-unsafe-takeuntil
        takeUntil(stop$),
        coalesceDeltas(windowMs, plan.scheduler, maxWindowMs),
        route.sink,
      ),
    );
    const subscription = merge(...runs).subscribe({
      next: (report) => { subscriber.next(report); },
      error: (error: unknown) => { subscriber.error(error); },
      complete: () => { subscriber.complete(); },
    });
    for (const deltas of shared.values()) subscription.add(deltas.connect());
    return () => {
      unsubscribed.next();
    };
  });
}

/** Emits once when `signal` aborts, at once if it already has. */
function aborted(signal: AbortSignal): Observable<unknown> {
  return signal.aborted ? of(signal.reason) : fromEvent(signal, 'abort').pipe(take(1));
}
