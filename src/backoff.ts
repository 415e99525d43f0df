import { definedOptions } from './options.js';

/**
 * The one back-off rule every retry in portstream follows: exponential growth from `initialMs` by
 * `factor` up to `maxMs`, each wait scaled by a random factor in [1 - jitter, 1 + jitter] so that
 * many retries (ports, sources) never fall into step.
 */
export interface Backoff {
  /** First delay after a failure. */
  readonly initialMs?: number | undefined;
  /** Upper bound of a delay, before jitter. */
  readonly maxMs?: number | undefined;
  readonly factor?: number | undefined;
  /** Each delay is scaled by a random factor in [1 - jitter, 1 + jitter]. */
  readonly jitter?: number | undefined;
}

/**
 * Every peer is local (a socket in the VM) or one hop away (the host end), so a retry is one cheap
 * connect. The 2 s ceiling (2.4 s with jitter) is what bounds recovery: an engine back after any
 * outage is re-listed within about 2.4 s, where a 30 s ceiling could leave it unseen for 36 s.
 */
export const defaultBackoff = { initialMs: 250, maxMs: 2_000, factor: 2, jitter: 0.2, stableMs: 10_000 } as const;

/** The delay before retry number `attempt` (1-based), before jitter. */
export function backoffDelay(attempt: number, opts: Backoff = {}): number {
  const { initialMs, maxMs, factor } = { ...defaultBackoff, ...definedOptions(opts) };
  return Math.min(maxMs, initialMs * factor ** (Math.max(1, attempt) - 1));
}

/** The wait before retry number `attempt` (1-based): `backoffDelay` with jitter, in whole ms. */
export function jitteredDelay(attempt: number, opts: Backoff = {}, random: () => number = Math.random): number {
  const jitter = opts.jitter ?? defaultBackoff.jitter;
  return Math.round(backoffDelay(attempt, opts) * (1 + jitter * (2 * random() - 1)));
}

/**
 * The log level for retry number `attempt` of one outage: the first few are news, then one in
 * thirty (about a minute apart at the default ceiling) says the outage goes on; the rest are debug.
 */
export function retryLogLevel(attempt: number): 'warn' | 'debug' {
  return attempt <= 3 || attempt % 30 === 0 ? 'warn' : 'debug';
}
