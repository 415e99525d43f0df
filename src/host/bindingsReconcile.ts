import type { LogCommand } from '../reconcileLoop.js';
import { jitteredDelay, type Backoff } from '../backoff.js';
import { emptyShared, sharedEntries, sharedGet, sharedUpdate, type SharedMap } from '../sharedMap.js';
import type { HostBinding, PortMapping } from '../wire/parsePortMapping.js';
import { bindingKey, hostPort, loopsBack, targetFor } from './targets.js';

/**
 * The host side's binding manager as a pure function: `reconcileBindings(state, input)` gives the
 * next state and the commands to carry out (open a proxy, wait before opening it again, close it,
 * tell an event, log, finish). `manageBindings` (bindings.ts) runs them, one `switchMap` per
 * binding, and feeds back what each proxy did.
 */

/** What happened to the host's bindings, for logs, tests and library users. */
export type BindingEvent =
  | { readonly type: 'bound'; readonly key: string; readonly binding: HostBinding; readonly target: string }
  | { readonly type: 'retargeted'; readonly key: string; readonly target: string }
  | {
      readonly type: 'conflict';
      readonly key: string;
      readonly binding: HostBinding;
      readonly target: string;
      readonly error: string;
      readonly retryInMs: number;
    }
  | { readonly type: 'unbound'; readonly key: string }
  | { readonly type: 'skipped'; readonly key: string; readonly reason: string };

/** What the host side's binding reducer is told: a PortMapping, a proxy that listens, failed or ended, a retry timer, or the stop. */
export type BindingInput =
  /** A message; `local` is this host's own addresses (asked for every add message). */
  | { readonly kind: 'mapping'; readonly mapping: PortMapping; readonly local: ReadonlySet<string> }
  | { readonly kind: 'listening'; readonly key: string; readonly gen: number }
  /** `random` in [0, 1) is the jitter draw for the back-off. */
  | { readonly kind: 'openFailed'; readonly key: string; readonly gen: number; readonly error: string; readonly random: number }
  | { readonly kind: 'retry'; readonly key: string; readonly gen: number }
  /** The proxy completed by itself (it should not). */
  | { readonly kind: 'ended'; readonly key: string; readonly gen: number }
  | { readonly kind: 'stop' };

/** What the binding reducer asks for: open or close a proxy, wait before a retry, tell an event, log, or finish. */
export type BindingCommand =
  | { readonly kind: 'open'; readonly key: string; readonly gen: number; readonly binding: HostBinding }
  | { readonly kind: 'wait'; readonly key: string; readonly gen: number; readonly ms: number }
  | { readonly kind: 'close'; readonly key: string }
  | { readonly kind: 'event'; readonly event: BindingEvent }
  | LogCommand
  | { readonly kind: 'done' };

/** A binding the host side holds: where it forwards to, whether it listens, and the generation that tells a stale answer from a current one. */
export interface ActiveBinding {
  readonly binding: HostBinding;
  /** The VM address new connections go to. */
  readonly target: string;
  readonly gen: number;
  /** Failed opens since it last listened. */
  readonly attempt: number;
}

/** Everything the binding reducer knows: the bindings held, those skipped and why, and whether it is stopping. */
export interface BindingState {
  readonly active: SharedMap<string, ActiveBinding>;
  /** Bindings skipped, with why: the agent re-sends its whole state every few seconds. */
  readonly skipped: SharedMap<string, string>;
  readonly nextGen: number;
  readonly done: boolean;
}

/** One step of the binding reducer: the next state and the commands to run. */
export interface BindingStep {
  readonly state: BindingState;
  readonly commands: readonly BindingCommand[];
}

/** The binding reducer's state before anything was asked of it. */
export const initialBindingState: BindingState = { active: emptyShared(), skipped: emptyShared(), nextGen: 1, done: false };

const none = (state: BindingState): BindingStep => ({ state, commands: [] });

