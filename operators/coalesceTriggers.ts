import { type MonoTypeOperatorFunction, type SchedulerLike } from 'rxjs';
import { windowedCoalesce } from './windowedCoalesce.js';

/**
 * Thins a stream of "something changed, look again" signals without delaying a lone one. The
 * first trigger after a quiet period passes at once and opens a window; the triggers inside the
 * window fold into one, the latest, emitted when the window closes, and a new window opens as
 * long as they keep coming. Each new window is twice as long as the last, up to `maxWindowMs`,
 * so a long burst costs about log2(max/window) + length/max emissions; a window that finds
 * nothing ends the burst.
 *
 *   triggers:  --a------bcd------|      window = 5 frames
 *   out:       --a------b----d---|      a and b pass at once; c and d fold into d at b's window end
 *
 *   triggers:  a-b-c-d-e-f-g----|       window = 2, max = 4
 *   out:       a-b---d---f---g--|       windows 2 (b), 4 (c d → d), 4 (e f → f), 4 (g), then quiet
 *
 * The sibling of `coalesceDeltas` for signals that carry no data worth summing: the latest stands
 * for all of them.
 */
export function coalesceTriggers<T>(
  windowMs: number,
  scheduler?: SchedulerLike,
  maxWindowMs: number = windowMs,
): MonoTypeOperatorFunction<T> {
  return windowedCoalesce<T>(
    () => {
      let latest: { value: T } | undefined;
      return {
        fold: (value) => (latest = { value }),
        drain: () => {
          const drained = latest;
          latest = undefined;
          return drained;
        },
      };
    },
    windowMs,
    scheduler,
    maxWindowMs,
  );
}
