import { map, scan, type OperatorFunction } from 'rxjs';
import { portKey, type Forward, type PortKey, type PortSet, type SourceEvent } from '../src/model.js';

type Owners = ReadonlyMap<string, readonly Forward[]>;

/**
 * Folds one source's raw events into the set of ports it wants published. A snapshot replaces
 * everything the source said before, so a reconnect drops owners that vanished meanwhile.
 *
 *   events: --s-----u-----r-----s--    s = snapshot, u = upsert(owner), r = remove(owner)
 *   sets:   --A-----B-----C-----D--    one set per event; diffPortSets drops the unchanged ones
 *
 * When two owners claim one key, the set holds the claim of the first owner (in insertion
 * order) and keeps the key as long as any owner claims it.
 */
export function toPortSet(): OperatorFunction<SourceEvent, PortSet> {
  return (events$) =>
    events$.pipe(
      scan((owners: Owners, event) => fold(owners, event), new Map<string, readonly Forward[]>()),
      map(union),
    );
}

function fold(owners: Owners, event: SourceEvent): Owners {
  switch (event.type) {
    case 'snapshot':
      return event.owners;
    case 'upsert': {
      const next = new Map(owners);
      next.set(event.owner, event.forwards);
      return next;
    }
    case 'remove': {
      if (!owners.has(event.owner)) return owners;
      const next = new Map(owners);
      next.delete(event.owner);
      return next;
    }
  }
}

function union(owners: Owners): PortSet {
  const set = new Map<PortKey, Forward>();
  for (const forwards of owners.values()) {
    for (const f of forwards) {
      const key = portKey(f);
      if (!set.has(key)) set.set(key, f);
    }
  }
  return set;
}
