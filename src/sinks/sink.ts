import type { OperatorFunction } from 'rxjs';
import type { Forward, PortDelta } from '../model.js';

/**
 * What a sink tells about its work, for logs, the table, tests and benchmarks.
 * - `wrote`: one write to the host end succeeded, carrying these changes.
 * - `failed`: a write failed; the sink retries after `retryInMs` and then re-sends its whole state.
 *   `forwards`, when present, names the forwards that failed (a sink that retries forward by
 *   forward, such as host-switch, says which); absent, the failure concerns the host end as a
 *   whole (it could not be reached or read).
 * - `resent`: a periodic re-send of the whole state (`count` forwards) to a host end that cannot
 *   tell us it restarted; it changes nothing that was already there.
 * - `withdrawn`: after its input completed, the sink removed everything it had published
 *   (`count` host-side entries). When its withdraw bound ran out first, `left` is how many
 *   entries it could not remove (they may still be on the host); absent or 0, nothing was left.
 * - `abandoned` (the vtunnel sink): after its input completed, it gave up withdrawing (the host
 *   end did not answer before the deadline); `forwards` (`count` of them) may stay on the host
 *   until it restarts, and `error` says why. The sink completes after it, as after `withdrawn`.
 *
 * The optional fields and `abandoned` are additive: a consumer written before them reads every
 * report it knows as before.
 */
export type SinkReport =
  | { readonly sink: string; readonly type: 'wrote'; readonly added: readonly Forward[]; readonly removed: readonly Forward[] }
  | { readonly sink: string; readonly type: 'failed'; readonly error: string; readonly retryInMs: number; readonly forwards?: readonly Forward[] }
  | { readonly sink: string; readonly type: 'resent'; readonly count: number }
  | { readonly sink: string; readonly type: 'withdrawn'; readonly count: number; readonly left?: number }
  | { readonly sink: string; readonly type: 'abandoned'; readonly count: number; readonly forwards: readonly Forward[]; readonly error: string };

/**
 * A sink makes the host agree with the merged deltas it is given. Sinks are state-based: each
 * keeps the full desired set, so after any failure it re-sends everything rather than hoping no
 * delta was lost. When its input completes (the agent is shutting down) a sink withdraws all it
 * published, reports `withdrawn`, and completes.
 */
export type Sink = OperatorFunction<PortDelta, SinkReport>;
