/**
 * `portstream/operators`: the pure RxJS operators that fold sources' events into port sets, diff
 * them, merge sources with reference counts and coalesce bursts. They load nothing but rxjs and
 * the model, so a tool that only composes streams pays little to import them (see `npm run bench`).
 * @module
 */
export { toPortSet } from '../../operators/toPortSet.js';
export { diffPortSets } from '../../operators/diffPortSets.js';
export { toPortDeltas } from '../../operators/toPortDeltas.js';
export { mergeDeltas, refCountClaims } from '../../operators/mergeDeltas.js';
export { coalesceDeltas } from '../../operators/coalesceDeltas.js';
export { coalesceTriggers } from '../../operators/coalesceTriggers.js';
export { exhaustMapWithTrailing } from '../../operators/exhaustMapWithTrailing.js';
export { reconnectWithBackoff, type BackoffOptions } from '../../operators/reconnectWithBackoff.js';
export { backoffDelay, defaultBackoff, jitteredDelay, type Backoff } from '../backoff.js';
