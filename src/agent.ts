import { connectable, EMPTY, merge, Observable, Subject, takeUntil, type Connectable, type SchedulerLike } from 'rxjs';
import { coalesceDeltas } from '../operators/coalesceDeltas.js';
import { mergeDeltas } from '../operators/mergeDeltas.js';
import { toPortDeltas } from '../operators/toPortDeltas.js';
import type { PortDelta, SourceEvent } from './model.js';
import type { Sink, SinkReport } from './sinks/sink.js';

/** A sink and the names of the sources whose ports it publishes. */
export interface Route {
  readonly sink: Sink;
  readonly sources: readonly string[];
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
  return new Observable<SinkReport>((subscriber) => {
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
    const subscription = merge(...runs).subscribe(subscriber);
    for (const deltas of shared.values()) subscription.add(deltas.connect());
    return subscription;
  });
}
