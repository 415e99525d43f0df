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

/** Whether `ip` is written as IPv6 (it has a colon). */
export function isIPv6(ip: string): boolean {
  return ip.includes(':');
}

/**
 * The identity of a forward: protocol, host IP and host port, with the IP in one canonical form
 * (see `canonicalHostIp`), so that two sources that spell one binding differently (`::0` from
 * nerdctl, `::` from Docker) claim one key and are merged.
 */
export function portKey(f: Pick<Forward, 'protocol' | 'hostIp' | 'hostPort'>): PortKey {
  const ip = canonicalHostIp(f.hostIp);
  const host = isIPv6(ip) ? `[${ip}]` : ip;
  return `${f.protocol}/${host}:${String(f.hostPort)}`;
}

// Sources name few distinct addresses, and portKey runs for every forward of every event: an
// IPv6 address is parsed once, then found here. Cleared when full, so it cannot grow unbounded.
const canonicalCache = new Map<string, string>();
const canonicalCacheSize = 4096;

/**
 * One spelling per address, for keys:
 * - IPv4 stays as written (every backend writes dotted quads).
 * - IPv6 takes RFC 5952's form: lower case, no leading zeros, the longest run of two or more
 *   zero groups (the first of equals) as `::`. So `::0`, `0:0::0` and `0::` are all `::`, and
 *   `FE80::0001` is `fe80::1`. A zone (`%eth0`) is kept as written.
 * - An IPv4-mapped IPv6 address (`::ffff:127.0.0.1`, `::ffff:7f00:1`) is keyed as its IPv4 form,
 *   `127.0.0.1`: a socket bound to it takes exactly the IPv4 connections that one bound to the
 *   IPv4 address takes, so the two are one binding on the host and must not be published twice.
 * Anything that does not parse as an address is kept as written (the sinks report it).
 */
export function canonicalHostIp(ip: string): string {
  if (!ip.includes(':')) return ip;
  if (ip === '::') return ip;
  let canonical = canonicalCache.get(ip);
  if (canonical === undefined) {
    canonical = canonicalIPv6(ip);
    if (canonicalCache.size >= canonicalCacheSize) canonicalCache.clear();
    canonicalCache.set(ip, canonical);
  }
  return canonical;
}

function canonicalIPv6(ip: string): string {
  const zoneAt = ip.indexOf('%');
  const zone = zoneAt < 0 ? '' : ip.slice(zoneAt);
  const groups = ipv6Groups(zoneAt < 0 ? ip : ip.slice(0, zoneAt));
  if (groups === undefined) return ip;
  if (zone === '' && groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) {
    const [hi = 0, lo = 0] = groups.slice(6);
    return `${String(hi >> 8)}.${String(hi & 0xff)}.${String(lo >> 8)}.${String(lo & 0xff)}`;
  }
  return formatIPv6(groups) + zone;
}

/** The eight 16-bit groups of an IPv6 address (a dotted IPv4 tail allowed), or undefined. */
function ipv6Groups(text: string): number[] | undefined {
  const halves = text.split('::');
  if (halves.length > 2) return undefined;
  const parse = (half: string): number[] | undefined => {
    if (half === '') return [];
    const out: number[] = [];
    const parts = half.split(':');
    for (const [i, part] of parts.entries()) {
      if (i === parts.length - 1 && part.includes('.')) {
        const quad = ipv4Groups(part);
        if (quad === undefined) return undefined;
        out.push(...quad);
      } else if (/^[0-9a-f]{1,4}$/i.test(part)) {
        out.push(parseInt(part, 16));
      } else {
        return undefined;
      }
    }
    return out;
  };
  const head = parse(halves[0] ?? '');
  const tail = halves.length === 2 ? parse(halves[1] ?? '') : [];
  if (head === undefined || tail === undefined) return undefined;
  if (halves.length === 1) return head.length === 8 ? head : undefined;
  const missing = 8 - head.length - tail.length;
  return missing >= 1 ? [...head, ...new Array<number>(missing).fill(0), ...tail] : undefined;
}

function ipv4Groups(text: string): [number, number] | undefined {
  const octets = text.split('.');
  if (octets.length !== 4 || !octets.every((o) => /^\d{1,3}$/.test(o) && Number(o) <= 255)) return undefined;
  const [a = 0, b = 0, c = 0, d = 0] = octets.map(Number);
  return [(a << 8) | b, (c << 8) | d];
}

/** Eight 16-bit groups as RFC 5952 writes IPv6: lower case, the longest run of two or more zero groups (the first of equals) as `::`. */
export function formatIPv6(groups: readonly number[]): string {
  let bestAt = -1;
  let bestLength = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) {
      bestAt = i;
      bestLength = j - i;
    }
    i = j;
  }
  const hex = (from: number, to: number): string => groups.slice(from, to).map((g) => g.toString(16)).join(':');
  if (bestAt < 0) return hex(0, 8);
  return `${hex(0, bestAt)}::${hex(bestAt + bestLength, 8)}`;
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
