/**
 * `portstream/kubernetes`: NodePort and LoadBalancer Services as a source. `kubernetesServices`
 * takes a stream of `KubeServicesClient`s; `kubeconfigClients` makes them from a kubeconfig file,
 * and loads @kubernetes/client-node only once that file exists.
 * @module
 */
export {
  kubernetesServices,
  KubeStatusError,
  type KubernetesStreamOptions,
  type KubeServiceList,
  type KubeServicesClient,
  type KubeStatus,
  type KubeWatchEvent,
} from '../../streams/kubernetes.js';
export { kubeconfigClients, type KubeClientOptions } from '../../streams/kubeconfigClients.js';
export type { FileWatchOptions } from '../../streams/kubeconfigFile.js';
export { forwardsOfService, type KubeService, type KubeServicePort, type ServiceForwards } from '../../streams/kubeServices.js';
