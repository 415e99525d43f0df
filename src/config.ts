import { isIPv4 } from 'node:net';
import { parseFlags, parseGoBool, usage, type FlagValues } from './flags.js';
import { parseVtunnelAddr } from './wire/vtunnelAddress.js';
import { defaultProcnetExclude, parsePortList, type PortRange } from '../streams/procnetPolicy.js';
import { parseStatusAddr, type StatusAddress } from './status/address.js';

export { parseVtunnelAddr, type VtunnelTarget } from './wire/vtunnelAddress.js';

/**
 * The agent's flags (docs/flags.md): the names, kinds and defaults of the Go agent's, so that the
 * host side can start portstream with the command line it gives the Go guest agent.
 */
export const agentFlags = [
  { name: 'docker', kind: 'bool', default: false, usage: 'watch the Docker engine (DOCKER_HOST, else /var/run/docker.sock)' },
  { name: 'containerd', kind: 'bool', default: false, usage: 'watch containerd' },
  { name: 'containerdSock', kind: 'string', default: '/run/k3s/containerd/containerd.sock', usage: "containerd's gRPC socket `path`" },
  { name: 'iptables', kind: 'bool', default: true, usage: 'scan nat-table DNAT rules (CNI portmap chains)' },
  { name: 'kubernetes', kind: 'bool', default: false, usage: 'watch Kubernetes Services' },
  { name: 'kubeconfig', kind: 'string', default: '/etc/rancher/k3s/k3s.yaml', usage: 'kubeconfig `path`; waits for the file to appear' },
  {
    name: 'k8sServiceListenerAddr',
    kind: 'string',
    default: '0.0.0.0',
    usage: 'host IP for Kubernetes Service ports: 0.0.0.0 or 127.0.0.1 only',
  },
  { name: 'privilegedService', kind: 'bool', default: false, usage: 'send PortMappings over the vtunnel' },
  {
    name: 'vtunnelAddr',
    kind: 'string',
    default: '127.0.0.1:3040',
    usage: 'where the vtunnel peer listens: HOST:PORT ([::1]:PORT for IPv6), or vsock://CID:PORT (portstream extension: AF_VSOCK directly)',
  },
  { name: 'connectInterface', kind: 'string', default: 'eth0', usage: '`interface` whose addresses go in connectAddrs' },
  { name: 'hostSwitchURL', kind: 'string', default: '', usage: 'when set, use the host-switch expose API at this http(s) `URL` as the sink' },
  { name: 'tap-interface-ip', kind: 'string', default: '192.168.127.2', usage: 'the VM IPv4 address that host-switch forwards to' },
  { name: 'adminInstall', kind: 'bool', default: false, usage: 'without it, host-side addresses are forced to 127.0.0.1 (host-switch)' },
  { name: 'k8sAPIPort', kind: 'int', default: 6443, usage: 'Kubernetes API server port' },
  { name: 'debug', kind: 'bool', default: false, usage: 'debug logging' },
  {
    name: 'procnet',
    kind: 'bool',
    // The real default depends on the mode (see `parseConfig`), which a Go-style flag cannot say.
    default: false,
    usage: "forward listeners of the VM's own network namespace (host-network containers, servers started in the VM); on by default with -privilegedService or -hostSwitchURL, off in listener mode",
  },
  {
    name: 'procnetExclude',
    kind: 'string',
    default: defaultProcnetExclude,
    usage: 'ports and LOW-HIGH ranges, comma separated, that -procnet never forwards (the VM\'s own infrastructure; -k8sAPIPort is always among them)',
  },
  {
    name: 'statusAddr',
    kind: 'string',
    default: '',
    usage: 'serve /healthz, /forwards and /metrics on this unix socket `path`, 127.0.0.1:PORT or [::1]:PORT (off when unset)',
  },
] as const;

/** The name of one of the agent's flags. */
type AgentFlagName = (typeof agentFlags)[number]['name'];

