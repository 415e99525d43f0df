/**
 * `portstream/docker`: the Docker engine as a source. `dockerEvents` takes any `DockerClient`;
 * `dockerodeClient` is the real one, and loads dockerode only at its first request.
 * @module
 */
export {
  dockerEvents,
  dockerDefaults,
  EVENTS_OPEN,
  type DockerClient,
  type DockerContainerInspect,
  type DockerContainerSummary,
  type DockerEvent,
  type DockerStreamOptions,
} from '../../streams/docker.js';
export { dockerodeClient, type DockerConnection, type DockerodeClientOptions } from '../../streams/dockerClient.js';
export { portsFromInspect, portsFromList, type InspectPorts, type ListPort, type Parsed as ParsedPorts } from '../../streams/dockerPorts.js';
