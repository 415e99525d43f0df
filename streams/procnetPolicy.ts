/**
 * Which listening sockets of the VM's own network namespace become forwards, and as what: pure,
 * so that the rules (exclusions, reachability, the agent's own sockets) are tested without
 * sockets. docs/procnet.md explains each rule.
 */
import { isIPv4 } from 'node:net';
import { portKey, type Forward, type PortKey } from '../src/model.js';
import { unmapIPv4, type ListeningSocket } from './procnetTable.js';

/** The source name of the host-network source's forwards. */
export const procnetSource = 'procnet';

/** A range of ports, both ends included. */
export interface PortRange {
  readonly from: number;
  readonly to: number;
}

/**
 * The ports the host-network source leaves alone unless told otherwise: the VM's own
 * infrastructure, which must not appear on the host (and on the host's LAN with -adminInstall).
 * The Kubernetes API port is not here: it is excluded as whatever -k8sAPIPort says (see
 * `procnetExclusions`), and reaches the host through the Kubernetes source when that forwards it.
 */
export const defaultProcnetExcludes: readonly { readonly ports: string; readonly why: string }[] = [
  { ports: '22', why: "the VM's ssh server: a way into the VM as root" },
  { ports: '53', why: 'DNS resolvers in the VM (dnsmasq, a local resolver): the host has its own' },
  { ports: '2375-2376', why: "dockerd's TCP API (plain and TLS): root on the VM to whoever reaches it" },
  { ports: '2379-2381', why: "etcd's client, peer and metrics ports (k3s with embedded etcd, kubeadm)" },
  { ports: '5001', why: "k3s's embedded registry mirror (spegel)" },
  { ports: '6444', why: "k3s's internal API server, which its supervisor on the API port fronts" },
  { ports: '8472', why: 'flannel VXLAN (udp): node-to-node pod traffic, never for the host' },
  { ports: '9345', why: "the rke2 supervisor (nodes join through it)" },
  { ports: '10010', why: "containerd's CRI streaming server as k3s configures it (exec, attach, port-forward of pods)" },
  {
    ports: '10248-10259',
    why: 'kubelet (10250, healthz 10248, read-only 10255), kube-proxy (metrics 10249, healthz 10256), controller-manager (10257), cloud-controller-manager (10258), scheduler (10259)',
  },
  { ports: '51820-51821', why: 'flannel WireGuard (udp, IPv4 and IPv6)' },
];

/** The default of `-procnetExclude`: every port of the VM's own infrastructure (docs/procnet.md says why each). */
export const defaultProcnetExclude = defaultProcnetExcludes.map((e) => e.ports).join(',');

/** A `-procnetExclude` value: ports and ranges, comma separated (`22,2379-2381`); empty excludes none. */
export function parsePortList(text: string): { readonly ranges: PortRange[] } | { readonly error: string } {
  const ranges: PortRange[] = [];
  for (const raw of text.split(',')) {
    const item = raw.trim();
    if (item === '') continue;
    const match = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(item);
    const from = Number(match?.[1]);
    const to = match?.[2] === undefined ? from : Number(match[2]);
    if (!match || from < 1 || to > 65535 || from > to) return { error: `${JSON.stringify(item)} is not a port (1..65535) or a range LOW-HIGH` };
    ranges.push({ from, to });
  }
  return { ranges };
}

/** Whether `port` is in any of `ranges`. */
export function inRanges(ranges: readonly PortRange[], port: number): boolean {
  return ranges.some((r) => port >= r.from && port <= r.to);
}

/** The exclusion list in force: `-procnetExclude` plus the Kubernetes API port. */
export function procnetExclusions(exclude: readonly PortRange[], k8sAPIPort: number): PortRange[] {
  return inRanges(exclude, k8sAPIPort) ? [...exclude] : [...exclude, { from: k8sAPIPort, to: k8sAPIPort }];
}

/** Which listeners the host-network source publishes: the excluded ports, and the addresses the host end can reach. */
export interface ForwardPolicy {
  readonly exclude: readonly PortRange[];
  /**
   * Whether the host end can reach a listener on this specific address: for the vtunnel, an
   * address of -connectInterface (the host connects to those); for host-switch, -tap-interface-ip.
   * Not asked for wildcard and loopback addresses, which have rules of their own.
   */
  readonly reachable: (ip: string) => boolean;
}

/** Why a socket is not forwarded; for a debug line, said once per address. */
export type Skip = 'excluded' | 'own' | 'loopback other than 127.0.0.1 and ::1' | 'link-local' | 'multicast' | 'not an address the host end reaches';

/**
 * The host addresses one socket stands for, or why none. A dual-stack `::` socket also takes
 * IPv4 connections, so it stands for `0.0.0.0` too; a v6-only one (docker-proxy's) does not.
 */
export function hostIpsOf(socket: ListeningSocket, policy: ForwardPolicy): readonly string[] | Skip {
  if (inRanges(policy.exclude, socket.port)) return 'excluded';
  const ip = unmapIPv4(socket.ip);
  if (ip === '0.0.0.0') return wildcardV4;
  if (ip === '::') return socket.v6only === true ? wildcardV6 : dualStack;
  if (ip === '127.0.0.1' || ip === '::1') return [ip];
  if (isIPv4(ip)) {
    const [a, b] = ip.split('.').map(Number) as [number, number];
    if (a === 127) return 'loopback other than 127.0.0.1 and ::1';
    if (a === 169 && b === 254) return 'link-local';
    if (a >= 224 && a <= 239) return 'multicast';
  } else {
    const first = Number.parseInt(ip.split(':')[0] ?? '', 16);
    if ((first & 0xffc0) === 0xfe80) return 'link-local';
    if ((first & 0xff00) === 0xff00) return 'multicast';
  }
  return policy.reachable(ip) ? [ip] : 'not an address the host end reaches';
}

const wildcardV4 = ['0.0.0.0'] as const;
const wildcardV6 = ['::'] as const;
const dualStack = ['0.0.0.0', '::'] as const;

/** What a listening socket becomes: the forwards to publish, or why it is left out. */
export interface Publishable {
  /** What the namespace's listeners ask to publish, one forward per key, owned by its key. */
  readonly forwards: Map<PortKey, Forward>;
  /** Sockets passed over, by `proto/ip:port`, with why. */
  readonly skipped: Map<string, Skip>;
}

/**
 * The forwards of a scan's sockets. Several sockets may stand for one key (SO_REUSEPORT
 * workers, a dual-stack socket beside a v4 one): the key is one forward, owned by the key itself,
 * so it stays while any of them does.
 */
export function publishable(sockets: readonly ListeningSocket[], own: ReadonlySet<number>, policy: ForwardPolicy): Publishable {
  const forwards = new Map<PortKey, Forward>();
  const skipped = new Map<string, Skip>();
  for (const socket of sockets) {
    const ips = own.has(socket.inode) ? 'own' : hostIpsOf(socket, policy);
    if (typeof ips === 'string') {
      skipped.set(`${socket.protocol}/${socket.ip}:${String(socket.port)}`, ips);
      continue;
    }
    for (const hostIp of ips) {
      const key = portKey({ protocol: socket.protocol, hostIp, hostPort: socket.port });
      if (!forwards.has(key)) forwards.set(key, { protocol: socket.protocol, hostIp, hostPort: socket.port, source: procnetSource, owner: key });
    }
  }
  return { forwards, skipped };
}
