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
export { encodePortMapping, splitPortMapping, maxPortMappingBytes, connectAddrsOf, type ConnectAddr, type PortMappingPart } from './sinks/vtunnelWire.js';
export { toPortSet } from '../operators/toPortSet.js';
export { diffPortSets } from '../operators/diffPortSets.js';
export { toPortDeltas } from '../operators/toPortDeltas.js';
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
export {
  containerdEvents,
  CONTAINERD_EVENTS_OPEN,
  ownerOf as containerdOwner,
  type ContainerdClient,
  type ContainerdEvent,
  type ContainerdStreamOptions,
} from '../streams/containerd.js';
export { grpcContainerdClient } from '../streams/containerdClient.js';
export { portsFromLabel, portsFromNetworkConfig } from '../streams/nerdctlPorts.js';
export { iptablesEvents, type IptablesClient, type IptablesStreamOptions } from '../streams/iptables.js';
export { nodeIptablesClient } from '../streams/iptablesClient.js';
export { parseIptablesSave, cniPortmapRules, type CountingRule } from '../streams/iptablesRules.js';
export { kubernetesServices, type KubeServicesClient, type KubernetesStreamOptions } from '../streams/kubernetes.js';
export { kubeconfigClients } from '../streams/kubernetesClient.js';
export { forwardsOfService } from '../streams/kubeServices.js';
export { listenerSink, nodePlaceholders, type ListenerSinkOptions, type PlaceholderBinder } from './sinks/listeners.js';
export { loopbackSink, interfaceAddrs, addressAddrs, type LoopbackSinkOptions } from './loopback/sink.js';
export { plan as planLoopback, reconcile as reconcileLoopback, type ForwarderSpec, type ListenAddr } from './loopback/plan.js';
export { coalesceTriggers } from '../operators/coalesceTriggers.js';
export { exhaustMapWithTrailing } from '../operators/exhaustMapWithTrailing.js';
export { vsockSender } from './sinks/vsockTransport.js';
export { hostSwitchSink, httpRequester, type HostSwitchSinkOptions } from './sinks/hostswitch.js';
export { startHostReceiver, hostReceiver, type HostReceiver, type HostReceiverOptions } from './host/receiver.js';
export { runHost } from './host/cli.js';
export { errorMessage } from './errors.js';
export { procnetEvents, procnetDefaults, type ProcnetOptions, type SocketTable, type SocketRead } from '../streams/procnet.js';
export { nodeSocketTable, procNetTable, sockDiagTable } from '../streams/procnetClient.js';
export { publishable, parsePortList, procnetExclusions, defaultProcnetExclude, type ForwardPolicy, type PortRange } from '../streams/procnetPolicy.js';
export { parseProcNet, type ListeningSocket } from '../streams/procnetTable.js';
