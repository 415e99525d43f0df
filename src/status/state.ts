import { defer, map, scan, type OperatorFunction } from 'rxjs';
import { portKey, type Forward, type PortDelta, type PortKey } from '../model.js';
import type { SinkReport } from '../sinks/sink.js';
import { ShardedMap, type ShardedMapEdit } from './shardedMap.js';

/**
 * The agent's status as a fold of what passes through it: which forwards it holds, who claims
 * each, how far each sink has got with it, and whether each source and sink is healthy.
 * `reduceStatus` is pure (it never changes the state it is given), so every step is a value a
 * marble test can compare. Times are the scheduler's milliseconds (epoch ms outside tests).
 */

/** Where one forward stands with one sink. */
export interface SinkForwardState {
  readonly state: 'pending' | 'applied' | 'failed';
  /** The sink is taking it off the host (its sources gave it up) rather than putting it there. */
  readonly removing: boolean;
  /** When it entered this state (for `failed`: when the last error came). */
  readonly since: number;
  /** `failed` only: the sink's last error. */
  readonly error?: string;
}

/** One forward as the agent holds it: the sources that claim it and, per sink, where it stands. */
export interface ForwardStatus {
  readonly key: PortKey;
  /** As published: the first claim's forward, as the merge of sources keeps it. */
  readonly forward: Forward;
  /** The sources that claim it now (none while sinks are still removing it). */
  readonly sources: readonly string[];
  /** When a source last claimed or gave it up: the start of what the sinks then do. */
  readonly changedAt: number;
  readonly sinks: Readonly<Record<string, SinkForwardState>>;
}

/** One source: whether it is connected, the last error, and how many events and reconnects it has had. */
export interface SourceStatus {
  readonly connected: boolean;
  /** When `connected` last changed (undefined: never connected nor failed yet). */
  readonly since?: number;
  readonly lastError?: string;
  readonly lastErrorAt?: number;
  /** Raw events seen. */
  readonly events: number;
  /** Times it backed off to reconnect. */
  readonly reconnects: number;
  /** Forwards it claims now. */
  readonly forwards: number;
}

/** One sink: whether it is in sync with what it was given, its last error, and its writes and failures. */
export interface SinkStatus {
  /** Nothing pending or failed, and its last write did not fail. */
  readonly inSync: boolean;
  /** Its last whole write failed (a failure that named no forwards). */
  readonly failing: boolean;
  readonly lastError?: string;
  readonly lastErrorAt?: number;
  readonly writes: number;
  readonly failures: number;
  /** Forwards it has applied. */
  readonly applied: number;
  /** The forwards it has not settled, and whether each is pending or failed. */
  readonly unsettled: ReadonlyMap<PortKey, Unsettled>;
}

/** The states of a forward in a sink that are not yet applied. */
export type Unsettled = 'pending' | 'failed';

/** Everything the agent holds: its forwards, its sources and its sinks. */
export interface AgentStatus {
  readonly forwards: ReadonlyMap<PortKey, ForwardStatus>;
  readonly sources: Readonly<Record<string, SourceStatus>>;
  readonly sinks: Readonly<Record<string, SinkStatus>>;
}

/** One thing that happened, stamped with when. */
export type StatusInput =
  | { readonly type: 'start'; readonly at: number; readonly sources: readonly string[]; readonly sinks: readonly string[] }
  | { readonly type: 'event'; readonly at: number; readonly source: string }
  | { readonly type: 'connected'; readonly at: number; readonly source: string }
  | { readonly type: 'disconnected'; readonly at: number; readonly source: string; readonly error: string }
  | { readonly type: 'claims'; readonly at: number; readonly source: string; readonly delta: PortDelta }
  | { readonly type: 'routed'; readonly at: number; readonly sink: string; readonly delta: PortDelta }
  | { readonly type: 'report'; readonly at: number; readonly sink: string; readonly report: SinkReport };

/** A forward a sink settled, and how long after the source's change: for the latency histogram. */
export interface Settled {
  readonly sink: string;
  readonly ms: number;
}

/** One step of the status fold: the next state and what settled in it (for the latency histogram). */
export interface StatusStep {
  readonly status: AgentStatus;
  /** What this step settled (applied or removed); empty for most steps. */
  readonly settled: readonly Settled[];
}

/** The status of an agent that has seen nothing yet. */
export const emptyStatus: AgentStatus = { forwards: ShardedMap.empty(), sources: {}, sinks: {} };

const newSource: SourceStatus = { connected: false, events: 0, reconnects: 0, forwards: 0 };
const newSink: SinkStatus = { inSync: true, failing: false, writes: 0, failures: 0, applied: 0, unsettled: ShardedMap.empty() };

/**
 * Folds inputs into status steps, from `seed` (a fresh fold per subscription).
 *
 *   inputs:  --s--c--r--w--      s = start, c = claims(+80), r = routed(+80), w = wrote(+80)
 *   steps:   --a--b--c--d--      80 unknown → claimed → pending → applied (settled: ms since c)
 */
