import { asyncScheduler, Observable, type MonoTypeOperatorFunction, type SchedulerLike, type Subscription } from 'rxjs';
import { portKey, type Forward, type PortDelta, type PortKey } from '../src/model.js';

/**
 * Coalesces bursts of deltas into few sink writes without delaying a lone change. The first
 * delta after a quiet period passes at once and opens a window; what arrives inside the window is
 * folded into one delta, emitted when it closes, and a new window opens while changes keep
 * coming. Inside a window an add and a remove of one key cancel out.
 *
 *   deltas:  --a------b-c-d------|     window = 5 frames
 *   out:     --a------b----x------|     a and b pass at once; c and d fold into x, emitted when
 *                                       b's window closes (an add in c and a remove of the same
 *                                       key in d would cancel out, and x would hold neither)
 *
 * Simplest mental model: a throttle with leading and trailing edges whose trailing value is the
 * sum of everything it swallowed.
 */
export function coalesceDeltas(
  windowMs: number,
  scheduler: SchedulerLike = asyncScheduler,
): MonoTypeOperatorFunction<PortDelta> {
  return (deltas$) =>
    new Observable<PortDelta>((subscriber) => {
      const pending = new Map<PortKey, { added: boolean; forward: Forward }>();
      let window: Subscription | undefined;

      const flush = (): boolean => {
        if (pending.size === 0) return false;
        const added: Forward[] = [];
        const removed: Forward[] = [];
        for (const { added: isAdd, forward } of pending.values()) (isAdd ? added : removed).push(forward);
        pending.clear();
        subscriber.next({ added, removed });
        return true;
      };

      const openWindow = (): void => {
        window = scheduler.schedule(() => {
          window = undefined;
          if (flush()) openWindow();
        }, windowMs);
      };

      const fold = (delta: PortDelta): void => {
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
      };

      const subscription = deltas$.subscribe({
        next: (delta) => {
          if (window) {
            fold(delta);
          } else {
            subscriber.next(delta);
            openWindow();
          }
        },
        error: (err: unknown) => {
          subscriber.error(err);
        },
        complete: () => {
          window?.unsubscribe();
          flush();
          subscriber.complete();
        },
      });
      return () => {
        subscription.unsubscribe();
        window?.unsubscribe();
      };
    });
}
