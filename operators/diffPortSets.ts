import { filter, map, pairwise, startWith, type OperatorFunction } from 'rxjs';
import { diff, emptyPortSet, isEmptyDelta, type PortDelta, type PortSet } from '../src/model.js';

/**
 * Turns consecutive port sets into what changed between them.
 *
 *   sets:    --A-----B-----B-----C--
 *   deltas:  --a-----b-----------c--    a = +A, b = +(B∖A) −(A∖B), nothing for an unchanged set
 */
export function diffPortSets(): OperatorFunction<PortSet, PortDelta> {
  return (sets$) =>
    sets$.pipe(
      startWith(emptyPortSet),
      pairwise(),
      map(([before, after]) => diff(before, after)),
      filter((delta) => !isEmptyDelta(delta)),
    );
}