/** The pure reconcile step of the host side. */
export function reconcileBindings(s: BindingState, input: BindingInput, backoff?: Backoff): BindingStep {
  if (s.done) return none(s);
  switch (input.kind) {
    case 'mapping':
      return applyMapping(s, input.mapping, input.local);
    case 'listening':
      return listening(s, input);
    case 'openFailed':
      return openFailed(s, input, backoff);
    case 'retry': {
      const entry = current(s, input);
      return { state: s, commands: entry ? [{ kind: 'open', key: input.key, gen: entry.gen, binding: entry.binding }] : [] };
    }
    case 'ended': {
      // A proxy never ends by itself; if one does, forget it so the next add opens it again.
      if (!current(s, input)) return none(s);
      const line = log('warn', { key: input.key }, `the proxy for ${input.key} stopped by itself; a new add will open it again`);
      return { state: { ...s, active: sharedUpdate(s.active, [[input.key, undefined]]) }, commands: [{ kind: 'close', key: input.key }, line, event({ type: 'unbound', key: input.key })] };
    }
    case 'stop': {
      const closes = sharedEntries(s.active).map(([key]): BindingCommand => ({ kind: 'close', key }));
      return { state: { ...initialBindingState, nextGen: s.nextGen, done: true }, commands: [...closes, { kind: 'done' }] };
    }
  }
}

/**
 * The bindings of one message, applied in turn against a draft of the state: each sees what the
 * ones before it changed (a message may name a binding twice), and the changes reach the shared
 * maps in one update each at the end, not one per binding (1,600 bindings come in two messages).
 */
function applyMapping(s: BindingState, mapping: PortMapping, local: ReadonlySet<string>): BindingStep {
  const draft = new Draft(s);
  const commands: BindingCommand[] = [];
  for (const binding of mapping.bindings) commands.push(...(mapping.remove ? remove(draft, binding) : add(draft, binding, mapping, local)));
  return { state: draft.commit(), commands };
}

/** A state being changed by one message: reads see the writes so far. Local to `applyMapping`. */
class Draft {
  private readonly active = new Map<string, ActiveBinding | undefined>();
  private readonly skipped = new Map<string, string | undefined>();
  private nextGen: number;

  constructor(private readonly base: BindingState) {
    this.nextGen = base.nextGen;
  }

  activeAt(key: string): ActiveBinding | undefined {
    return this.active.has(key) ? this.active.get(key) : sharedGet(this.base.active, key);
  }

  skippedAt(key: string): string | undefined {
    return this.skipped.has(key) ? this.skipped.get(key) : sharedGet(this.base.skipped, key);
  }

  setActive(key: string, entry: ActiveBinding | undefined): void {
    this.active.set(key, entry);
  }

  setSkipped(key: string, reason: string | undefined): void {
    this.skipped.set(key, reason);
  }

  /** The generation for a newly opened binding. */
  takeGen(): number {
    return this.nextGen++;
  }

  commit(): BindingState {
    return {
      ...this.base,
      active: sharedUpdate(this.base.active, this.active),
      skipped: sharedUpdate(this.base.skipped, this.skipped),
      nextGen: this.nextGen,
    };
  }
}

/**
 * An add: a binding with no usable VM address, or one that would forward to this host itself,
 * is skipped (said once per reason); one that exists is left alone unless its VM address changed
 * (then new connections go to the new one, and nothing is closed); a new one is opened.
 */
function add(d: Draft, binding: HostBinding, mapping: PortMapping, local: ReadonlySet<string>): BindingCommand[] {
  const key = bindingKey(binding);
  const target = targetFor(binding, mapping.connectAddrs);
  if (target === undefined) {
    const family = binding.hostIp.includes(':') ? 'IPv6' : 'IPv4';
    return skip(d, key, `the VM sent no usable ${family} connect address (${mapping.connectAddrs.map((a) => `${a.ip}/${String(a.prefix)}`).join(', ') || 'none'})`);
  }
  if (loopsBack(binding, target, local)) {
    return skip(d, key, `its VM address ${target} is this host's own, so ${hostPort(binding.hostIp, binding.hostPort)} would forward to itself`);
  }
  if (d.skippedAt(key) !== undefined) d.setSkipped(key, undefined);
  const existing = d.activeAt(key);
  if (existing?.target === target) return [log('debug', { key }, `${key} is already bound; nothing to do`)];
  if (existing) {
    d.setActive(key, { ...existing, target });
    return [log('info', { key, from: existing.target, to: target }, `${key}: the VM address changed from ${existing.target} to ${target}; new connections go there`), event({ type: 'retargeted', key, target })];
  }
  const entry: ActiveBinding = { binding, target, gen: d.takeGen(), attempt: 0 };
  d.setActive(key, entry);
  return [{ kind: 'open', key, gen: entry.gen, binding }];
}

