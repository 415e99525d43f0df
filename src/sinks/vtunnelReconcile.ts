import type { LogCommand } from '../reconcileLoop.js';
import { jitteredDelay, type Backoff } from '../backoff.js';
import { portKey, type Forward, type PortDelta, type PortKey } from '../model.js';
import type { SinkReport } from './sink.js';
import { emptyShared, sharedEntries, sharedGet, sharedHas, sharedUpdate, sharedValues, type SharedMap } from '../sharedMap.js';

/**
 * The vtunnel sink's decisions, as a pure function: `reconcileVtunnel(state, input)` gives the
 * next state and the commands to carry out (send a round, report, log, arm or cancel a timer,
 * finish). `vtunnelSink` (vtunnel.ts) only runs the commands and feeds back what came of them, so
 * everything here is tested without sockets or clocks (test/unit/vtunnelReconcile.test.ts).
 */

/** What one round sends: first the removes (freeing host ports), then the adds. */
export interface Round {
  readonly removes: readonly Forward[];
  readonly adds: readonly Forward[];
}

/** What the vtunnel reducer needs to know of its options: the peer, re-send and withdrawal timing, back-off. */
export interface VtunnelConfig {
  /** The peer, for logs. */
  readonly address: string;
  /** After this long idle and in sync, the whole state is sent again (0: never). */
  readonly resyncMs: number;
  readonly withdrawTimeoutMs: number;
  readonly backoff?: Backoff | undefined;
}

/** The vtunnel sink's timers: the retry after a failed round, the periodic re-send, and the withdrawal's deadline. */
export type VtunnelTimer = 'retry' | 'resync' | 'deadline';

/** What the vtunnel reducer is told: a delta, a round sent or failed, a timer that fired, or the stop. */
export type VtunnelInput =
  | { readonly kind: 'delta'; readonly delta: PortDelta }
  /** The input completed: withdraw everything, then finish. */
  | { readonly kind: 'stop' }
  /** One message of the round in flight reached the peer. */
  | { readonly kind: 'delivered'; readonly remove: boolean; readonly forwards: readonly Forward[] }
  /** The whole round did. */
  | { readonly kind: 'sent' }
  /** The round failed; `random` in [0, 1) is the jitter draw for its back-off. */
  | { readonly kind: 'failed'; readonly error: string; readonly random: number }
  | { readonly kind: 'timer'; readonly timer: VtunnelTimer };

/** What the vtunnel reducer asks for: send a round, arm or cancel a timer, report, log, or finish. */
export type VtunnelCommand =
  | { readonly kind: 'send'; readonly round: Round }
  | { readonly kind: 'report'; readonly report: SinkReport }
  | LogCommand
  /** Arm `timer` to fire in `ms` (replacing it if armed); `ms` undefined cancels it. */
  | { readonly kind: 'timer'; readonly timer: VtunnelTimer; readonly ms: number | undefined }
  | { readonly kind: 'done' };

/** Everything the vtunnel reducer knows: what is wanted, what may be on the host, whether the two are known to agree, and the round in flight. */
export interface VtunnelState {
  readonly desired: SharedMap<PortKey, Forward>;
  /** Everything that may be on the host: what was sent, and what a failed round may have left. */
  readonly onHost: SharedMap<PortKey, Forward>;
  /** While `inSync`, the host is exactly `onHost`, and it differs from `desired` only at these keys. */
  readonly dirty: ReadonlySet<PortKey>;
  readonly inSync: boolean;
  /** Consecutive failed rounds, for the logs. */
  readonly failures: number;
  /** The back-off attempt; restarts when shutdown begins. */
  readonly attempt: number;
  readonly lastError: string;
  readonly inFlight: { readonly round: Round; readonly withdraw: boolean; readonly resync: boolean } | undefined;
  readonly retrying: boolean;
  readonly resyncArmed: boolean;
  /** The next round is a periodic re-send. */
  readonly resyncing: boolean;
  readonly withdrawing: { readonly removed: number } | undefined;
  readonly done: boolean;
}

/** One step of the vtunnel reducer: the next state and the commands to run. */
export interface VtunnelStep {
  readonly state: VtunnelState;
  readonly commands: readonly VtunnelCommand[];
}

/** The vtunnel reducer's state before its first input: nothing wanted, nothing on the host. */
export const initialVtunnelState: VtunnelState = {
  desired: emptyShared(),
  onHost: emptyShared(),
  dirty: new Set(),
  inSync: true,
  failures: 0,
  attempt: 0,
  lastError: '',
  inFlight: undefined,
  retrying: false,
  resyncArmed: false,
  resyncing: false,
  withdrawing: undefined,
  done: false,
};

/**
 * The reference plan: the round that makes the host agree with `desired`. `onHost` is
 * everything that may be on the host; while `inSync` it is exactly what is there, otherwise (after
 * a failure, the host may have restarted empty) every desired forward is sent again: adds are
 * idempotent on the host. `reconcileVtunnel` plans the same round from its dirty keys when in sync.
 */
