/**
 * `portstream/sinks`: what makes the host agree with the merged deltas: the vtunnel sink (Rancher
 * Desktop's host service, over TCP or AF_VSOCK), the host-switch sink (an HTTP expose API), the
 * listener sink (placeholder sockets for WSL's localhost forwarding) and the table sink.
 * @module
 */
export type { Sink, SinkReport } from '../sinks/sink.js';
export { tableSink, renderTable, type TableOutput } from '../sinks/table.js';
export { vtunnelSink, vtunnelDefaults, type VtunnelSinkOptions } from '../sinks/vtunnel.js';
export { tcpSender, type VtunnelSend } from '../sinks/vtunnelTransport.js';
export { vsockSender } from '../sinks/vsockTransport.js';
export {
  encodePortMapping,
  maxPortMappingBytes,
  splitPortMapping,
  type ConnectAddr,
  type PortMappingPart,
} from '../wire/portMapping.js';
export { connectAddrsOf } from '../wire/connectAddrs.js';
export { listenerSink, listenerDefaults, nodePlaceholders, type ListenerSinkOptions, type PlaceholderBinder } from '../sinks/listeners.js';
export {
  hostSwitchSink,
  hostSwitchDefaults,
  httpRequester,
  type HostSwitchRequest,
  type HostSwitchRequester,
  type HostSwitchResponse,
  type HostSwitchSinkOptions,
} from '../sinks/hostswitch.js';
export { addressAddrs, interfaceAddrs, loopbackDefaults, loopbackSink, type LoopbackSinkOptions } from '../loopback/sink.js';
export type { ForwarderSpec, ListenAddr } from '../loopback/plan.js';
