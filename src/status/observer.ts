import type { PortDelta } from '../model.js';
import type { SinkReport } from '../sinks/sink.js';

/**
 * What `createAgent` tells an observer (`AgentPlan.observer`) as things pass through it, all
 * synchronously from taps in the pipeline. The agent's status is a fold of these calls and of the
 * sources' connection reports (see docs/status.md).
 */
export interface AgentObserver {
  /** Once per subscription: the sources that feed a sink, and the sinks by name. */
  start(sources: readonly string[], sinks: readonly string[]): void;
  /** A source emitted a raw event. */
  event(source: string): void;
  /** What a source's claims changed (its own deltas, before the merge). */
  claims(source: string, delta: PortDelta): void;
  /** What a sink was given to apply (the merged, coalesced deltas). */
  routed(sink: string, delta: PortDelta): void;
  /** What a sink said about its work. */
  report(sink: string, report: SinkReport): void;
}

/**
 * How a stream says whether its backend is reachable: `connected` once it has (re)listed,
 * `disconnected` with the error whenever it backs off to reconnect. Optional on every stream;
 * a stream without one behaves exactly as before.
 */
export interface ConnectionReporter {
  connected(): void;
  disconnected(error: unknown): void;
}
