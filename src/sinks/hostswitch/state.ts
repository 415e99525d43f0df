import type { Forward, PortDelta, PortKey } from '../../model.js';
import type { SinkReport } from '../sink.js';
import type { ForwarderEntry, HostSwitchAddressing, Reply } from './api.js';

/** What the reconciler is told. Everything that happens to the sink arrives as one of these. */
export type Input =
  | { readonly type: 'start' }
  | { readonly type: 'delta'; readonly delta: PortDelta }
  /** The answer to an expose or unexpose; `none` when no HTTP answer came (refused, reset, timed out). */
  | { readonly type: 'answer'; readonly key: string; readonly op: Op; readonly answer: Answer }
  /** The answer to the `list` command numbered `seq`. */
  | { readonly type: 'listed'; readonly seq: number; readonly list: readonly ForwarderEntry[] | { readonly error: string } }
  /** A retry timer ran out: of the entry `key`, or of the list read when `key` is undefined. */
  | { readonly type: 'retry'; readonly key: string | undefined; readonly gen: number }
  /** Time to look at the host's list again (it cannot tell us it restarted). */
  | { readonly type: 'tick' }
  /** The input completed: withdraw everything. */
  | { readonly type: 'stop' }
  /** The withdraw bound ran out. */
  | { readonly type: 'deadline' };

/** The two calls that change the host: expose a forward, or unexpose it. */
export type Op = 'expose' | 'unexpose';
/** What came back from one call: a classified reply, or none at all (refused, reset, timed out). */
export type Answer = Reply | { readonly kind: 'none'; readonly message: string };

/** What the reconciler asks the runner to do. */
export type Command =
  | { readonly type: 'expose' | 'unexpose'; readonly key: string; readonly entry: ForwarderEntry }
  | { readonly type: 'list'; readonly seq: number }
  /** Drop the list read in flight (a withdraw needs no list). */
  | { readonly type: 'cancelList' }
  /** Feed `{type:'retry', key, gen}` back after `ms`. */
  | { readonly type: 'wait'; readonly key: string | undefined; readonly gen: number; readonly ms: number }
  /** Feed `{type:'deadline'}` back after `ms`. */
  | { readonly type: 'deadline'; readonly ms: number }
  | { readonly type: 'report'; readonly report: SinkReport }
  | { readonly type: 'log'; readonly level: 'debug' | 'info' | 'warn'; readonly fields: Readonly<Record<string, unknown>>; readonly msg: string }
  /** Everything is withdrawn, or the bound ran out: complete. */
  | { readonly type: 'done' };

/** What the reconciler needs to know that is not state. */
export interface Env {
  readonly addressing: HostSwitchAddressing;
  /** At most this many exposes and unexposes in flight. */
  readonly concurrency: number;
  readonly withdrawTimeoutMs: number;
  /** The wait before retry number `attempt` (jittered by the runner's choice of function). */
  readonly delayOf: (attempt: number) => number;
  /** The host switch's URL, for log lines. */
  readonly where: string;
}

/**
 * One forwarder entry (`protocol/local`) as the sink sees it.
 * - `host`: what the host has under this key as far as we know. `unknown` after a request that
 *   got no answer, or a forward that the last list showed but which may have gone since;
 *   `theirs` when it forwards somewhere else (not ours: never touched).
 * - `ours`: exposed or adopted by us, so we unexpose it when it is no longer wanted.
 * - `phase`: `busy` with a request in flight, `waiting` on its retry timer (`gen` tells the
 *   live timer from stale ones), `verify` until a list read that starts after now.
 */
export interface Entry {
  readonly key: string;
  readonly lane: string;
  readonly entry: ForwarderEntry;
  readonly forwards: Map<PortKey, Forward>;
  /** The forwards reported as on the host (`wrote` added). */
  readonly reported: Map<PortKey, Forward>;
  host: 'absent' | 'present' | 'unknown' | 'theirs';
  ours: boolean;
  phase: 'idle' | 'busy' | 'waiting' | 'verify';
  attempt: number;
  gen: number;
  /** `clock` at its last answer: a list read sent before that knows less than we do. */
  changed: number;
  /** After the retry timer, read the list before acting. */
  verifyAfterWait: boolean;
  /** The forwards when the last expose was sent: reported on success even if withdrawn meanwhile. */
  sent: readonly Forward[];
}

/** The host's list of forwards as the reducer last read it, and whether a read is under way or due. */
export interface ListState {
  phase: 'idle' | 'busy' | 'waiting';
  wanted: boolean;
  seq: number;
  attempt: number;
  gen: number;
}

/**
 * The sink's whole state. The reconciler updates it in place and returns it: copying maps of
 * 10,000 entries on every answer would make publishing them quadratic. A caller must treat the
 * state it passed in as consumed (as `scan` does).
 */
export interface State {
  readonly entries: Map<string, Entry>;
  /** Entries to look at, in order; ones in a busy lane stay until it frees. */
  readonly pending: Set<string>;
  readonly busyLanes: Set<string>;
  inFlight: number;
  readonly list: ListState;
  /** The host's list at the last read, by entry key. */
  listed: ReadonlyMap<string, ForwarderEntry> | undefined;
  /** Counts answers, so list reads can be ordered against them. */
  clock: number;
  /** Failures without an HTTP answer in a row: the first of an outage is a warning. */
  outage: number;
  lastError: string;
  readonly skipped: Set<PortKey>;
  ipv6Said: boolean;
  stopping: { removed: number } | undefined;
  done: boolean;
}

/** The host-switch reducer's state before its first input: nothing wanted, nothing known of the host. */
export function initialState(): State {
  return {
    entries: new Map(),
    pending: new Set(),
    busyLanes: new Set(),
    inFlight: 0,
    list: { phase: 'idle', wanted: false, seq: 0, attempt: 0, gen: 0 },
    listed: undefined,
    clock: 0,
    outage: 0,
    lastError: '',
    skipped: new Set(),
    ipv6Said: false,
    stopping: undefined,
    done: false,
  };
}

/** One step of the host-switch reducer: the next state (the one it was given, changed) and the commands to run. */
export interface Step {
  readonly state: State;
  readonly commands: readonly Command[];
}