/** Everything the agent is told on its command line, validated. */
export interface AgentConfig {
  readonly docker: boolean;
  readonly containerd: boolean;
  readonly containerdSock: string;
  readonly iptables: boolean;
  readonly kubernetes: boolean;
  readonly kubeconfig: string;
  readonly k8sServiceListenerAddr: '0.0.0.0' | '127.0.0.1';
  readonly privilegedService: boolean;
  /** `HOST:PORT` or `vsock://CID:PORT`; `parseVtunnelAddr` splits it. */
  readonly vtunnelAddr: string;
  readonly connectInterface: string;
  /** Unset (also when given as the empty string, as in the Go agent): no host-switch sink. */
  readonly hostSwitchURL: string | undefined;
  readonly tapInterfaceIp: string;
  readonly adminInstall: boolean;
  readonly k8sAPIPort: number;
  readonly debug: boolean;
  /** Whether the host-network source runs: as given, else on exactly when a vtunnel or host-switch sink is in use. */
  readonly procnet: boolean;
  readonly procnetExclude: readonly PortRange[];
  /** Where the status endpoint listens; unset: no endpoint (docs/status.md). */
  readonly statusAddr: StatusAddress | undefined;
  /** Flag names (as on the command line, e.g. `tap-interface-ip`) that were given explicitly. */
  readonly explicit: ReadonlySet<string>;
  /** True only for an empty command line: then the agent auto-detects its backends. */
  readonly autoDetect: boolean;
}

/** A parsed command line: the config, help asked for, or what was wrong with it. */
export type ConfigResult =
  | { readonly ok: true; readonly config: AgentConfig }
  | { readonly ok: false; readonly error: string; readonly help?: never }
  | { readonly ok: false; readonly help: true; readonly error?: never };

/** The agent's usage text, Go style: what follows a bad command line, as the Go agent prints it. */
export function agentUsage(program = 'portstream'): string {
  return usage(agentFlags, program);
}

/** `-h`: what portstream is and how it is run, the flags as `agentUsage` prints them, examples. */
export function agentHelp(program = 'portstream'): string {
  return `${program} forwards the ports that containers and Kubernetes Services publish inside a VM to the host.

Usage:
  ${program} [flags]         the guest agent (the flags below)
  ${program} host [flags]    the host side: receives the vtunnel and listens on the host (${program} host -h)
  ${program} status [flags]  asks a running agent what it forwards (${program} status -h)
  ${program} -version        prints the version

With no arguments at all, ${program} watches every backend it finds here (the Docker socket or
DOCKER_HOST, containerd's socket, iptables-save, the kubeconfig) and shows what they publish: a
live table on a terminal, JSON lines otherwise. Nothing is sent to a host until flags say where.

${usage(agentFlags, program)}
Environment:
  PORTSTREAM_LOG_LEVEL  trace, debug, info (default), warn, error or fatal; -debug means debug
  DOCKER_HOST           the Docker engine to watch (unix:// or tcp://), as the docker CLI reads it

Examples:
  ${program} -docker -privilegedService -vtunnelAddr 127.0.0.1:3040
      Docker's ports (and iptables DNAT rules) to a vtunnel peer, as Rancher Desktop on WSL runs it
  ${program} -containerd -kubernetes -hostSwitchURL http://192.168.127.1:80
      containerd's and Kubernetes' ports through the host-switch expose API (Lima-style VMs)
  ${program} host -vtunnelAddr 127.0.0.1:3040
      the host side of the first example
`;
}

/**
 * Parse and validate the agent's command line (without the program name, and without a leading
 * `host` subcommand, which the caller dispatches). Errors are one line naming the flag.
 */
