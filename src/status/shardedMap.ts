/**
 * An immutable map that is cheap to change: its entries are spread over 256 small maps by a hash
 * of the key, and a change copies only the small maps it touches. The status fold keeps every
 * step a value of its own this way; copying a whole `Map` of 10,000 forwards instead costs
 * about 4 ms, which the agent would pay several times for each event.
 */
export class ShardedMap<V> implements ReadonlyMap<string, V> {
  private static readonly shardCount = 256;

  private constructor(
    private readonly shards: readonly ReadonlyMap<string, V>[],
    readonly size: number,
  ) {}

  /** `map` itself when it is one, else a copy of it. */
  static of<V>(map: ReadonlyMap<string, V>): ShardedMap<V> {
    if (map instanceof ShardedMap) return map as ShardedMap<V>;
    const edit = ShardedMap.empty<V>().edit();
    for (const [key, value] of map) edit.set(key, value);
    return edit.done();
  }

  static empty<V>(): ShardedMap<V> {
    const none: ReadonlyMap<string, V> = new Map();
    return new ShardedMap(Array.from({ length: ShardedMap.shardCount }, () => none), 0);
  }

  get(key: string): V | undefined {
    return this.shards[shardOf(key)]?.get(key);
  }

  has(key: string): boolean {
    return this.shards[shardOf(key)]?.has(key) ?? false;
  }

  *entries(): MapIterator<[string, V]> {
    for (const shard of this.shards) yield* shard.entries();
  }

  *keys(): MapIterator<string> {
    for (const shard of this.shards) yield* shard.keys();
  }

  *values(): MapIterator<V> {
    for (const shard of this.shards) yield* shard.values();
  }

  [Symbol.iterator](): MapIterator<[string, V]> {
    return this.entries();
  }

  forEach(callback: (value: V, key: string, map: ReadonlyMap<string, V>) => void): void {
    for (const [key, value] of this.entries()) callback(value, key, this);
  }

  /** Changes made through `edit` copy each touched shard once; `done` gives the new map. */
  edit(): ShardedMapEdit<V> {
    const shards = this.shards.slice();
    const copied = new Set<number>();
    let size = this.size;
    const own = (i: number): Map<string, V> => {
      if (!copied.has(i)) {
        copied.add(i);
        shards[i] = new Map(shards[i]);
      }
      return shards[i] as Map<string, V>;
    };
    return {
      get: (key) => shards[shardOf(key)]?.get(key),
      set: (key, value) => {
        const shard = own(shardOf(key));
        if (!shard.has(key)) size += 1;
        shard.set(key, value);
      },
      delete: (key) => {
        const i = shardOf(key);
        if (!shards[i]?.has(key)) return;
        own(i).delete(key);
        size -= 1;
      },
      size: () => size,
      entries: function* () {
        for (const shard of shards) yield* shard.entries();
      },
      done: () => (copied.size === 0 ? this : new ShardedMap(shards, size)),
    };
  }
}

/** A batch of changes to a sharded map: each changed shard is copied once, however many of its keys change. */
export interface ShardedMapEdit<V> {
  get(key: string): V | undefined;
  set(key: string, value: V): void;
  delete(key: string): void;
  size(): number;
  /** The entries as they are now, edits included. */
  entries(): Iterable<[string, V]>;
  done(): ShardedMap<V>;
}

/** FNV-1a over the UTF-16 code units, folded to a shard index. */
function shardOf(key: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h ^ (h >>> 8) ^ (h >>> 16) ^ (h >>> 24)) & 0xff;
}
