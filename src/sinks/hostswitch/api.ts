import type { Forward, Protocol } from '../../model.js';

/**
 * The host-switch expose API (gvisor-tap-vsock's forwarder; docs/host-switch.md) as pure functions:
 * which forwarder entry a Forward becomes, the exact request bodies, and what a reply means.
 *
 *   POST {url}/services/forwarder/expose    {"local":"127.0.0.1:8080","remote":"192.168.127.2:8080","protocol":"tcp"}
 *   POST {url}/services/forwarder/unexpose  {"local":"127.0.0.1:8080","protocol":"tcp"}
 *   GET  {url}/services/forwarder/all       [{"local","remote","protocol"}]
 */

/** The host-switch forwarder API's paths (docs/host-switch.md). */
export const forwarderPaths = {
  all: '/services/forwarder/all',
  expose: '/services/forwarder/expose',
  unexpose: '/services/forwarder/unexpose',
} as const;

/** One forward as the forwarder knows it. Its identity is `protocol` + `local`. */
export interface ForwarderEntry {
  readonly local: string;
  readonly remote: string;
  readonly protocol: Protocol;
}

/** How a forward becomes a forwarder entry: the VM address and where the host publishes. */
export interface HostSwitchAddressing {
  /** `-tap-interface-ip`: the VM address the host forwards to. */
  readonly tapInterfaceIp: string;
  /** `-adminInstall`: publish on the forward's own host IP rather than on 127.0.0.1. */
  readonly adminInstall: boolean;
}

/**
 * The entry for a forward: `local` is `127.0.0.1:PORT` unless `adminInstall` (then
 * `hostIp:PORT`), `remote` is `tapInterfaceIp:PORT`. Undefined for an IPv6 forward: the API is
 * IPv4 only.
 */
export function entryFor(f: Forward, a: HostSwitchAddressing): ForwarderEntry | undefined {
  if (f.hostIp.includes(':')) return undefined;
  const port = String(f.hostPort);
  return { local: `${a.adminInstall ? f.hostIp : '127.0.0.1'}:${port}`, remote: `${a.tapInterfaceIp}:${port}`, protocol: f.protocol };
}

/** `tcp/127.0.0.1:8080`: what the forwarder keys a proxy by. */
export function entryKey(e: Pick<ForwarderEntry, 'protocol' | 'local'>): string {
  return `${e.protocol}/${e.local}`;
}

/**
 * `tcp/8080`: requests in one lane run one at a time, so an add and a remove of one host port
 * never race (with `adminInstall`, `0.0.0.0:8080` and `127.0.0.1:8080` share a lane: one's
 * removal must free the port before the other binds it).
 */
export function laneOf(e: Pick<ForwarderEntry, 'protocol' | 'local'>): string {
  return `${e.protocol}/${e.local.slice(e.local.lastIndexOf(':') + 1)}`;
}

/** The expose body, keys in the contract's order. */
export function exposeBody(e: ForwarderEntry): string {
  return JSON.stringify({ local: e.local, remote: e.remote, protocol: e.protocol });
}

/** The unexpose body: always with `protocol` (an empty one means tcp, so UDP would never go). */
export function unexposeBody(e: Pick<ForwarderEntry, 'local' | 'protocol'>): string {
  return JSON.stringify({ local: e.local, protocol: e.protocol });
}

/**
 * What a reply means.
 * - `done`: 200.
 * - `adopted`: expose answered 500 `proxy already running ...`: the forward is there already.
 * - `gone`: unexpose answered 500 `proxy not found`: it is not there, which is what we wanted.
 * - `refused`: 400, or another 500 (`bindError` when the host port is taken or cannot be bound).
 *   Retried later for this entry only.
 * - `unexpected`: any other status: not the forwarder, or it is in trouble; re-read its state.
 */
export type Reply =
  | { readonly kind: 'done' }
  | { readonly kind: 'adopted' }
  | { readonly kind: 'gone' }
  | { readonly kind: 'refused'; readonly status: number; readonly message: string; readonly bindError: boolean }
  | { readonly kind: 'unexpected'; readonly status: number; readonly message: string };

/** What an answer to an expose or unexpose means for the forward it was about. */
export function classifyReply(op: 'expose' | 'unexpose', status: number, body: string): Reply {
  const message = body.trim();
  if (status === 200) return { kind: 'done' };
  if (status === 500 && op === 'expose' && message.startsWith('proxy already running')) return { kind: 'adopted' };
  if (status === 500 && op === 'unexpose' && message === 'proxy not found') return { kind: 'gone' };
  if (status === 400 || status === 500) {
    return { kind: 'refused', status, message: message || `HTTP ${String(status)}`, bindError: status === 500 && /\b(bind|listen)\b/.test(message) };
  }
  return { kind: 'unexpected', status, message: `HTTP ${String(status)}${message ? `: ${message.slice(0, 200)}` : ''}` };
}

/**
 * The body of `GET /services/forwarder/all`: its TCP and UDP entries (unix and npipe forwards
 * are the host's business and are left out). An error value for anything that is not the
 * forwarder's list.
 */
export function parseForwarderList(body: string): readonly ForwarderEntry[] | { readonly error: string } {
  let value: unknown;
  try {
    value = JSON.parse(body);
  } catch {
    return { error: `the forwarder list is not JSON: ${JSON.stringify(body.slice(0, 80))}` };
  }
  if (!Array.isArray(value)) return { error: 'the forwarder list is not a JSON array' };
  const entries: ForwarderEntry[] = [];
  for (const item of value as unknown[]) {
    if (typeof item !== 'object' || item === null) return { error: 'the forwarder list holds a non-object' };
    const { local, remote, protocol } = item as Record<string, unknown>;
    if (typeof local !== 'string' || typeof remote !== 'string' || typeof protocol !== 'string') {
      return { error: `the forwarder list holds an entry without string local, remote and protocol: ${JSON.stringify(item).slice(0, 120)}` };
    }
    // The forwarder stores an empty protocol as tcp; accept either spelling.
    const p = protocol === '' ? 'tcp' : protocol;
    if (p === 'tcp' || p === 'udp') entries.push({ local, remote, protocol: p });
  }
  return entries;
}
