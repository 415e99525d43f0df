import { BehaviorSubject, Subject, type Observable } from 'rxjs';
import { errorMessage } from '../errors.js';
import type { AgentObserver, ConnectionReporter } from './observer.js';
import { emptyStatus, foldStatus, type AgentStatus, type Settled, type StatusInput } from './state.js';

/**
 * The agent's status as the library offers it: give `observer` to `createAgent` (in the plan)
 * and `connection(name)` to each stream, then read `status$` (the current status, then every
 * change) or `current()`. See docs/status.md.
 */
export interface StatusTracker {
  readonly observer: AgentObserver;
  /** The reporter for the stream called `source` (its `connection` option). */
  connection(source: string): ConnectionReporter;
  /** The current status at once, then each new one; completes at `close()`. */
  readonly status$: Observable<AgentStatus>;
  /** Each forward a sink applied or removed, with how long after its source changed it. */
  readonly settled$: Observable<Settled>;
  current(): AgentStatus;
  close(): void;
}

export interface StatusTrackerOptions {
  /** The clock the status's times come from; epoch milliseconds by default. */
  readonly now?: () => number;
}

export function statusTracker(opts: StatusTrackerOptions = {}): StatusTracker {
  const now = opts.now ?? Date.now;
  const inputs = new Subject<StatusInput>();
  const state = new BehaviorSubject<AgentStatus>(emptyStatus);
  const settled = new Subject<Settled>();
  // The one place the fold runs, so its result is there for a scrape without re-folding.
  const folding = inputs.pipe(foldStatus()).subscribe({
    next: (step) => {
      state.next(step.status);
      for (const s of step.settled) settled.next(s);
    },
    error: (err: unknown) => { state.error(err); },
  });
  const observer: AgentObserver = {
    start: (sources, sinks) => { inputs.next({ type: 'start', at: now(), sources, sinks }); },
    event: (source) => { inputs.next({ type: 'event', at: now(), source }); },
    claims: (source, delta) => { inputs.next({ type: 'claims', at: now(), source, delta }); },
    routed: (sink, delta) => { inputs.next({ type: 'routed', at: now(), sink, delta }); },
    report: (sink, report) => { inputs.next({ type: 'report', at: now(), sink, report }); },
  };
  return {
    observer,
    connection: (source) => ({
      connected: () => { inputs.next({ type: 'connected', at: now(), source }); },
      disconnected: (error) => { inputs.next({ type: 'disconnected', at: now(), source, error: errorMessage(error) }); },
    }),
    status$: state.asObservable(),
    settled$: settled.asObservable(),
    current: () => state.getValue(),
    close: () => {
      folding.unsubscribe();
      inputs.complete();
      state.complete();
      settled.complete();
    },
  };
}
