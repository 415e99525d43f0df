import type { Forward, PortKey } from '../model.js';
import type { AgentStatus, ForwardStatus, SinkForwardState } from './state.js';

/**
 * The JSON shapes the status endpoint serves (docs/status.md): plain data, times as ISO 8601
 * strings, so `portstream status` and any other client read them without this library.
 */

/** A forward's state in one sink, as `/forwards` shows it. */
export interface SinkForwardView {
  readonly state: SinkForwardState['state'];
  readonly removing?: true;
  readonly since: string;
  readonly error?: string;
}

/** One entry of `/forwards`: the forward, its key, the sources that claim it and its state per sink. */
export type ForwardView = Forward & {
  readonly key: PortKey;
  readonly sources: readonly string[];
  readonly sinks: Readonly<Record<string, SinkForwardView>>;
};

/** The body of `/healthz`: healthy or not, and which sources and sinks are not, with why. */
export interface HealthView {
  readonly ok: boolean;
  /** One line per thing that is not right, saying why. */
  readonly problems: readonly string[];
  readonly sources: Readonly<Record<string, { readonly connected: boolean; readonly since?: string; readonly lastError?: string; readonly lastErrorAt?: string }>>;
  readonly sinks: Readonly<Record<string, { readonly inSync: boolean; readonly pending: number; readonly failed: number; readonly lastError?: string; readonly lastErrorAt?: string }>>;
}

const iso = (ms: number): string => new Date(ms).toISOString();

/** One entry per forward, ordered as the live table orders them. */
export function forwardsView(status: AgentStatus): ForwardView[] {
  return [...status.forwards.values()].sort(byPort).map(forwardView);
}

function byPort(a: ForwardStatus, b: ForwardStatus): number {
  const f = a.forward;
  const g = b.forward;
  // Plain comparisons: localeCompare is ICU's, and a sort of 10,000 forwards would spend most of its time there.
  return f.hostPort - g.hostPort || compare(f.hostIp, g.hostIp) || compare(f.protocol, g.protocol);
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function forwardView(entry: ForwardStatus): ForwardView {
  const sinks: Record<string, SinkForwardView> = {};
  for (const [name, s] of Object.entries(entry.sinks)) {
    sinks[name] = { state: s.state, ...(s.removing && { removing: true }), since: iso(s.since), ...(s.error !== undefined && { error: s.error }) };
  }
  return { ...entry.forward, key: entry.key, sources: entry.sources, sinks };
}

/** Healthy when every source is connected and every sink in sync; otherwise the reasons. */
export function healthView(status: AgentStatus): HealthView {
  const problems: string[] = [];
  const sources: Record<string, HealthView['sources'][string]> = {};
  for (const [name, s] of Object.entries(status.sources)) {
    sources[name] = {
      connected: s.connected,
      ...(s.since !== undefined && { since: iso(s.since) }),
      ...(s.lastError !== undefined && { lastError: s.lastError }),
      ...(s.lastErrorAt !== undefined && { lastErrorAt: iso(s.lastErrorAt) }),
    };
    if (s.connected) continue;
    if (s.lastError === undefined) problems.push(`source ${name}: not connected yet`);
    else problems.push(`source ${name}: not connected since ${iso(s.since ?? s.lastErrorAt ?? 0)}: ${s.lastError}`);
  }
  const sinks: Record<string, HealthView['sinks'][string]> = {};
  for (const [name, s] of Object.entries(status.sinks)) {
    let failed = 0;
    const errors = new Set<string>();
    for (const [key, state] of s.unsettled) {
      if (state !== 'failed') continue;
      failed += 1;
      const error = errors.size < 3 ? status.forwards.get(key)?.sinks[name]?.error : undefined;
      if (error !== undefined) errors.add(error);
    }
    const pending = s.unsettled.size - failed;
    sinks[name] = {
      inSync: s.inSync,
      pending,
      failed,
      ...(s.lastError !== undefined && { lastError: s.lastError }),
      ...(s.lastErrorAt !== undefined && { lastErrorAt: iso(s.lastErrorAt) }),
    };
    if (s.inSync) continue;
    const counts = [failed > 0 && `${String(failed)} failed`, pending > 0 && `${String(pending)} pending`].filter(Boolean).join(', ');
    const why = errors.size > 0 ? [...errors].join('; ') : s.failing ? (s.lastError ?? 'its last write failed') : 'not applied yet';
    problems.push(`sink ${name}: not in sync${counts === '' ? '' : ` (${counts})`}: ${why}`);
  }
  return { ok: problems.length === 0, problems, sources, sinks };
}
