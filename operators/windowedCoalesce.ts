import { asyncScheduler, Observable, type MonoTypeOperatorFunction, type SchedulerLike, type Subscription } from 'rxjs';

/** What a windowed coalescer does with the values inside one window. */
export interface WindowFold<T> {
  /** Takes a value that arrived while a window was open. */
  fold(value: T): void;
  /** What the window emits when it closes (and forgets it); undefined when nothing is pending. */
  drain(): { readonly value: T } | undefined;
}

/**
 * The window mechanism that `coalesceDeltas` and `coalesceTriggers` share: the first value after
 * a quiet period passes at once and opens a window; values inside it are folded and drained as
 * one when it closes; while values keep coming each new window is twice as long as the last, up
 * to `maxWindowMs`; a window that drains nothing ends the burst. Completion drains at once.
 *
 *   values:  a-b-c-d-e-f-g----|       window = 2, max = 4
 *   out:     a-b---x---y---g--|       windows 2 (b), 4 (c d → x), 4 (e f → y), 4 (g), then quiet
 */
export function windowedCoalesce<T>(
  makeFold: () => WindowFold<T>,
  windowMs: number,
  scheduler: SchedulerLike = asyncScheduler,
  maxWindowMs: number = windowMs,
): MonoTypeOperatorFunction<T> {
  return (values$) =>
    new Observable<T>((subscriber) => {
      const pending = makeFold(); // a throw here is an error: `new Observable` catches it
      let window: Subscription | undefined;

      /** Runs a fold or drain; a throw in it becomes the error notification, never an uncaught one. */
      const guarded = (step: () => void): void => {
        try {
          step();
        } catch (err: unknown) {
          subscriber.error(err);
        }
      };

      const flush = (): boolean => {
        const drained = pending.drain();
        if (!drained) return false;
        subscriber.next(drained.value);
        return true;
      };

      const openWindow = (length: number): void => {
        window = scheduler.schedule(() => {
          window = undefined;
          guarded(() => {
            if (flush()) openWindow(Math.min(maxWindowMs, length * 2));
          });
        }, length);
      };

      const subscription = values$.subscribe({
        next: (value) => {
          if (window) {
            guarded(() => { pending.fold(value); });
          } else {
            subscriber.next(value);
            openWindow(windowMs);
          }
        },
        error: (err: unknown) => {
          subscriber.error(err);
        },
        complete: () => {
          window?.unsubscribe();
          guarded(() => {
            flush();
            subscriber.complete();
          });
        },
      });
      return () => {
        subscription.unsubscribe();
        window?.unsubscribe();
      };
    });
}