export function parseConfig(argv: readonly string[]): ConfigResult {
  const parsed = parseFlags(agentFlags, argv);
  if (!parsed.ok) return parsed;
  if (parsed.positional.length > 0) return { ok: false, error: positionalError(argv, parsed.positional) };

  const v = parsed.values;
  const error = validate(v);
  if (error !== undefined) return { ok: false, error };
  const exclude = parsePortList(v.procnetExclude);
  if ('error' in exclude) return { ok: false, error: `invalid value ${JSON.stringify(v.procnetExclude)} for flag -procnetExclude: ${exclude.error}` };

  return {
    ok: true,
    config: {
      docker: v.docker,
      containerd: v.containerd,
      containerdSock: v.containerdSock,
      iptables: v.iptables,
      kubernetes: v.kubernetes,
      kubeconfig: v.kubeconfig,
      k8sServiceListenerAddr: v.k8sServiceListenerAddr === '127.0.0.1' ? '127.0.0.1' : '0.0.0.0',
      privilegedService: v.privilegedService,
      vtunnelAddr: v.vtunnelAddr,
      connectInterface: v.connectInterface,
      hostSwitchURL: v.hostSwitchURL === '' ? undefined : v.hostSwitchURL,
      tapInterfaceIp: v['tap-interface-ip'],
      adminInstall: v.adminInstall,
      k8sAPIPort: v.k8sAPIPort,
      debug: v.debug,
      procnet: parsed.explicit.has('procnet') ? v.procnet : v.privilegedService || v.hostSwitchURL !== '',
      procnetExclude: 'ranges' in exclude ? exclude.ranges : [],
      statusAddr: v.statusAddr === '' ? undefined : (parseStatusAddr(v.statusAddr) as StatusAddress),
      explicit: parsed.explicit,
      autoDetect: argv.length === 0,
    },
  };
}

/** The first invalid value, in table order, as one line naming the flag; undefined if all are valid. */
function validate(v: FlagValues<typeof agentFlags>): string | undefined {
  const invalid = (flag: AgentFlagName, value: string | number, why: string): string =>
    `invalid value ${JSON.stringify(String(value))} for flag -${flag}: ${why}`;

  if (v.k8sServiceListenerAddr !== '0.0.0.0' && v.k8sServiceListenerAddr !== '127.0.0.1') {
    return invalid('k8sServiceListenerAddr', v.k8sServiceListenerAddr, 'must be 0.0.0.0 or 127.0.0.1');
  }
  const target = parseVtunnelAddr(v.vtunnelAddr);
  if ('error' in target) return invalid('vtunnelAddr', v.vtunnelAddr, target.error);
  if (v.hostSwitchURL !== '' && !isHttpUrl(v.hostSwitchURL)) {
    return invalid('hostSwitchURL', v.hostSwitchURL, 'must be an http:// or https:// URL');
  }
  if (!isIPv4(v['tap-interface-ip'])) return invalid('tap-interface-ip', v['tap-interface-ip'], 'must be an IPv4 address');
  if (!Number.isInteger(v.k8sAPIPort) || v.k8sAPIPort < 1 || v.k8sAPIPort > 65535) {
    return invalid('k8sAPIPort', v.k8sAPIPort, 'must be a port number 1..65535');
  }
  const status = v.statusAddr === '' ? undefined : parseStatusAddr(v.statusAddr);
  if (status && 'error' in status) return invalid('statusAddr', v.statusAddr, status.error);
  return undefined;
}

function isHttpUrl(s: string): boolean {
  if (!URL.canParse(s)) return false;
  const u = new URL(s);
  return (u.protocol === 'http:' || u.protocol === 'https:') && u.hostname !== '';
}

/**
 * portstream takes only flags, so a leftover argument is an error. The common cause is Go's
 * bool rule (`-iptables false` leaves `false` behind), so name the flag to fix in that case.
 */
function positionalError(argv: readonly string[], positional: readonly string[]): string {
  const first = positional[0] ?? '';
  const before = argv[argv.length - positional.length - 1];
  const bool = /^--?([^=]+)$/.exec(before ?? '')?.[1];
  if (bool !== undefined && agentFlags.some((d) => d.name === bool && d.kind === 'bool') && parseGoBool(first) !== undefined) {
    return `unexpected argument ${JSON.stringify(first)}: a bool flag takes its value as -${bool}=${first}`;
  }
  if (first === 'host' || first === 'status') return `unexpected argument "${first}": the ${first} subcommand must come before any flag`;
  return `unexpected argument ${JSON.stringify(first)}: portstream takes only flags`;
}

