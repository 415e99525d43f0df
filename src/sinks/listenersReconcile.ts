import type { LogCommand } from '../reconcileLoop.js';
import { jitteredDelay } from '../backoff.js';
import { portKey, type Forward, type PortDelta, type PortKey } from '../model.js';
import type { SinkReport } from './sink.js';
import { emptyShared, sharedGet, sharedUpdate, sharedEntries, type SharedMap } from '../sharedMap.js';

/**
 * The listener sink's decisions, as a pure function: `reconcileListeners(state, input)` gives
 * the next state and the commands to carry out (hold a placeholder, wait before trying one again,
 * close one, report, log, finish). `listenerSink` (listeners.ts) runs them, one `switchMap` per
 * port, and feeds back what the binder said.
 */

/** What the listener reducer needs to know of its options: retry timing. */
export interface ListenerConfig {
  /** How long to wait before trying a port again that could not be bound. */
  readonly retryMs: number;
  /** Each wait is scaled by a random factor in [1 - jitter, 1 + jitter]. */
  readonly jitter: number;
}

/** Why a bind failed, as data: the error's `code` (EADDRINUSE, ...) and its text. */
export interface BindFailure {
  readonly code: string | undefined;
  readonly message: string;
}

/** What the listener reducer is told: a delta, a placeholder that listens or failed to bind, a retry timer, or the stop. */
export type ListenerInput =
  | { readonly kind: 'delta'; readonly delta: PortDelta }
  | { readonly kind: 'stop' }
  | { readonly kind: 'bound'; readonly key: PortKey; readonly gen: number }
  /** `random` in [0, 1) is the jitter draw for the wait. */
  | { readonly kind: 'bindFailed'; readonly key: PortKey; readonly gen: number; readonly failure: BindFailure; readonly random: number }
  | { readonly kind: 'retry'; readonly key: PortKey; readonly gen: number };

/** `gen` tells one hold of a port from the next, so an answer to a closed one is ignored. */
export type ListenerCommand =
  | { readonly kind: 'hold'; readonly key: PortKey; readonly gen: number; readonly forward: Forward }
  | { readonly kind: 'wait'; readonly key: PortKey; readonly gen: number; readonly ms: number }
  | { readonly kind: 'close'; readonly key: PortKey }
  | { readonly kind: 'report'; readonly report: SinkReport }
  | LogCommand
  | { readonly kind: 'done' };

interface Placeholder {
  readonly forward: Forward;
  readonly gen: number;
  /** The streak of failures this placeholder is in (its description): reported once, not on every retry. */
  readonly failing: string | undefined;
}

/** The placeholders the listener sink holds, by port key, and whether it is stopping. */
export interface ListenerState {
  readonly held: SharedMap<PortKey, Placeholder>;
  readonly nextGen: number;
  readonly done: boolean;
}

/** One step of the listener reducer: the next state and the commands to run. */
export interface ListenerStep {
  readonly state: ListenerState;
  readonly commands: readonly ListenerCommand[];
}

/** The listener reducer's state before its first input: no placeholder held. */
export const initialListenerState: ListenerState = { held: emptyShared(), nextGen: 1, done: false };

const sink = 'listeners';

/** The pure reconcile step of the listener sink. */
export function reconcileListeners(s: ListenerState, input: ListenerInput, config: ListenerConfig): ListenerStep {
  if (s.done) return { state: s, commands: [] };
  switch (input.kind) {
    case 'delta':
      return applyDelta(s, input.delta);
    case 'stop':
      return withdraw(s);
    case 'bound': {
      const p = current(s, input);
      if (p?.failing === undefined) return { state: s, commands: [] };
      const line = log('info', { port: input.key }, `${input.key}: placeholder listening now`);
      return { state: withPlaceholder(s, input.key, { ...p, failing: undefined }), commands: [line] };
    }
    case 'bindFailed':
      return bindFailed(s, input, config);
    case 'retry': {
      const p = current(s, input);
      return { state: s, commands: p ? [{ kind: 'hold', key: input.key, gen: p.gen, forward: p.forward }] : [] };
    }
  }
}

