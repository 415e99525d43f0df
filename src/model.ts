/**
 * The model every layer shares: a Forward is one port that should be reachable from the host,
 * a PortKey is its identity, a PortSet is what one source (or the whole agent) wants published,
 * and a PortDelta is what changed between two PortSets.
 */

/** A forward's transport. */
export type Protocol = 'tcp' | 'udp';

/** Where a forward came from. Open-ended so library users can add their own sources. */
export type SourceName = 'docker' | 'containerd' | 'iptables' | 'kubernetes' | (string & {});

/** One port that should be reachable from the host, and who asked for it. */
export interface Forward {
  readonly protocol: Protocol;
  /** The address to publish on: `0.0.0.0`, `127.0.0.1`, `::` or a specific address. */
  readonly hostIp: string;
  readonly hostPort: number;
  /** The port inside the container or Service, when the source knows it. */
  readonly containerPort?: number;
  readonly source: SourceName;
  /** Who asked for it: a container ID, Service UID or rule key. */
  readonly owner: string;
}

/** `proto/hostIp:hostPort`, IPv6 in brackets: `tcp/0.0.0.0:80`, `udp/[::]:53`. */
export type PortKey = string;
/** What one source, or the whole agent, wants published, by key. */
export type PortSet = ReadonlyMap<PortKey, Forward>;

/** What changed between two PortSets: forwards to add and to remove. */
export interface PortDelta {
  readonly added: readonly Forward[];
  readonly removed: readonly Forward[];
}

/** A PortSet with nothing in it. */
export const emptyPortSet: PortSet = new Map();
/** A PortDelta that changes nothing. */
export const emptyDelta: PortDelta = { added: [], removed: [] };

/** Whether `ip` is written as IPv6 (it has a colon). */
export function isIPv6(ip: string): boolean {
  return ip.includes(':');
}

/** The identity of a forward for diffing and reference counting (see PortKey). */
export function portKey(f: Pick<Forward, 'protocol' | 'hostIp' | 'hostPort'>): PortKey {
  const host = isIPv6(f.hostIp) ? `[${f.hostIp}]` : f.hostIp;
  return `${f.protocol}/${host}:${String(f.hostPort)}`;
}

/** The PortSet of these forwards; a later one with the same key wins. */
export function portSetOf(forwards: Iterable<Forward>): PortSet {
  const set = new Map<PortKey, Forward>();
  for (const f of forwards) set.set(portKey(f), f);
  return set;
}

/** Whether `d` changes nothing. */
export function isEmptyDelta(d: PortDelta): boolean {
  return d.added.length === 0 && d.removed.length === 0;
}

/** What changed from `before` to `after`: O(|before| + |after|). */
export function diff(before: PortSet, after: PortSet): PortDelta {
  const added: Forward[] = [];
  const removed: Forward[] = [];
  for (const [key, f] of after) if (!before.has(key)) added.push(f);
  for (const [key, f] of before) if (!after.has(key)) removed.push(f);
  return { added, removed };
}

/** `set` with `delta` applied; the inverse of `diff`. */
export function applyDelta(set: PortSet, delta: PortDelta): PortSet {
  const next = new Map(set);
  for (const f of delta.removed) next.delete(portKey(f));
  for (const f of delta.added) next.set(portKey(f), f);
  return next;
}

/** Whether `n` is a port number (an integer from 1 to 65535). */
export function isValidPort(n: number): boolean {
  return Number.isInteger(n) && n >= 1 && n <= 65535;
}

/** A forward for log lines: its key, source and short owner. */
export function describe(f: Forward): string {
  return `${portKey(f)} (${f.source} ${f.owner.slice(0, 12)})`;
}

/**
 * The raw events every stream emits, whatever its backend. A stream's whole truth after
 * (re)listing is a `snapshot`; after that it follows changes owner by owner. Because a stream
 * states owners' ports rather than port changes, a removal never needs the backend to still
 * know the owner (a dead container cannot be inspected).
 */
export type SourceEvent =
  | { readonly type: 'snapshot'; readonly owners: ReadonlyMap<string, readonly Forward[]> }
  | { readonly type: 'upsert'; readonly owner: string; readonly forwards: readonly Forward[] }
  | { readonly type: 'remove'; readonly owner: string };

/** A `snapshot` event: these owners' ports are the source's whole truth. */
export const snapshot = (owners: Iterable<readonly [string, readonly Forward[]]>): SourceEvent => ({
  type: 'snapshot',
  owners: new Map(owners),
});
/** An `upsert` event: `owner` now wants exactly these forwards. */
export const upsert = (owner: string, forwards: readonly Forward[]): SourceEvent => ({ type: 'upsert', owner, forwards });
/** A `remove` event: `owner` is gone, and so are its forwards. */
export const remove = (owner: string): SourceEvent => ({ type: 'remove', owner });
