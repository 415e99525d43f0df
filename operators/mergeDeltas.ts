import { defer, filter, map, merge, type Observable, type OperatorFunction } from 'rxjs';
import { isEmptyDelta, portKey, type Forward, type PortDelta, type PortKey } from '../src/model.js';

/**
 * Merges the deltas of several sources with a claim count per port, so that two sources that
 * publish one port never clobber each other: the port is added on its first claim and removed
 * only when its last claim goes. A claim is (source, key), so a repeated add or a removal of
 * something never claimed changes nothing: counts cannot go negative.
 *
 *   docker:    -a------r------      a = +80, r = −80 (docker's claim)
 *   iptables:  ----b---------s      b = +80, s = −80 (iptables' claim)
 *   merged:    -a------------s      +80 with the first claim, −80 with the last
 */
export function mergeDeltas(...sources: Observable<PortDelta>[]): Observable<PortDelta> {
  return merge(...sources).pipe(refCountClaims());
}

/** A port's claim: the sources that claim it (rarely more than one, so an array beats a Set). */
interface Claim {
  readonly sources: string[];
  /** The forward that was published for the key, the one its removal must name. */
  readonly published: Forward;
}

/**
 * The counting step of `mergeDeltas`, for a stream that already interleaves several sources.
 * Built from `defer` and `map`, so a throw while counting (a forward that cannot be keyed) is an
 * error notification, never an uncaught exception.
 */
export function refCountClaims(): OperatorFunction<PortDelta, PortDelta> {
  return (deltas$) =>
    defer(() => {
      const claims = new Map<PortKey, Claim>(); // one per subscription, as `scan`'s seed
      return deltas$.pipe(
        map((delta) => countClaims(claims, delta)),
        filter((delta) => !isEmptyDelta(delta)),
      );
    });
}

/** Applies `delta` to `claims` (in place: it is on every event's path) and says what the merge publishes. */
function countClaims(claims: Map<PortKey, Claim>, delta: PortDelta): PortDelta {
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
}
