import { type MonoTypeOperatorFunction, type SchedulerLike } from 'rxjs';
import { windowedCoalesce } from './windowedCoalesce.js';
import { portKey, type Forward, type PortDelta, type PortKey } from '../src/model.js';

/**
 * Coalesces bursts of deltas into few sink writes without delaying a lone change. The first
 * delta after a quiet period passes at once and opens a window; what arrives inside the window is
 * folded into one delta, emitted when it closes, and a new window opens while changes keep
 * coming. Inside a window an add and a remove of one key cancel out.
 *
 *   deltas:  --a------b-c-d------|     window = 5 frames
 *   out:     --a------b----x-----|      a and b pass at once; c and d fold into x, emitted when
 *                                       b's window closes (an add in c and a remove of the same
 *                                       key in d would cancel out, and x would hold neither)
 *
 * While changes keep coming, each new window is twice as long as the last, up to `maxWindowMs`
 * (default: `windowMs`, fixed windows), so a long burst costs about log2(max/window) + its
 * length/max writes while a lone change is never delayed.
 *
 *   deltas:  a-b-c-d-e-f-g----|      window = 2, max = 4
 *   out:     a-b---x---y---g--|      windows 2 (b), 4 (c d → x), 4 (e f → y), 4 (g), then quiet
 *
 * Simplest mental model: a throttle with leading and trailing edges whose trailing value is the
 * sum of everything it swallowed.
 */
export function coalesceDeltas(
  windowMs: number,
  scheduler?: SchedulerLike,
  maxWindowMs: number = windowMs,
): MonoTypeOperatorFunction<PortDelta> {
  return windowedCoalesce<PortDelta>(
    () => {
      // key -> the net change inside the window; an add and a remove of one key cancel out
      const pending = new Map<PortKey, { added: boolean; forward: Forward }>();
      return {
        fold: (delta) => {
          for (const forward of delta.removed) {
            const key = portKey(forward);
            if (pending.get(key)?.added === true) pending.delete(key);
            else pending.set(key, { added: false, forward });
          }
          for (const forward of delta.added) {
            const key = portKey(forward);
            if (pending.get(key)?.added === false) pending.delete(key);
            else pending.set(key, { added: true, forward });
          }
        },
        drain: () => {
          if (pending.size === 0) return undefined;
          const added: Forward[] = [];
          const removed: Forward[] = [];
          for (const { added: isAdd, forward } of pending.values()) (isAdd ? added : removed).push(forward);
          pending.clear();
          return { value: { added, removed } };
        },
      };
    },
    windowMs,
    scheduler,
    maxWindowMs,
  );
}
