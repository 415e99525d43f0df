/**
 * An immutable map that shares structure with the map it came from, so the sinks' reconcile
 * functions can stay pure at 10,000 forwards: copying a `Map` of that size on every change costs
 * milliseconds, while this copies only the changes since the last compaction (at most about
 * √(2·size) of them) and rebuilds its base once that many have gathered: amortised O(√n) per write
 * rather than O(n).
 *
 * Iteration follows the base's order, then the keys added since; a key set again keeps its place.
 */
export interface SharedMap<K, V> {
  readonly base: ReadonlyMap<K, V>;
  /** Changes over `base`: a value, or `undefined` for a key deleted. */
  readonly changes: ReadonlyMap<K, V | undefined>;
  readonly size: number;
}

/** An empty shared map. */
export function emptyShared<K, V>(): SharedMap<K, V> {
  return { base: new Map(), changes: new Map(), size: 0 };
}

/** A shared map holding `entries`. */
export function sharedOf<K, V>(entries: Iterable<readonly [K, V]>): SharedMap<K, V> {
  const base = new Map(entries);
  return { base, changes: new Map(), size: base.size };
}

/** The value under `key`, or undefined. */
export function sharedGet<K, V>(map: SharedMap<K, V>, key: K): V | undefined {
  return map.changes.has(key) ? map.changes.get(key) : map.base.get(key);
}

/** Whether `key` is in the map. */
export function sharedHas<K, V>(map: SharedMap<K, V>, key: K): boolean {
  return sharedGet(map, key) !== undefined;
}

/** `map` with every `[key, value]` of `set` set (value `undefined`: deleted), in one copy. */
export function sharedUpdate<K, V>(map: SharedMap<K, V>, set: Iterable<readonly [K, V | undefined]>): SharedMap<K, V> {
  const changes = new Map(map.changes);
  let size = map.size;
  let touched = false;
  for (const [key, value] of set) {
    const current = changes.has(key) ? changes.get(key) : map.base.get(key);
    if (value === current) continue; // a write of what is there already, or a delete of nothing
    const before = current !== undefined;
    touched = true;
    size += (value === undefined ? 0 : 1) - (before ? 1 : 0);
    if (value === undefined && !map.base.has(key)) changes.delete(key);
    else changes.set(key, value);
  }
  if (!touched) return map;
  return changes.size * changes.size > 2 * Math.max(1024, size) ? compact({ base: map.base, changes, size }) : { base: map.base, changes, size };
}

/** The entries in order, as an array (a plain copy of the base when nothing changed since). */
export function sharedEntries<K, V>(map: SharedMap<K, V>): [K, V][] {
  if (map.changes.size === 0) return [...map.base];
  const out: [K, V][] = [];
  for (const [key, value] of map.base) {
    const now = map.changes.has(key) ? map.changes.get(key) : value;
    if (now !== undefined) out.push([key, now]);
  }
  for (const [key, value] of map.changes) if (value !== undefined && !map.base.has(key)) out.push([key, value]);
  return out;
}

/** Every value, in insertion order, as a fresh array. */
export function sharedValues<K, V>(map: SharedMap<K, V>): V[] {
  return map.changes.size === 0 ? [...map.base.values()] : sharedEntries(map).map(([, value]) => value);
}

/** One map again: a copy of the base (Map's own copy, the fastest there is) with the changes applied. */
function compact<K, V>(map: SharedMap<K, V>): SharedMap<K, V> {
  const base = new Map(map.base);
  for (const [key, value] of map.changes) {
    if (value === undefined) base.delete(key);
    else base.set(key, value);
  }
  return { base, changes: new Map(), size: base.size };
}
