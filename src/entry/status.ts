/**
 * `portstream/status`: what a running agent holds, as an Observable (`statusTracker`, fed through
 * `AgentPlan.observer`), its JSON views, its Prometheus metrics and the HTTP endpoint that serves them.
 * @module
 */
export { statusTracker, type StatusTracker, type StatusTrackerOptions } from '../status/tracker.js';
export type { AgentObserver, ConnectionReporter } from '../status/observer.js';
export {
  reduceStatus,
  reduceStatusAll,
  foldStatus,
  statusOf,
  emptyStatus,
  type AgentStatus,
  type ForwardStatus,
  type SinkForwardState,
  type SinkStatus,
  type SourceStatus,
  type StatusInput,
  type StatusStep,
  type Settled,
} from '../status/state.js';
export { forwardsView, healthView, type ForwardView, type HealthView } from '../status/views.js';
export { statusMetrics, type StatusMetrics } from '../status/metrics.js';
export { serveStatus, type StatusServer } from '../status/server.js';
export { parseStatusAddr, defaultStatusSocket, type StatusAddress } from '../status/address.js';
