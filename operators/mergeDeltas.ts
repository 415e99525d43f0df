import { filter, map, merge, Observable, type OperatorFunction } from 'rxjs';
import { isEmptyDelta, portKey, type Forward, type PortDelta, type PortKey } from '../src/model.js';

/**
 * Merges the deltas of several sources with a claim count per port, so that two sources that
 * publish one port never clobber each other: the port is added on its first claim and removed
 * only when its last claim goes. A claim is (source, key), so a repeated add or a removal of
 * something never claimed changes nothing: counts cannot go negative.
 *
 *   docker:    --a(+80)-----------r(-80)-------
 *   iptables:  ---------a(+80)-----------r(-80)
 *   merged:    --a(+80)--------------------r(-80)
 */
export function mergeDeltas(...sources: Observable<PortDelta>[]): Observable<PortDelta> {
  return merge(...sources).pipe(refCountClaims());
}

/** The counting step of `mergeDeltas`, for a stream that already interleaves several sources. */
export function refCountClaims(): OperatorFunction<PortDelta, PortDelta> {
  return (deltas$) =>
    new Observable<PortDelta>((subscriber) => {
      // key -> the sources that claim it (rarely more than one, so an array beats a Set), and the
      // forward that was published for it
      const claims = new Map<PortKey, { sources: string[]; published: Forward }>();
      return deltas$
        .pipe(
          map((delta) => {
            const added: Forward[] = [];
            const removed: Forward[] = [];
            for (const f of delta.removed) {
              const key = portKey(f);
              const claim = claims.get(key);
              const at = claim ? claim.sources.indexOf(f.source) : -1;
              if (!claim || at < 0) continue;
              claim.sources.splice(at, 1);
              if (claim.sources.length === 0) {
                claims.delete(key);
                removed.push(claim.published);
              }
            }
            for (const f of delta.added) {
              const key = portKey(f);
              const claim = claims.get(key);
              if (claim) {
                if (!claim.sources.includes(f.source)) claim.sources.push(f.source);
              } else {
                claims.set(key, { sources: [f.source], published: f });
                added.push(f);
              }
            }
            return { added, removed };
          }),
          filter((delta) => !isEmptyDelta(delta)),
        )
        .subscribe(subscriber);
    });
}