/** Removed placeholders close at once; an added one replaces whatever held its port. */
function applyDelta(s: ListenerState, delta: PortDelta): ListenerStep {
  const commands: ListenerCommand[] = [];
  const changes: [PortKey, Placeholder | undefined][] = [];
  let gen = s.nextGen;
  for (const f of delta.removed) {
    const key = portKey(f);
    if (sharedGet(s.held, key) !== undefined) commands.push({ kind: 'close', key });
    changes.push([key, undefined]);
  }
  for (const forward of delta.added) {
    const key = portKey(forward);
    const there = changes.findLast(([k]) => k === key);
    if (there ? there[1] !== undefined : sharedGet(s.held, key) !== undefined) commands.push({ kind: 'close', key });
    commands.push({ kind: 'hold', key, gen, forward });
    changes.push([key, { forward, gen, failing: undefined }]);
    gen += 1;
  }
  commands.push({ kind: 'report', report: { sink, type: 'wrote', added: delta.added, removed: delta.removed } });
  return { state: { ...s, held: sharedUpdate(s.held, changes), nextGen: gen }, commands };
}

/**
 * A port already in use is not an error (something in the VM listens there, which is all WSL
 * needs): noted once per streak. Any other failure is warned about and reported once per streak.
 * Either way the port is tried again after `retryMs`.
 */
function bindFailed(s: ListenerState, input: Extract<ListenerInput, { kind: 'bindFailed' }>, config: ListenerConfig): ListenerStep {
  const p = current(s, input);
  if (p === undefined) return { state: s, commands: [] };
  const { key } = input;
  const delayMs = jitteredDelay(1, { initialMs: config.retryMs, maxMs: config.retryMs, jitter: config.jitter }, () => input.random);
  const what = describeBindFailure(input.failure);
  const first = p.failing !== what;
  const commands: ListenerCommand[] = [];
  if (input.failure.code === 'EADDRINUSE') {
    if (first) commands.push(log('info', { port: key }, `${key} is in use already (something in the VM listens there, which is all WSL needs); taking it when it frees up`));
    else commands.push(log('debug', { port: key }, `${key} is still in use; trying again in ${String(delayMs)} ms`));
  } else if (first) {
    commands.push(log('warn', { port: key }, `cannot open a placeholder on ${key} (${what}); trying again every ${String(config.retryMs)} ms`));
    commands.push({ kind: 'report', report: { sink, type: 'failed', error: `${key}: ${what}`, retryInMs: delayMs } });
  }
  commands.push({ kind: 'wait', key, gen: p.gen, ms: delayMs });
  return { state: withPlaceholder(s, key, { ...p, failing: what }), commands };
}

function withdraw(s: ListenerState): ListenerStep {
  const held = sharedEntries(s.held);
  const commands: ListenerCommand[] = held.map(([key]) => ({ kind: 'close', key }));
  const count = held.length;
  if (count > 0) commands.push(log('info', {}, `closed ${String(count)} placeholder listener${count === 1 ? '' : 's'}`));
  commands.push({ kind: 'report', report: { sink, type: 'withdrawn', count } }, { kind: 'done' });
  return { state: { held: emptyShared(), nextGen: s.nextGen, done: true }, commands };
}

/** The placeholder an answer is about, unless it was closed or replaced since. */
function current(s: ListenerState, input: { readonly key: PortKey; readonly gen: number }): Placeholder | undefined {
  const p = sharedGet(s.held, input.key);
  return p?.gen === input.gen ? p : undefined;
}

function withPlaceholder(s: ListenerState, key: PortKey, p: Placeholder): ListenerState {
  return { ...s, held: sharedUpdate(s.held, [[key, p]]) };
}

function log(level: 'debug' | 'info' | 'warn', fields: Readonly<Record<string, unknown>>, msg: string): ListenerCommand {
  return { kind: 'log', level, fields, msg };
}

/** A bind failure in words for a log line: the errno code and what it means for a placeholder. */
export function describeBindFailure({ code, message }: BindFailure): string {
  return code !== undefined && !message.includes(code) ? `${code}: ${message}` : message;
}
