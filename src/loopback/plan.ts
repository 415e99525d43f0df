import { isIPv4 } from 'node:net';
import { portKey, type Forward, type PortDelta, type PortKey, type PortSet, type Protocol } from '../model.js';

/**
 * The pure half of the loopback forwarders (docs/loopback.md): which forwarders should run, given
 * the forwards the vtunnel or host-switch sink publishes and the VM addresses the host end
 * connects to, and what to do to get there from what runs now.
 *
 * A forward published on 127.0.0.1 (or ::1) is announced to the host, which listens there and
 * connects to the VM's connect address on the same port, where nothing accepts: the engine's
 * proxy or DNAT rule matches 127.0.0.1 only. A forwarder listens on exactly that connect address
 * and port, takes connections only from the subnet the host end is on, and dials the forward's own
 * loopback address, so the connection reaches the container the way a local one does.
 */

/** An address of the VM that the host end connects to, with the prefix of its subnet. */
export interface ListenAddr {
  readonly ip: string;
  /** `ip/prefix`: connections are taken only from peers inside it. */
  readonly cidr: string;
}

/** One forwarder: listen on `listenIp:port` (`protocol`), dial `dialIp:port`. */
export interface ForwarderSpec {
  /** `proto/listenIp:port`, as a port key. */
  readonly key: string;
  readonly protocol: Protocol;
  readonly listenIp: string;
  readonly port: number;
  readonly dialIp: string;
  /** The subnets peers must come from. */
  readonly allow: readonly string[];
  /** The forward this serves. */
  readonly forward: Forward;
}

/** Whether `ip` is a loopback address: 127.0.0.0/8 or ::1. */
export function isLoopback(ip: string): boolean {
  if (isIPv4(ip)) return ip.startsWith('127.');
  return ip === '::1' || /^(0{1,4}:){7}0{0,3}1$/i.test(ip);
}

const wildcards: Readonly<Record<4 | 6, string>> = { 4: '0.0.0.0', 6: '::' };

function familyOf(ip: string): 4 | 6 {
  return isIPv4(ip) ? 4 : 6;
}

/** Link-local IPv6 (fe80::/10): the host end cannot dial it without a scope, so it is never a connect address. */
function usable(addr: ListenAddr): boolean {
  return !/^fe[89ab][0-9a-f]:/i.test(addr.ip);
}

/** The forwarders the desired forwards call for, and the ports skipped with why. */
export interface Planned {
  readonly forwarders: ReadonlyMap<string, ForwarderSpec>;
  /** Loopback forwards that get no forwarder, with why (one log line each). */
  readonly skipped: ReadonlyMap<PortKey, string>;
}

/**
 * The forwarders `desired` needs. A loopback forward gets one per connect address of its family
 * (`addrs`), unless:
 * - its family is IPv6 and the sink carries no IPv6 (`ipv6` false: host-switch);
 * - the VM has no connect address of its family (a missing interface, a `-tap-interface-ip` the VM
 *   does not have): nothing is created;
 * - the same protocol and port is also published on the family's wildcard: the engine already
 *   accepts on the connect address. (A forward on the connect address itself is not looked at: a
 *   source that saw the forwarder's own socket would otherwise switch it off and on forever. If
 *   something else holds that address and port, the listen fails and is said once.)
 * - another loopback address took that connect address and port first (`127.0.0.1` before
 *   `127.0.0.2`: port keys in order).
 */
export function plan(desired: PortSet, addrs: readonly ListenAddr[], ipv6: boolean): Planned {
  const forwarders = new Map<string, ForwarderSpec>();
  const skipped = new Map<PortKey, string>();
  const published = new Set(desired.keys());
  const loopbacks = [...desired.entries()].filter(([, f]) => isLoopback(f.hostIp)).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  for (const [key, f] of loopbacks) {
    const family = familyOf(f.hostIp);
    if (family === 6 && !ipv6) {
      skipped.set(key, `${key}: this sink carries no IPv6, so the host end has no way to it; not forwarded`);
      continue;
    }
    const listen = addrs.filter((a) => familyOf(a.ip) === family && usable(a));
    if (listen.length === 0) {
      skipped.set(key, `${key}: the VM has no IPv${String(family)} address where the host end connects, so nothing is made for it (check -connectInterface or -tap-interface-ip)`);
      continue;
    }
    const wildcard = portKey({ protocol: f.protocol, hostIp: wildcards[family], hostPort: f.hostPort });
    if (published.has(wildcard)) {
      skipped.set(key, `${key}: also published on ${wildcards[family]}, which the host end already reaches; no forwarder needed`);
      continue;
    }
    const allow = listen.map((a) => a.cidr);
    for (const addr of listen) {
      const spec: ForwarderSpec = { key: portKey({ protocol: f.protocol, hostIp: addr.ip, hostPort: f.hostPort }), protocol: f.protocol, listenIp: addr.ip, port: f.hostPort, dialIp: f.hostIp, allow, forward: f };
      if (forwarders.has(spec.key)) {
        skipped.set(key, `${key}: ${spec.key} already forwards to ${forwarders.get(spec.key)?.dialIp ?? '?'}; only one loopback address per port can be reached from the host`);
      } else {
        forwarders.set(spec.key, spec);
      }
    }
  }
  return { forwarders, skipped };
}

