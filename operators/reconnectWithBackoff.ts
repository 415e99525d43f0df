import { asyncScheduler, defer, retry, tap, timer, type MonoTypeOperatorFunction, type SchedulerLike } from 'rxjs';

export interface BackoffOptions {
  /** First delay after a failure. */
  readonly initialMs?: number;
  /** Upper bound of a delay. */
  readonly maxMs?: number;
  readonly factor?: number;
  /** Each delay is scaled by a random factor in [1 - jitter, 1 + jitter]. */
  readonly jitter?: number;
  /** The attempt count resets only after a (re)subscription has lived this long without error. */
  readonly stableMs?: number;
  /** Called before each wait, for logging. */
  readonly onRetry?: (error: unknown, attempt: number, delayMs: number) => void;
  readonly random?: () => number;
  readonly scheduler?: SchedulerLike;
}

/**
 * Every peer is local (a socket in the VM) or one hop away (the host end), so a retry is one cheap
 * connect. The 2 s ceiling (2.4 s with jitter) is what bounds recovery: an engine back after any
 * outage is re-listed within about 2.4 s, where a 30 s ceiling could leave it unseen for 36 s.
 */
export const defaultBackoff = { initialMs: 250, maxMs: 2_000, factor: 2, jitter: 0.2, stableMs: 10_000 } as const;

/**
 * The log level for retry number `attempt` of one outage: the first few are news, then one in
 * thirty (about a minute apart at the default ceiling) says the outage goes on; the rest are debug.
 */
export function retryLogLevel(attempt: number): 'warn' | 'debug' {
  return attempt <= 3 || attempt % 30 === 0 ? 'warn' : 'debug';
}

/** The delay before retry number `attempt` (1-based), before jitter. */
export function backoffDelay(attempt: number, opts: BackoffOptions = {}): number {
  const { initialMs, maxMs, factor } = { ...defaultBackoff, ...opts };
  return Math.min(maxMs, initialMs * factor ** (attempt - 1));
}

/**
 * Resubscribes to a failing source with exponential back-off and jitter. Unlike
 * `retry({ resetOnSuccess: true })`, which resets on the first value (and a stream that emits a
 * snapshot right after reconnecting would then never back off), the count resets only once a
 * subscription has stayed up for `stableMs`.
 *
 *   source:  --#            (each subscription fails after 2 frames)
 *   result:  ----[d1]--#... waits d1 = initialMs, then 2·d1, 4·d1, ... up to maxMs
 */
export function reconnectWithBackoff<T>(opts: BackoffOptions = {}): MonoTypeOperatorFunction<T> {
  const { jitter, stableMs } = { ...defaultBackoff, ...opts };
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
            const delayMs = Math.round(backoffDelay(attempt, opts) * (1 + jitter * (2 * random() - 1)));
            opts.onRetry?.(error, attempt, delayMs);
            return timer(delayMs, scheduler);
          },
        }),
      );
    });
}
