import type { AgentConfig } from './config.js';

/** The sources the CLI can enable. */
export type SourceKind = 'docker' | 'containerd' | 'iptables' | 'kubernetes' | 'procnet';
/** The sinks the CLI can route to. */
export type SinkKind = 'vtunnel' | 'hostswitch' | 'listeners' | 'table' | 'loopback';

/** What the machine offers, for auto-detection (no arguments at all). */
export interface Detected {
  readonly dockerSocket: boolean;
  readonly containerdSocket: boolean;
  readonly kubeconfig: boolean;
  readonly iptablesCommand: boolean;
  /** stdout is a terminal: then the live table is shown in every mode. */
  readonly tty: boolean;
}

/** Which sources the CLI starts and which sink each one feeds. */
export interface Wiring {
  readonly sources: readonly SourceKind[];
  readonly routes: readonly { readonly sink: SinkKind; readonly sources: readonly SourceKind[] }[];
  /** Things the user should know (what was auto-detected). */
  readonly notices: readonly string[];
}

/**
 * Decides which backends run and where their ports go (docs/flags.md, "Where ports go"):
 * - `-hostSwitchURL`: every source to the expose API;
 * - `-privilegedService`: engines, Kubernetes and host-network listeners (procnet) to the vtunnel,
 *   iptables to listeners;
 * - neither (listener mode): iptables and Kubernetes to placeholder listeners; engine ports and
 *   host-network listeners need nothing, because they already listen inside the VM.
 * With no arguments at all, every backend whose endpoint exists is enabled, and the table shows
 * the result; on a terminal the table is shown in every mode.
 */
export function decideRoutes(config: AgentConfig, detected: Detected): Wiring {
  const notices: string[] = [];
  const sources: SourceKind[] = config.autoDetect
    ? detectSources(detected, notices)
    : (['docker', 'containerd', 'iptables', 'kubernetes', 'procnet'] as const).filter((s) => config[s]);

  const pick = (...kinds: SourceKind[]): SourceKind[] => sources.filter((s) => kinds.includes(s));
  const routes: { sink: SinkKind; sources: SourceKind[] }[] = config.hostSwitchURL
    ? [{ sink: 'hostswitch', sources }]
    : config.privilegedService
      ? [
          { sink: 'vtunnel', sources: pick('docker', 'containerd', 'kubernetes', 'procnet') },
          { sink: 'listeners', sources: pick('iptables') },
        ]
      : [{ sink: 'listeners', sources: pick('iptables', 'kubernetes') }];
  // Loopback forwarders beside the sink that sends the host end to the VM's address, fed by the
  // same sources (docs/loopback.md). Listener mode needs none: WSL forwards 127.0.0.1 itself.
  const remote = routes.find((r) => r.sink === 'vtunnel' || r.sink === 'hostswitch');
  if (remote) routes.push({ sink: 'loopback', sources: remote.sources });
  if (config.autoDetect || detected.tty) routes.push({ sink: 'table', sources });

  if (config.autoDetect) notices.push(`auto-detected backends: ${sources.join(', ')}`);
  const unrouted = sources.filter((s) => s !== 'procnet' && !routes.some((r) => r.sources.includes(s)));
  if (sources.includes('procnet') && !routes.some((r) => r.sources.includes('procnet'))) {
    notices.push('procnet: nothing to forward in listener mode (WSL sees the listeners of the VM itself); not watched');
  }
  if (unrouted.length > 0) {
    notices.push(`${unrouted.join(', ')}: nothing to forward in listener mode (engine ports are already listened on in the VM by the engine's own proxy); not watched`);
  }
  return { sources, routes: routes.filter((r) => r.sources.length > 0), notices };
}

function detectSources(d: Detected, notices: string[]): SourceKind[] {
  const found: [SourceKind, boolean][] = [
    ['docker', d.dockerSocket],
    ['containerd', d.containerdSocket],
    ['iptables', d.iptablesCommand],
    ['kubernetes', d.kubeconfig],
  ];
  const present = found.filter(([, p]) => p).map(([s]) => s);
  if (present.length > 0) return present;
  // Nothing to watch yet: wait for Docker, the engine most likely to appear.
  notices.push('found no engine; waiting for the Docker socket');
  return ['docker'];
}