/** What the loopback reconciler knows: the desired set, the addresses, what runs and what is skipped. */
export interface LoopbackState {
  readonly desired: PortSet;
  readonly addrs: readonly ListenAddr[];
  readonly running: ReadonlyMap<string, ForwarderSpec>;
  readonly skipped: ReadonlyMap<PortKey, string>;
}

/** What the reconciler is fed: a delta of the merged forwards, or the VM's addresses read again. */
export type LoopbackInput = { readonly type: 'delta'; readonly delta: PortDelta } | { readonly type: 'addrs'; readonly addrs: readonly ListenAddr[] };

/** What the reconciler asks the sink to do. */
export type LoopbackCommand =
  | { readonly type: 'open'; readonly spec: ForwarderSpec }
  | { readonly type: 'close'; readonly spec: ForwarderSpec }
  | { readonly type: 'skip'; readonly key: PortKey; readonly why: string };

/** The state before any input: nothing desired or running. */
export const initialLoopbackState = (addrs: readonly ListenAddr[] = []): LoopbackState => ({ desired: new Map(), addrs, running: new Map(), skipped: new Map() });

/**
 * One step: fold `input` into the state and say which forwarders to close and open (closes
 * first, so a forwarder that moves to another dial address frees its socket before the new one
 * binds) and which forwards are newly skipped. A skip is said once, until its reason changes.
 */
export function reconcile(state: LoopbackState, input: LoopbackInput, ipv6: boolean): { state: LoopbackState; commands: LoopbackCommand[] } {
  const desired = input.type === 'delta' ? applyDelta(state.desired, input.delta) : state.desired;
  const addrs = input.type === 'addrs' ? input.addrs : state.addrs;
  const next = plan(desired, addrs, ipv6);
  const commands: LoopbackCommand[] = [];
  for (const [key, spec] of state.running) {
    const wanted = next.forwarders.get(key);
    if (!wanted || !sameSpec(spec, wanted)) commands.push({ type: 'close', spec });
  }
  for (const [key, spec] of next.forwarders) {
    const running = state.running.get(key);
    if (!running || !sameSpec(running, spec)) commands.push({ type: 'open', spec });
  }
  for (const [key, why] of next.skipped) {
    if (state.skipped.get(key) !== why) commands.push({ type: 'skip', key, why });
  }
  return { state: { desired, addrs, running: next.forwarders, skipped: next.skipped }, commands };
}

function applyDelta(set: PortSet, delta: PortDelta): PortSet {
  const next = new Map(set);
  for (const f of delta.removed) next.delete(portKey(f));
  for (const f of delta.added) next.set(portKey(f), f);
  return next;
}

function sameSpec(a: ForwarderSpec, b: ForwarderSpec): boolean {
  return a.dialIp === b.dialIp && a.allow.length === b.allow.length && a.allow.every((c, i) => c === b.allow[i]);
}

/** Whether `ip` lies in `cidr` (same family; an IPv4-mapped IPv6 peer counts as its IPv4 address). */
export function inSubnet(ip: string, cidr: string): boolean {
  const [base = '', prefixText = ''] = cidr.split('/');
  const peer = ip.startsWith('::ffff:') && isIPv4(ip.slice(7)) ? ip.slice(7) : ip;
  const a = addressBits(peer);
  const b = addressBits(base);
  const prefix = Number(prefixText);
  if (a === undefined || b === undefined || a.length !== b.length || !Number.isInteger(prefix) || prefix < 0 || prefix > a.length) return false;
  return a.slice(0, prefix) === b.slice(0, prefix);
}

/** The address as a string of bits (32 or 128), or undefined when it is not an address. */
function addressBits(ip: string): string | undefined {
  if (isIPv4(ip)) return ip.split('.').map((o) => Number(o).toString(2).padStart(8, '0')).join('');
  if (!ip.includes(':') || ip.includes('%')) return undefined;
  const [head = '', tail] = ip.split('::');
  const left = head === '' ? [] : head.split(':');
  const right = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups = tail === undefined ? left : [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right];
  if (groups.length !== 8 || groups.some((g) => !/^[0-9a-f]{1,4}$/i.test(g))) return undefined;
  return groups.map((g) => Number.parseInt(g, 16).toString(2).padStart(16, '0')).join('');
}
