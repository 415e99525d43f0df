import { connectable, EMPTY, identity, merge, Observable, Subject, takeUntil, tap, type Connectable, type MonoTypeOperatorFunction, type SchedulerLike } from 'rxjs';
import { coalesceDeltas } from '../operators/coalesceDeltas.js';
import { mergeDeltas } from '../operators/mergeDeltas.js';
import { toPortDeltas } from '../operators/toPortDeltas.js';
import type { PortDelta, SourceEvent } from './model.js';
import type { Sink, SinkReport } from './sinks/sink.js';
import type { AgentObserver } from './status/observer.js';

/** A sink and the names of the sources whose ports it publishes. */
export interface Route {
  readonly sink: Sink;
  readonly sources: readonly string[];
  /** The sink's name in the agent's status (docs/status.md); by default `sink<index>`. */
  readonly name?: string;
}

export interface AgentPlan {
  /** Each source's raw events, by name (`docker`, `iptables`, or a library user's own). */
  readonly sources: Readonly<Record<string, Observable<SourceEvent>>>;
  readonly routes: readonly Route[];
  /** Window in which bursts are coalesced into one sink write; a lone change is never delayed. */
  readonly coalesceMs?: number;
  /** How wide the window may grow while a burst goes on: the longest a change waits in one. */
  readonly maxCoalesceMs?: number;
  readonly scheduler?: SchedulerLike;
  /** Told what flows through the agent, for its status (`statusTracker`, docs/status.md). */
  readonly observer?: AgentObserver;
}

export const defaultCoalesceMs = 50;
export const defaultMaxCoalesceMs = 1000;

/**
 * Wires sources to sinks: each source folds into its own port set and diffs, independently of
 * the others (a reconnect re-lists one source only); each sink gets the ref-counted merge of its
 * sources, coalesced. When `stop$` emits, the sources are cut off, every sink sees its input
 * complete and withdraws what it published, and the returned stream completes.
 *
 *   docker   ─ toPortDeltas ─┐
 *   iptables ─ toPortDeltas ─┴ mergeDeltas → coalesceDeltas → sink → reports
 *
 * `toPortDeltas` is `toPortSet → diffPortSets` fused, at a cost per event of what the event
 * changes rather than of everything the source publishes.
 */
export function createAgent(plan: AgentPlan, stop$: Observable<unknown>): Observable<SinkReport> {
  for (const route of plan.routes) {
    for (const name of route.sources) {
      if (!Object.hasOwn(plan.sources, name)) throw new Error(`a route names the source "${name}", which the plan does not have`);
    }
  }
  const windowMs = plan.coalesceMs ?? defaultCoalesceMs;
  const maxWindowMs = Math.max(windowMs, plan.maxCoalesceMs ?? defaultMaxCoalesceMs);
  const routes = plan.routes.filter((route) => route.sources.length > 0);
  if (routes.length === 0) return EMPTY;
  const seen = observing(plan.observer);
  return new Observable<SinkReport>((subscriber) => {
    plan.observer?.start(
      [...new Set(routes.flatMap((route) => route.sources))],
      routes.map((route, i) => sinkName(route, i)),
    );
    // One subscription per source however many sinks it feeds, made once every sink listens: a
    // source that emits as it is subscribed (the Kubernetes API port, a library user's `of(...)`)
    // reaches all of them. The sources stop at `stop$`, before the sinks' withdrawal.
    const shared = new Map<string, Connectable<PortDelta>>();
    const deltasOf = (name: string): Observable<PortDelta> => {
      let deltas = shared.get(name);
      if (!deltas) {
        const events = plan.sources[name] ?? EMPTY;
        // toPortDeltas after takeUntil only maps what came before the stop; it subscribes to nothing.
        // eslint-disable-next-line rxjs-x/no-unsafe-takeuntil
        deltas = connectable(events.pipe(seen.event(name), takeUntil(stop$), toPortDeltas(), seen.claims(name)), { connector: () => new Subject<PortDelta>(), resetOnDisconnect: false });
        shared.set(name, deltas);
      }
      return deltas;
    };
    const runs = routes.map((route, i) =>
      mergeDeltas(...route.sources.map(deltasOf)).pipe(
        // Deliberately before the sink: it must see its input complete to withdraw its forwards.
        // eslint-disable-next-line rxjs-x/no-unsafe-takeuntil
        takeUntil(stop$),
        coalesceDeltas(windowMs, plan.scheduler, maxWindowMs),
        seen.routed(sinkName(route, i)),
        route.sink,
        seen.report(sinkName(route, i)),
      ),
    );
    const subscription = merge(...runs).subscribe(subscriber);
    for (const deltas of shared.values()) subscription.add(deltas.connect());
    return subscription;
  });
}

function sinkName(route: Route, index: number): string {
  return route.name ?? `sink${String(index)}`;
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
