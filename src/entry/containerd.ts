/**
 * `portstream/containerd`: containerd (and nerdctl's port labels) as a source.
 * `containerdEvents` takes any `ContainerdClient`; `grpcContainerdClient` is the real one, and
 * loads grpc-js and the vendored protos only at its first call.
 * @module
 */
export {
  containerdEvents,
  containerdTopics,
  CONTAINERD_EVENTS_OPEN,
  ownerOf as containerdOwner,
  type ContainerdClient,
  type ContainerdContainer,
  type ContainerdEvent,
  type ContainerdStreamOptions,
  type ContainerdTask,
  type ContainerdTaskStatus,
  type ContainerdTopic,
} from '../../streams/containerd.js';
export { grpcContainerdClient, type GrpcContainerdClient, type GrpcContainerdClientOptions } from '../../streams/containerdClientLazy.js';
export { portsFromLabel, portsFromNetworkConfig } from '../../streams/nerdctlPorts.js';
export type { Parsed as ParsedPorts } from '../../streams/dockerPorts.js';
