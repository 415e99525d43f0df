import { defaultBackoff, jitteredDelay, type Backoff } from '../src/backoff.js';
import { definedOptions } from '../src/options.js';
import { asyncScheduler, defer, retry, tap, timer, type MonoTypeOperatorFunction, type SchedulerLike } from 'rxjs';

export { backoffDelay, defaultBackoff, jitteredDelay, retryLogLevel, type Backoff } from '../src/backoff.js';

/** How `reconnectWithBackoff` waits between attempts, and whom it tells about each retry. */
export interface BackoffOptions extends Backoff {
  /** The attempt count resets only after a (re)subscription has lived this long without error. */
  readonly stableMs?: number | undefined;
  /** Called before each wait, for logging. */
  readonly onRetry?: ((error: unknown, attempt: number, delayMs: number) => void) | undefined;
  /** The random source of the jitter, in [0, 1) (tests pass a fixed one). */
  readonly random?: (() => number) | undefined;
  readonly scheduler?: SchedulerLike | undefined;
}

/**
 * Resubscribes to a failing source with exponential back-off and jitter. Unlike
 * `retry({ resetOnSuccess: true })`, which resets on the first value (and a stream that emits a
 * snapshot right after reconnecting would then never back off), the count resets only once a
 * subscription has stayed up for `stableMs`.
 *
 *   source:  a-#                             each subscription emits a, then fails
 *   result:  a---a-----a---------a---------a   waits 2, 4, 8, 8 (initialMs 2, factor 2, maxMs 8)
 */
export function reconnectWithBackoff<T>(opts: BackoffOptions = {}): MonoTypeOperatorFunction<T> {
  const { stableMs } = { ...defaultBackoff, ...definedOptions(opts) };
  const scheduler = opts.scheduler ?? asyncScheduler;
  const random = opts.random ?? Math.random;
  return (source$) =>
    defer(() => {
      let attempt = 0;
      let subscribedAt = scheduler.now();
      return source$.pipe(
        tap({ subscribe: () => (subscribedAt = scheduler.now()) }),
        retry({
          delay: (error: unknown) => {
            if (scheduler.now() - subscribedAt >= stableMs) attempt = 0;
            attempt += 1;
            const delayMs = jitteredDelay(attempt, opts, random);
            opts.onRetry?.(error, attempt, delayMs);
            return timer(delayMs, scheduler);
          },
        }),
      );
    });
}
