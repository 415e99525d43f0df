import { isValidPort, type Forward, type Protocol } from '../src/model.js';

/**
 * The slice of a Kubernetes `v1.Service` that portstream reads, as the API server sends it (list
 * items and watch objects alike). Everything is optional: this is input from outside.
 */
export interface KubeService {
  readonly kind?: string;
  readonly metadata?: {
    readonly name?: string;
    readonly namespace?: string;
    readonly uid?: string;
    readonly resourceVersion?: string;
  } | null;
  readonly spec?: {
    /** `ClusterIP` (the default when absent), `NodePort`, `LoadBalancer` or `ExternalName`. */
    readonly type?: string;
    readonly ports?: readonly KubeServicePort[] | null | undefined;
  } | null;
}

/** One entry of a Service's `spec.ports`. */
export interface KubeServicePort {
  readonly name?: string;
  /** `TCP` (the default when absent), `UDP` or `SCTP`. */
  readonly protocol?: string;
  readonly port?: number;
  readonly nodePort?: number;
}

/** The forwards of one Service, its owner, and what could not be used. */
export interface ServiceForwards {
  /** The Service's UID, the owner of its forwards; undefined when the object has none. */
  readonly owner: string | undefined;
  readonly forwards: Forward[];
  /** One message per thing that could not be used; the caller logs them as one line. */
  readonly problems: string[];
}

/** The owner of the API server's own forward (`-k8sAPIPort`), beside the Services' UIDs. */
export const apiServerOwner = 'kubernetes/apiserver';

const protocols: Readonly<Record<string, Protocol>> = { TCP: 'tcp', UDP: 'udp' };

/** `namespace/name`, as people and kubectl name a Service. */
export function serviceName(svc: KubeService): string {
  const meta = (svc as KubeService | null)?.metadata;
  return `${meta?.namespace ?? '?'}/${meta?.name ?? '?'}`;
}

/**
 * The ports a Service asks to have published (docs/backends.md): type NodePort publishes each
 * port's `nodePort`, type LoadBalancer each port's `port`, anything else (ClusterIP, headless,
 * ExternalName) nothing. TCP and UDP on one number are two forwards. Every forward is owned by the
 * Service's UID and published on `hostIp` (`-k8sServiceListenerAddr`).
 *
 * `containerPort` is left out on purpose: for Kubernetes the vtunnel key is the node or service
 * port itself, which is the host port.
 *
 * Bad input (a NodePort or LoadBalancer Service without ports, a nodePort of 0, a port out of
 * range, a protocol other than TCP or UDP) becomes a problem; the Service's other ports still count.
 */
export function forwardsOfService(svc: KubeService, hostIp: string): ServiceForwards {
  const forwards: Forward[] = [];
  const problems: string[] = [];
  // declared a Service, but it is the API server's JSON: anything may arrive
  if ((svc as unknown) === null || typeof svc !== 'object') return { owner: undefined, forwards, problems: ['is not an object'] };
  const uid = svc.metadata?.uid;
  const owner = typeof uid === 'string' && uid !== '' ? uid : undefined;
  const type = svc.spec?.type ?? 'ClusterIP';
  if (type !== 'NodePort' && type !== 'LoadBalancer') return { owner, forwards, problems };
  if (owner === undefined) return { owner, forwards, problems: ['has no metadata.uid'] };

  const ports = svc.spec?.ports;
  if (!Array.isArray(ports) || ports.length === 0) return { owner, forwards, problems: [`is of type ${type} but has no ports`] };

  const field = type === 'NodePort' ? 'nodePort' : 'port';
  (ports as readonly (KubeServicePort | null | undefined)[]).forEach((p, i) => {
    const label = `port ${typeof p?.name === 'string' && p.name !== '' ? JSON.stringify(p.name) : `#${String(i)}`}`;
    if (p === null || typeof p !== 'object') {
      problems.push(`${label} is not an object`);
      return;
    }
    const protocolName = p.protocol ?? 'TCP';
    const protocol = typeof protocolName === 'string' ? protocols[protocolName.toUpperCase()] : undefined;
    if (protocol === undefined) {
      problems.push(`${label} has protocol ${JSON.stringify(protocolName)}, which cannot be forwarded (only TCP and UDP)`);
      return;
    }
    const hostPort = p[field];
    if (typeof hostPort !== 'number' || !isValidPort(hostPort)) {
      problems.push(`${label} has ${field} ${JSON.stringify(hostPort ?? null)}, not a port in 1..65535`);
      return;
    }
    forwards.push({ protocol, hostIp, hostPort, source: 'kubernetes', owner });
  });
  return { owner, forwards, problems };
}

/** The forward that makes the API server (`-k8sAPIPort`, TCP) reachable from the host, for kubectl. */
export function apiServerForward(hostIp: string, port: number): Forward {
  return { protocol: 'tcp', hostIp, hostPort: port, source: 'kubernetes', owner: apiServerOwner };
}