export function planRound(desired: ReadonlyMap<PortKey, Forward>, onHost: ReadonlyMap<PortKey, Forward>, inSync: boolean): Round {
  const removes = [...onHost].filter(([key]) => !desired.has(key)).map(([, f]) => f);
  const adds = [...desired].filter(([key]) => !inSync || !onHost.has(key)).map(([, f]) => f);
  return { removes, adds };
}

/** The round for `s`: from the dirty keys alone while in sync (cheap), else everything. */
function roundOf(s: VtunnelState): Round {
  if (!s.inSync) {
    const removes = sharedEntries(s.onHost).filter(([key]) => !sharedHas(s.desired, key)).map(([, f]) => f);
    return { removes, adds: sharedValues(s.desired) };
  }
  const removes: Forward[] = [];
  const adds: Forward[] = [];
  for (const key of s.dirty) {
    const want = sharedGet(s.desired, key);
    const there = sharedGet(s.onHost, key);
    if (want === undefined && there !== undefined) removes.push(there);
    if (want !== undefined && there === undefined) adds.push(want);
  }
  return { removes, adds };
}

const keys = new WeakMap<Forward, PortKey>();

/**
 * `portKey`, remembered per forward: a forward is immutable, and the re-send every 3 s of 10,000
 * of them would otherwise work every key out again when the peer confirms them.
 */
function keyOf(f: Forward): PortKey {
  let key = keys.get(f);
  if (key === undefined) {
    key = portKey(f);
    keys.set(f, key);
  }
  return key;
}

/** The pure reconcile step of the vtunnel sink. */
export function reconcileVtunnel(s: VtunnelState, input: VtunnelInput, config: VtunnelConfig): VtunnelStep {
  if (s.done) return { state: s, commands: [] };
  switch (input.kind) {
    case 'delta':
      return startRound(applyDelta(s, input.delta));
    case 'delivered':
      return { state: { ...s, onHost: sharedUpdate(s.onHost, input.forwards.map((f) => [keyOf(f), input.remove ? undefined : f])) }, commands: [] };
    case 'sent':
      return succeeded(s, config);
    case 'failed':
      return failed(s, input.error, input.random, config);
    case 'stop':
      return startWithdraw(s, config);
    case 'timer':
      return timerFired(s, input.timer, config);
  }
}

function applyDelta(s: VtunnelState, delta: PortDelta): VtunnelState {
  const changes: [PortKey, Forward | undefined][] = [
    ...delta.removed.map((f): [PortKey, undefined] => [keyOf(f), undefined]),
    ...delta.added.map((f): [PortKey, Forward] => [keyOf(f), f]),
  ];
  return { ...s, desired: sharedUpdate(s.desired, changes), dirty: new Set([...s.dirty, ...changes.map(([key]) => key)]) };
}

/** Starts the next round if one is due and none is in flight or waiting out a back-off. */
function startRound(s: VtunnelState): VtunnelStep {
  if (s.inFlight !== undefined || s.retrying) return { state: s, commands: [] };
  const round = roundOf(s);
  if (round.removes.length === 0 && round.adds.length === 0) {
    const synced: VtunnelState = { ...s, inSync: true, dirty: new Set() };
    if (s.withdrawing === undefined) return { state: synced, commands: [] };
    const report: SinkReport = { sink: 'vtunnel', type: 'withdrawn', count: s.withdrawing.removed };
    return { state: { ...synced, done: true }, commands: [{ kind: 'report', report }, { kind: 'done' }] };
  }
  const state: VtunnelState = {
    ...s,
    inFlight: { round, withdraw: s.withdrawing !== undefined, resync: s.resyncing },
    resyncing: false,
    resyncArmed: false,
    dirty: new Set(),
  };
  const cancel: VtunnelCommand[] = s.resyncArmed ? [{ kind: 'timer', timer: 'resync', ms: undefined }] : [];
  return { state, commands: [...cancel, { kind: 'send', round }] };
}

/** Once idle and in sync with something published, schedule the next full re-send. */
function armResync(s: VtunnelState, config: VtunnelConfig): VtunnelStep {
  const idle = s.inFlight === undefined && !s.retrying && s.withdrawing === undefined && !s.done;
  if (config.resyncMs <= 0 || !idle || s.desired.size === 0) return { state: s, commands: [] };
  return { state: { ...s, resyncArmed: true }, commands: [{ kind: 'timer', timer: 'resync', ms: config.resyncMs }] };
}

function succeeded(s: VtunnelState, config: VtunnelConfig): VtunnelStep {
  const flight = s.inFlight;
  if (flight === undefined) return { state: s, commands: [] };
  const { round } = flight;
  const commands: VtunnelCommand[] = [];
  if (s.failures > 0) {
    commands.push(log('info', { address: config.address, forwards: round.adds.length, removed: round.removes.length, failures: s.failures }, `reached the vtunnel peer again; re-sent ${count(round.adds.length, 'forward')}`));
  }
  let withdrawing = s.withdrawing;
  if (flight.withdraw && withdrawing) withdrawing = { removed: withdrawing.removed + round.removes.length };
  else if (flight.resync && round.removes.length === 0) commands.push(report({ sink: 'vtunnel', type: 'resent', count: round.adds.length }));
  else commands.push(report({ sink: 'vtunnel', type: 'wrote', added: round.adds, removed: round.removes }));
  const state: VtunnelState = { ...s, inFlight: undefined, failures: 0, attempt: 0, lastError: '', inSync: true, withdrawing };
  return then({ state, commands }, startRound, (next) => armResync(next, config));
}

