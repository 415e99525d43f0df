/**
 * `portstream/host`: the host side of the vtunnel protocol, for a host that has no Rancher
 * Desktop: it reads the agent's port mappings and listens on the host for each forward.
 * @module
 */
export {
  hostReceiver,
  receiverDefaults,
  startHostReceiver,
  type BindingStatus,
  type HostEvent,
  type HostReceiver,
  type HostReceiverOptions,
  type ServerEvent,
} from '../host/receiver.js';
export type { BindingEvent, OpenProxy, ProxyEvent } from '../host/bindings.js';
export type { HostBinding, PortMapping, VmAddress } from '../wire/parsePortMapping.js';
export type { ProxyOptions } from '../host/proxy.js';
export { runHost, type HostIo } from '../host/cli.js';
