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
  readonly listening: boolean;
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
    case 'mapping': {
      const { mapping, local } = input;
      const commands: BindingCommand[] = [];
      let state = s;
      for (const binding of mapping.bindings) {
        const step = mapping.remove ? remove(state, binding) : add(state, binding, mapping, local);
        state = step.state;
        commands.push(...step.commands);
      }
      return { state, commands };
    }
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
 * An add: a binding with no usable VM address, or one that would forward to this host itself,
 * is skipped (said once per reason); one that exists is left alone unless its VM address changed
 * (then new connections go to the new one, and nothing is closed); a new one is opened.
 */
function add(s: BindingState, binding: HostBinding, mapping: PortMapping, local: ReadonlySet<string>): BindingStep {
  const key = bindingKey(binding);
  const target = targetFor(binding, mapping.connectAddrs);
  if (target === undefined) {
    const family = binding.hostIp.includes(':') ? 'IPv6' : 'IPv4';
    return skip(s, key, `the VM sent no usable ${family} connect address (${mapping.connectAddrs.map((a) => `${a.ip}/${String(a.prefix)}`).join(', ') || 'none'})`);
  }
  if (loopsBack(binding, target, local)) {
    return skip(s, key, `its VM address ${target} is this host's own, so ${hostPort(binding.hostIp, binding.hostPort)} would forward to itself`);
  }
  const unskipped: BindingState = sharedGet(s.skipped, key) === undefined ? s : { ...s, skipped: sharedUpdate(s.skipped, [[key, undefined]]) };
  const existing = sharedGet(s.active, key);
  if (existing?.target === target) return { state: unskipped, commands: [log('debug', { key }, `${key} is already bound; nothing to do`)] };
  if (existing) {
    const line = log('info', { key, from: existing.target, to: target }, `${key}: the VM address changed from ${existing.target} to ${target}; new connections go there`);
    return { state: { ...unskipped, active: sharedUpdate(s.active, [[key, { ...existing, target }]]) }, commands: [line, event({ type: 'retargeted', key, target })] };
  }
  const entry: ActiveBinding = { binding, target, gen: s.nextGen, listening: false, attempt: 0 };
  return { state: { ...unskipped, active: sharedUpdate(s.active, [[key, entry]]), nextGen: s.nextGen + 1 }, commands: [{ kind: 'open', key, gen: entry.gen, binding }] };
}

/** One warning per binding and reason, not one per re-send of the same add. */
function skip(s: BindingState, key: string, reason: string): BindingStep {
  if (sharedGet(s.skipped, key) === reason) return { state: s, commands: [log('debug', { key }, `still skipping ${key}: ${reason}`)] };
  return { state: { ...s, skipped: sharedUpdate(s.skipped, [[key, reason]]) }, commands: [log('warn', { key }, `skipping ${key}: ${reason}`), event({ type: 'skipped', key, reason })] };
}

/** A remove closes the proxy and its connections; a remove of an unknown binding is fine. */
function remove(s: BindingState, binding: HostBinding): BindingStep {
  const key = bindingKey(binding);
  const state = sharedGet(s.skipped, key) === undefined ? s : { ...s, skipped: sharedUpdate(s.skipped, [[key, undefined]]) };
  if (sharedGet(s.active, key) === undefined) return { state, commands: [log('debug', { key }, `${key} is not bound; nothing to remove`)] };
  return {
    state: { ...state, active: sharedUpdate(s.active, [[key, undefined]]) },
    commands: [
      { kind: 'close', key },
      log('info', { key }, `closed ${hostPort(binding.hostIp, binding.hostPort)} (${binding.protocol}) and its connections`),
      event({ type: 'unbound', key }),
    ],
  };
}

function listening(s: BindingState, input: { readonly key: string; readonly gen: number }): BindingStep {
  const entry = current(s, input);
  if (!entry || entry.listening) return none(s);
  const { binding, target, attempt } = entry;
  const line = log(
    'info',
    { key: input.key, target, retries: attempt },
    `listening on ${hostPort(binding.hostIp, binding.hostPort)} (${binding.protocol}), forwarding to ${hostPort(target, binding.hostPort)}` +
      (attempt > 0 ? ` after ${String(attempt)} ${attempt === 1 ? 'retry' : 'retries'}` : ''),
  );
  const state = { ...s, active: sharedUpdate(s.active, [[input.key, { ...entry, listening: true, attempt: 0 }]]) };
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
  const state = { ...s, active: sharedUpdate(s.active, [[key, { ...entry, listening: false, attempt }]]) };
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
