import { asapScheduler, BehaviorSubject, Subject, type Observable, type SchedulerLike, type Subscription } from 'rxjs';
import { errorMessage } from '../errors.js';
import { moduleLogger, type Logger } from '../log.js';
import type { AgentObserver, ConnectionReporter } from './observer.js';
import { emptyStatus, reduceStatusAll, type AgentStatus, type Settled, type StatusInput } from './state.js';

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

/** The clock, scheduler and logger of a status tracker (tests pass virtual ones). */
export interface StatusTrackerOptions {
  /** The clock the status's times come from; epoch milliseconds by default. */
  readonly now?: () => number;
  /** Where the fold of a batch of inputs runs; `asapScheduler` (right after the current task) by default. */
  readonly scheduler?: SchedulerLike;
  /** Where it logs, through a child naming its module; without one it logs nothing. */
  readonly logger?: Logger | undefined;
}

/**
 * Inputs are queued and folded together (`reduceStatusAll`) once the synchronous work that made
 * them is done (an event's taps, its sink write): the event path pays only a push onto an array,
 * and a batch copies each changed part of the state once. `current()` folds whatever is queued
 * first, so it is never behind.
 */
export function statusTracker(opts: StatusTrackerOptions = {}): StatusTracker {
  const now = opts.now ?? Date.now;
  const scheduler = opts.scheduler ?? asapScheduler;
  const log = moduleLogger('status', opts.logger);
  const state = new BehaviorSubject<AgentStatus>(emptyStatus);
  const settled = new Subject<Settled>();
  let queue: StatusInput[] = [];
  let pending: Subscription | undefined;
  let closed = false;
  const flush = (): void => {
    pending?.unsubscribe();
    pending = undefined;
    if (queue.length === 0) return;
    const batch = queue;
    queue = [];
    try {
      const step = reduceStatusAll(state.getValue(), batch);
      state.next(step.status);
      for (const s of step.settled) settled.next(s);
    } catch (err) {
      // A defect in the fold must not take the agent down: the status misses this batch, and says so.
      log.error({ err }, `the status could not take in ${String(batch.length)} changes: ${errorMessage(err)}`);
    }
  };
  const push = (input: StatusInput): void => {
    if (closed) return;
    queue.push(input);
    pending ??= scheduler.schedule(flush);
  };
  const observer: AgentObserver = {
    start: (sources, sinks) => { push({ type: 'start', at: now(), sources, sinks }); },
    event: (source) => { push({ type: 'event', at: now(), source }); },
    claims: (source, delta) => { push({ type: 'claims', at: now(), source, delta }); },
    routed: (sink, delta) => { push({ type: 'routed', at: now(), sink, delta }); },
    report: (sink, report) => { push({ type: 'report', at: now(), sink, report }); },
  };
  return {
    observer,
    connection: (source) => ({
      connected: () => { push({ type: 'connected', at: now(), source }); },
      disconnected: (error) => { push({ type: 'disconnected', at: now(), source, error: errorMessage(error) }); },
    }),
    status$: state.asObservable(),
    settled$: settled.asObservable(),
    current: () => {
      flush();
      return state.getValue();
    },
    close: () => {
      flush();
      closed = true;
      state.complete();
      settled.complete();
    },
  };
}