function failed(s: VtunnelState, error: string, random: number, config: VtunnelConfig): VtunnelStep {
  const round = s.inFlight?.round ?? { removes: [], adds: [] };
  const failures = s.failures + 1;
  const attempt = s.attempt + 1;
  const retryInMs = jitteredDelay(attempt, config.backoff, () => random);
  const ports = round.adds.length + round.removes.length;
  const state: VtunnelState = {
    ...s,
    // The adds may or may not have arrived: count them as possibly on the host.
    onHost: sharedUpdate(s.onHost, round.adds.map((f) => [keyOf(f), f])),
    inFlight: undefined,
    inSync: false,
    failures,
    attempt,
    lastError: error,
    retrying: true,
  };
  // The first failure of an outage is news; its repeats are not.
  const line = log(
    failures === 1 ? 'warn' : 'debug',
    { address: config.address, err: error, ports, failures, retryInMs },
    `could not ${describeRound(round)} over the vtunnel (${config.address}): ${error}; retrying in ${String(retryInMs)} ms`,
  );
  return { state, commands: [line, report({ sink: 'vtunnel', type: 'failed', error, retryInMs }), { kind: 'timer', timer: 'retry', ms: retryInMs }] };
}

function startWithdraw(s: VtunnelState, config: VtunnelConfig): VtunnelStep {
  const commands: VtunnelCommand[] = [];
  if (s.resyncArmed) commands.push({ kind: 'timer', timer: 'resync', ms: undefined });
  // Shutdown should not sit out a long back-off: try now, and back off afresh from here.
  if (s.retrying) commands.push({ kind: 'timer', timer: 'retry', ms: undefined });
  commands.push({ kind: 'timer', timer: 'deadline', ms: config.withdrawTimeoutMs });
  const state: VtunnelState = {
    ...s,
    desired: emptyShared(),
    dirty: new Set([...s.dirty, ...sharedEntries(s.desired).map(([key]) => key)]),
    resyncArmed: false,
    retrying: false,
    attempt: 0,
    withdrawing: { removed: 0 },
  };
  // An in-flight round finishes first (its adds must not overtake our removes); then the next.
  return then({ state, commands }, startRound);
}

function timerFired(s: VtunnelState, timer: VtunnelTimer, config: VtunnelConfig): VtunnelStep {
  if (timer === 'retry') return s.retrying ? startRound({ ...s, retrying: false }) : { state: s, commands: [] };
  if (timer === 'resync') return s.resyncArmed ? startRound({ ...s, resyncArmed: false, inSync: false, resyncing: true }) : { state: s, commands: [] };
  return gaveUp(s, config);
}

/** The withdrawal deadline passed: what may still be on the host stays there. */
function gaveUp(s: VtunnelState, config: VtunnelConfig): VtunnelStep {
  const left = sharedValues(s.onHost);
  const { address, withdrawTimeoutMs } = config;
  const lastError = s.lastError;
  const line = log(
    'warn',
    { address, forwards: left.length, err: lastError },
    `gave up withdrawing ${count(left.length, 'forward')} from the vtunnel peer (${address}) after ${String(withdrawTimeoutMs)} ms` +
      `${lastError ? ` (last error: ${lastError})` : ''}; the host may keep them until it restarts`,
  );
  const abandoned = report({ sink: 'vtunnel', type: 'abandoned', count: left.length, forwards: left, error: lastError || `no answer within ${String(withdrawTimeoutMs)} ms` });
  return { state: { ...s, done: true }, commands: [line, abandoned, { kind: 'done' }] };
}

/** Runs the steps after `first` in turn, each on the state the one before left, joining their commands. */
function then(first: VtunnelStep, ...rest: ((s: VtunnelState) => VtunnelStep)[]): VtunnelStep {
  return rest.reduce<VtunnelStep>((acc, step) => {
    const next = step(acc.state);
    return { state: next.state, commands: [...acc.commands, ...next.commands] };
  }, first);
}

function report(r: SinkReport): VtunnelCommand {
  return { kind: 'report', report: r };
}

function log(level: 'debug' | 'info' | 'warn', fields: Readonly<Record<string, unknown>>, msg: string): VtunnelCommand {
  return { kind: 'log', level, fields, msg };
}

function describeRound({ removes, adds }: Round): string {
  const parts: string[] = [];
  if (removes.length > 0) parts.push(`remove ${count(removes.length, 'port')}`);
  if (adds.length > 0) parts.push(`add ${count(adds.length, 'port')}`);
  return parts.join(' and ');
}

function count(n: number, noun: string): string {
  return `${String(n)} ${noun}${n === 1 ? '' : 's'}`;
}