/** One warning per binding and reason, not one per re-send of the same add. */
function skip(d: Draft, key: string, reason: string): BindingCommand[] {
  if (d.skippedAt(key) === reason) return [log('debug', { key }, `still skipping ${key}: ${reason}`)];
  d.setSkipped(key, reason);
  return [log('warn', { key }, `skipping ${key}: ${reason}`), event({ type: 'skipped', key, reason })];
}

/** A remove closes the proxy and its connections; a remove of an unknown binding is fine. */
function remove(d: Draft, binding: HostBinding): BindingCommand[] {
  const key = bindingKey(binding);
  if (d.skippedAt(key) !== undefined) d.setSkipped(key, undefined);
  if (d.activeAt(key) === undefined) return [log('debug', { key }, `${key} is not bound; nothing to remove`)];
  d.setActive(key, undefined);
  return [{ kind: 'close', key }, log('info', { key }, `closed ${hostPort(binding.hostIp, binding.hostPort)} (${binding.protocol}) and its connections`), event({ type: 'unbound', key })];
}

function listening(s: BindingState, input: { readonly key: string; readonly gen: number }): BindingStep {
  const entry = current(s, input);
  if (!entry) return none(s);
  const { binding, target, attempt } = entry;
  const line = log(
    'info',
    { key: input.key, target, retries: attempt },
    `listening on ${hostPort(binding.hostIp, binding.hostPort)} (${binding.protocol}), forwarding to ${hostPort(target, binding.hostPort)}` +
      (attempt > 0 ? ` after ${String(attempt)} ${attempt === 1 ? 'retry' : 'retries'}` : ''),
  );
  // Each open says it listens once, so only a count of failures needs clearing: the common
  // case, a first open that works, leaves the state as it is (1,600 bindings at once make 1,600
  // of these).
  const state = attempt === 0 ? s : { ...s, active: sharedUpdate(s.active, [[input.key, { ...entry, attempt: 0 }]]) };
  return { state, commands: [line, event({ type: 'bound', key: input.key, binding, target })] };
}

/** A listen that fails (the host port is taken) is retried with back-off until it works or the binding is removed. */
function openFailed(s: BindingState, input: Extract<BindingInput, { kind: 'openFailed' }>, backoff: Backoff | undefined): BindingStep {
  const entry = current(s, input);
  if (!entry) return none(s);
  const { key, error } = input;
  const { binding, target } = entry;
  const attempt = entry.attempt + 1;
  const retryInMs = jitteredDelay(attempt, backoff, () => input.random);
  const line = log(
    attempt === 1 ? 'warn' : 'debug',
    { key, err: error, attempt, retryInMs },
    `cannot listen on ${hostPort(binding.hostIp, binding.hostPort)} (${binding.protocol}): ${error}; retrying in ${String(retryInMs)} ms until it is free or removed`,
  );
  const state = { ...s, active: sharedUpdate(s.active, [[key, { ...entry, attempt }]]) };
  return { state, commands: [line, event({ type: 'conflict', key, binding, target, error, retryInMs }), { kind: 'wait', key, gen: entry.gen, ms: retryInMs }] };
}

/** The binding an answer is about, unless it was closed or opened again since. */
function current(s: BindingState, input: { readonly key: string; readonly gen: number }): ActiveBinding | undefined {
  const entry = sharedGet(s.active, input.key);
  return entry?.gen === input.gen ? entry : undefined;
}

function event(e: BindingEvent): BindingCommand {
  return { kind: 'event', event: e };
}

function log(level: 'debug' | 'info' | 'warn', fields: Readonly<Record<string, unknown>>, msg: string): BindingCommand {
  return { kind: 'log', level, fields, msg };
}
