import type { AgentConfig } from './config.js';

export type SourceKind = 'docker' | 'containerd' | 'iptables' | 'kubernetes';
export type SinkKind = 'vtunnel' | 'hostswitch' | 'listeners' | 'table';

/** What exists in this build. A backend or sink outside these sets is refused, never ignored. */
export const availableSources: ReadonlySet<SourceKind> = new Set(['docker', 'containerd', 'iptables', 'kubernetes']);
export const availableSinks: ReadonlySet<SinkKind> = new Set(['vtunnel', 'table', 'listeners']);

/** What the machine offers, for auto-detection (no arguments at all). */
export interface Detected {
  readonly dockerSocket: boolean;
  readonly containerdSocket: boolean;
  readonly kubeconfig: boolean;
  readonly iptablesCommand: boolean;
  /** stdout is a terminal: then the live table is shown in every mode. */
  readonly tty: boolean;
}

export interface Wiring {
  readonly sources: readonly SourceKind[];
  readonly routes: readonly { readonly sink: SinkKind; readonly sources: readonly SourceKind[] }[];
  /** Things the user should know (a defaulted backend that is not there yet, what was detected). */
  readonly notices: readonly string[];
}

export type WiringResult = { readonly ok: true; readonly wiring: Wiring } | { readonly ok: false; readonly error: string };

const issueOf: Record<SourceKind | SinkKind, string> = {
  docker: '',
  containerd: 'the containerd backend',
  iptables: 'the iptables backend',
  kubernetes: 'the Kubernetes backend',
  vtunnel: '',
  hostswitch: 'the host-switch sink (-hostSwitchURL)',
  listeners: 'the placeholder listener sink',
  table: '',
};

/**
 * Decides which backends run and where their ports go, as contracts.md says:
 * - `-hostSwitchURL`: every source to the expose API;
 * - `-privilegedService`: engines and Kubernetes to the vtunnel, iptables to listeners;
 * - neither (listener mode): iptables and Kubernetes to placeholder listeners; engine ports need
 *   nothing, because their proxies already listen inside the VM.
 * With no arguments at all, every backend whose endpoint exists is enabled, and the table shows
 * the result. A backend or sink that this build lacks is an error when asked for; the one
 * enabled only by default (`-iptables`) is dropped with a notice.
 */
export function wire(config: AgentConfig, detected: Detected): WiringResult {
  const notices: string[] = [];
  const wanted: SourceKind[] = config.autoDetect
    ? detectSources(detected, notices)
    : (['docker', 'containerd', 'iptables', 'kubernetes'] as const).filter((s) => config[s]);

  const sources: SourceKind[] = [];
  for (const source of wanted) {
    if (availableSources.has(source)) sources.push(source);
    else if (config.explicit.has(source)) return { ok: false, error: `-${source}: ${issueOf[source]} is not implemented yet` };
    else notices.push(`${issueOf[source]} is not implemented yet; running without it`);
  }

  const pick = (...kinds: SourceKind[]): SourceKind[] => sources.filter((s) => kinds.includes(s));
  const routes: { sink: SinkKind; sources: SourceKind[] }[] = config.hostSwitchURL
    ? [{ sink: 'hostswitch', sources }]
    : config.privilegedService
      ? [
          { sink: 'vtunnel', sources: pick('docker', 'containerd', 'kubernetes') },
          { sink: 'listeners', sources: pick('iptables') },
        ]
      : [{ sink: 'listeners', sources: pick('iptables', 'kubernetes') }];
  if (config.autoDetect || detected.tty) routes.push({ sink: 'table', sources });

  if (config.hostSwitchURL && !availableSinks.has('hostswitch')) {
    return { ok: false, error: `-hostSwitchURL: ${issueOf.hostswitch} is not implemented yet` };
  }
  for (const route of routes) {
    if (route.sources.length > 0 && !availableSinks.has(route.sink)) {
      return { ok: false, error: `${issueOf[route.sink]} is not implemented yet` };
    }
  }
  if (config.autoDetect) notices.push(`auto-detected backends: ${sources.join(', ')}`);
  return { ok: true, wiring: { sources, routes: routes.filter((r) => r.sources.length > 0), notices } };
}

function detectSources(d: Detected, notices: string[]): SourceKind[] {
  const found: [SourceKind, boolean][] = [
    ['docker', d.dockerSocket],
    ['containerd', d.containerdSocket],
    ['iptables', d.iptablesCommand],
    ['kubernetes', d.kubeconfig],
  ];
  const present = found.filter(([, p]) => p).map(([s]) => s);
  if (present.some((s) => availableSources.has(s))) return present;
  // Nothing to watch yet: wait for Docker, the engine most likely to appear.
  notices.push('found no engine; waiting for the Docker socket');
  return ['docker', ...present];
}