export function foldStatus(seed: AgentStatus = emptyStatus): OperatorFunction<StatusInput, StatusStep> {
  return (inputs$) =>
    defer(() => inputs$.pipe(scan((step: StatusStep, input: StatusInput) => reduceStatus(step.status, input), { status: seed, settled: [] })));
}

/** The status alone, step by step. */
export function statusOf(): OperatorFunction<StatusInput, AgentStatus> {
  return (inputs$) => inputs$.pipe(foldStatus(), map((step) => step.status));
}

/** The status after `input`, and what it settled. Pure: `state` is left as it was. */
export function reduceStatus(state: AgentStatus, input: StatusInput): StatusStep {
  return reduceStatusAll(state, [input]);
}

/**
 * The status after all of `inputs`, in order: the same as reducing them one by one, but each
 * shard of the forwards is copied at most once for the lot (one event is four inputs).
 */
export function reduceStatusAll(state: AgentStatus, inputs: readonly StatusInput[]): StatusStep {
  const draft = new Draft(state);
  for (const input of inputs) apply(draft, input);
  return draft.done();
}

function apply(draft: Draft, input: StatusInput): void {
  switch (input.type) {
    case 'start':
      for (const name of input.sources) draft.source(name);
      for (const name of input.sinks) draft.sink(name);
      break;
    case 'event':
      draft.updateSource(input.source, (s) => ({ ...s, events: s.events + 1 }));
      break;
    case 'connected':
      draft.updateSource(input.source, (s) => (s.connected ? s : { ...s, connected: true, since: input.at }));
      break;
    case 'disconnected':
      draft.updateSource(input.source, (s) => ({
        ...s,
        connected: false,
        since: s.connected || s.since === undefined ? input.at : s.since,
        lastError: input.error,
        lastErrorAt: input.at,
        reconnects: s.reconnects + 1,
      }));
      break;
    case 'claims':
      applyClaims(draft, input.source, input.delta, input.at);
      break;
    case 'routed':
      applyRouted(draft, input.sink, input.delta, input.at);
      break;
    case 'report':
      applyReport(draft, input.sink, input.report, input.at);
      break;
  }
}

function applyClaims(draft: Draft, source: string, delta: PortDelta, at: number): void {
  let count = draft.source(source).forwards;
  for (const f of delta.removed) {
    const key = portKey(f);
    const entry = draft.forward(key);
    if (!entry?.sources.includes(source)) continue;
    count -= 1;
    draft.putForward({ ...entry, sources: entry.sources.filter((s) => s !== source), changedAt: at });
  }
  for (const f of delta.added) {
    const key = portKey(f);
    const entry = draft.forward(key);
    if (entry?.sources.includes(source)) continue;
    count += 1;
    if (!entry) draft.putForward({ key, forward: f, sources: [source], changedAt: at, sinks: {} });
    // A key no source claimed any more is published anew, as the merge does: with this forward.
    else draft.putForward({ ...entry, forward: entry.sources.length === 0 ? f : entry.forward, sources: [...entry.sources, source], changedAt: at });
  }
  draft.updateSource(source, (s) => ({ ...s, forwards: count }));
}

function applyRouted(draft: Draft, sink: string, delta: PortDelta, at: number): void {
  for (const f of delta.removed) {
    const key = portKey(f);
    if (draft.forward(key)?.sinks[sink]) draft.setSinkState(key, sink, { state: 'pending', removing: true, since: at });
  }
  for (const f of delta.added) {
    const key = portKey(f);
    // A library user may route deltas no source claimed through the agent: keep them visible.
    if (!draft.forward(key)) draft.putForward({ key, forward: f, sources: [], changedAt: at, sinks: {} });
    draft.setSinkState(key, sink, { state: 'pending', removing: false, since: at });
  }
}

function applyReport(draft: Draft, sink: string, report: SinkReport, at: number): void {
  switch (report.type) {
    case 'wrote':
      for (const f of report.added) settle(draft, sink, portKey(f), false, at);
      for (const f of report.removed) settle(draft, sink, portKey(f), true, at);
      draft.updateSink(sink, (s) => ({ ...s, writes: s.writes + 1, failing: false }));
      break;
    case 'resent':
      // The whole state went out and arrived: whatever was still being added is there now.
      for (const key of draft.unsettledKeys(sink)) settle(draft, sink, key, false, at);
      draft.updateSink(sink, (s) => ({ ...s, writes: s.writes + 1, failing: false }));
      break;
    case 'failed':
      applyFailure(draft, sink, report.error, failedForwards(report), at);
      break;
    case 'withdrawn':
      for (const [key, entry] of draft.forwardsNow()) if (entry.sinks[sink]) draft.setSinkState(key, sink, undefined);
      break;
  }
}

/**
 * The sink applied (or removed) `key`. A write that carries a forward the sink is meant to do the
 * opposite with (a round that started before the change reached it) settles nothing.
 */
function settle(draft: Draft, sink: string, key: PortKey, removed: boolean, at: number): void {
  const entry = draft.forward(key);
  const current = entry?.sinks[sink];
  if (!entry || !current || current.removing !== removed) return;
  if (current.state !== 'applied') draft.settled.push({ sink, ms: Math.max(0, at - entry.changedAt) });
  draft.setSinkState(key, sink, removed ? undefined : { state: 'applied', removing: false, since: at });
}

