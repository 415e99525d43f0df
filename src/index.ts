/**
 * portstream as a library: the model, the streams, the operators and the sinks, to compose into
 * an agent of your own (see README "Composing portstream").
 */
export * from './model.js';
export { createAgent, defaultCoalesceMs, defaultMaxCoalesceMs, type AgentPlan, type Route } from './agent.js';
export { parseConfig, agentUsage, type AgentConfig } from './config.js';
export { setRootLogger, moduleLogger, type Logger } from './log.js';
export type { Sink, SinkReport } from './sinks/sink.js';
export { tableSink, renderTable } from './sinks/table.js';
export { vtunnelSink, type VtunnelSinkOptions } from './sinks/vtunnel.js';
export { tcpSender } from './sinks/vtunnelTransport.js';
export { encodePortMapping, connectAddrsOf, type ConnectAddr } from './sinks/vtunnelWire.js';
export { toPortSet } from '../operators/toPortSet.js';
export { diffPortSets } from '../operators/diffPortSets.js';
export { mergeDeltas, refCountClaims } from '../operators/mergeDeltas.js';
export { coalesceDeltas } from '../operators/coalesceDeltas.js';
export { reconnectWithBackoff, backoffDelay, type BackoffOptions } from '../operators/reconnectWithBackoff.js';
export {
  dockerEvents,
  EVENTS_OPEN,
  type DockerClient,
  type DockerEvent,
  type DockerContainerInspect,
  type DockerContainerSummary,
  type DockerStreamOptions,
} from '../streams/docker.js';
export { dockerodeClient } from '../streams/dockerClient.js';
export { portsFromInspect, portsFromList } from '../streams/dockerPorts.js';