/** `forwards` is being added to the 'failed' report by the sinks; read it when it is there. */
function failedForwards(report: SinkReport & { type: 'failed' }): readonly Forward[] | undefined {
  const named = (report as { readonly forwards?: unknown }).forwards;
  return Array.isArray(named) ? (named as readonly Forward[]) : undefined;
}

/**
 * A failure that names its forwards marks those failed; one that does not fails the whole write:
 * every forward the sink has not settled is failed with that error, and the sink is failing
 * until a write succeeds.
 */
function applyFailure(draft: Draft, sink: string, error: string, named: readonly Forward[] | undefined, at: number): void {
  const keys = named ? named.map(portKey) : draft.unsettledKeys(sink);
  for (const key of keys) {
    const current = draft.forward(key)?.sinks[sink];
    if (current) draft.setSinkState(key, sink, { state: 'failed', removing: current.removing, since: at, error });
  }
  draft.updateSink(sink, (s) => ({ ...s, failures: s.failures + 1, failing: s.failing || !named, lastError: error, lastErrorAt: at }));
}

/**
 * The next state, built by copying only what one input changes (the touched shards of the
 * forwards and of each touched sink's unsettled forwards). Keeps `applied`, `unsettled` and
 * `inSync` in step with the per-forward states, so reading them never needs a walk over every
 * forward.
 */
class Draft {
  readonly settled: Settled[] = [];
  private forwards: ShardedMapEdit<ForwardStatus> | undefined;
  private readonly sources: Record<string, SourceStatus>;
  private readonly sinks: Record<string, SinkStatus>;
  private readonly unsettled = new Map<string, ShardedMapEdit<Unsettled>>();

  constructor(private readonly base: AgentStatus) {
    this.sources = { ...base.sources };
    this.sinks = { ...base.sinks };
  }

  forward(key: PortKey): ForwardStatus | undefined {
    return this.forwards ? this.forwards.get(key) : this.base.forwards.get(key);
  }

  /** The forwards as they are now, copied out so that they can be changed while walking them. */
  forwardsNow(): [PortKey, ForwardStatus][] {
    return [...(this.forwards ? this.forwards.entries() : this.base.forwards)];
  }

  /** The keys the sink has not settled, as they are now. */
  unsettledKeys(sink: string): PortKey[] {
    const edit = this.unsettled.get(sink);
    return [...(edit ? edit.entries() : this.sink(sink).unsettled)].map(([key]) => key);
  }

  /** Stores `entry`, or drops it once no source claims it and no sink still has it. */
  putForward(entry: ForwardStatus): void {
    this.forwards ??= ShardedMap.of(this.base.forwards).edit();
    if (entry.sources.length === 0 && Object.keys(entry.sinks).length === 0) this.forwards.delete(entry.key);
    else this.forwards.set(entry.key, entry);
  }

  setSinkState(key: PortKey, sink: string, next: SinkForwardState | undefined): void {
    const entry = this.forward(key);
    if (!entry) return;
    const prev = entry.sinks[sink];
    const sinks = next ? { ...entry.sinks, [sink]: next } : Object.fromEntries(Object.entries(entry.sinks).filter(([name]) => name !== sink));
    this.putForward({ ...entry, sinks });
    const unsettled = this.unsettledOf(sink);
    if (next && next.state !== 'applied') unsettled.set(key, next.state);
    else unsettled.delete(key);
    const appliedBy = (next?.state === 'applied' ? 1 : 0) - (prev?.state === 'applied' ? 1 : 0);
    this.updateSink(sink, (s) => (appliedBy === 0 ? s : { ...s, applied: s.applied + appliedBy }));
  }

  source(name: string): SourceStatus {
    return (this.sources[name] ??= newSource);
  }

  updateSource(name: string, f: (s: SourceStatus) => SourceStatus): void {
    this.sources[name] = f(this.source(name));
  }

  sink(name: string): SinkStatus {
    return (this.sinks[name] ??= newSink);
  }

  updateSink(name: string, f: (s: SinkStatus) => SinkStatus): void {
    const next = f(this.sink(name));
    const unsettled = this.unsettled.get(name)?.size() ?? next.unsettled.size;
    this.sinks[name] = { ...next, inSync: !next.failing && unsettled === 0 };
  }

  done(): StatusStep {
    for (const [name, edit] of this.unsettled) this.sinks[name] = { ...this.sink(name), unsettled: edit.done() };
    this.unsettled.clear();
    const status: AgentStatus = { forwards: this.forwards?.done() ?? this.base.forwards, sources: this.sources, sinks: this.sinks };
    return { status, settled: this.settled };
  }

  private unsettledOf(sink: string): ShardedMapEdit<Unsettled> {
    let edit = this.unsettled.get(sink);
    if (!edit) {
      edit = ShardedMap.of(this.sink(sink).unsettled).edit();
      this.unsettled.set(sink, edit);
    }
    return edit;
  }
}
