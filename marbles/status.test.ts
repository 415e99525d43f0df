import assert from 'node:assert/strict';
import { test } from 'node:test';
import { concat, concatMap, distinctUntilChanged, endWith, map, of, timer, type Observable as Obs, type SchedulerLike } from 'rxjs';
import { createAgent } from '../src/agent.js';
import { upsert, remove, snapshot, type PortDelta, type SourceEvent } from '../src/model.js';
import type { Sink, SinkReport } from '../src/sinks/sink.js';
import { foldStatus, reduceStatus, statusOf, emptyStatus, type AgentStatus, type StatusInput } from '../src/status/state.js';
import { statusTracker } from '../src/status/tracker.js';
import { healthView } from '../src/status/views.js';
import { fwd, marbles } from './helpers.js';

const d80 = fwd(80, { source: 'docker', owner: 'c1' });
const d81 = fwd(81, { source: 'docker', owner: 'c2' });
const i80 = fwd(80, { source: 'iptables', owner: 'rule' });
const k80 = 'tcp/0.0.0.0:80';
const k81 = 'tcp/0.0.0.0:81';

const add = (...added: PortDelta['added']): PortDelta => ({ added, removed: [] });
const del = (...removed: PortDelta['removed']): PortDelta => ({ added: [], removed });
const wrote = (added: PortDelta['added'], removed: PortDelta['removed'] = []): SinkReport => ({ sink: 'vtunnel', type: 'wrote', added, removed });
const failed = (error: string, forwards?: PortDelta['added']): SinkReport =>
  ({ sink: 'vtunnel', type: 'failed', error, retryInMs: 100, ...(forwards && { forwards }) });

/** Each forward as `sources → sink:state[:error]@since`, for compact expectations. */
function forwards(s: AgentStatus): Record<string, string> {
  return Object.fromEntries(
    [...s.forwards].sort(([a], [b]) => a.localeCompare(b)).map(([key, f]) => [
      key,
      `${f.sources.join('+')} → ${Object.entries(f.sinks)
        .map(([sink, st]) => `${sink}:${st.state}${st.removing ? '(removing)' : ''}${st.error === undefined ? '' : `:${st.error}`}@${String(st.since)}`)
        .join(' ')}`,
    ]),
  );
}

/** An input without its time, which `inputs` stamps. */
type Untimed = StatusInput extends infer T ? (T extends StatusInput ? Omit<T, 'at'> : never) : never;

/** Inputs as a cold stream whose `at` is the frame each one arrives in. */
function inputs(cold: (m: string, v: Record<string, Untimed>) => Obs<Untimed>, marble: string, values: Record<string, Untimed>, now: () => number): Obs<StatusInput> {
  return cold(marble, values).pipe(map((i) => ({ ...i, at: now() })));
}

test('status: a forward goes claimed → pending → applied, and its latency counts from the claim', marbles(({ cold, expectObservable }, scheduler) => {
  const now = (): number => scheduler.now();
  const in$ = inputs(cold, 's-c-r---w', {
    s: { type: 'start', sources: ['docker'], sinks: ['vtunnel'] },
    c: { type: 'claims', source: 'docker', delta: add(d80) },
    r: { type: 'routed', sink: 'vtunnel', delta: add(d80) },
    w: { type: 'report', sink: 'vtunnel', report: wrote([d80]) },
  }, now);
  expectObservable(in$.pipe(foldStatus(), map((step) => ({ f: forwards(step.status), settled: step.settled, inSync: step.status.sinks['vtunnel']?.inSync })))).toBe('a-b-c---d', {
    a: { f: {}, settled: [], inSync: true },
    b: { f: { [k80]: 'docker → ' }, settled: [], inSync: true },
    c: { f: { [k80]: 'docker → vtunnel:pending@4' }, settled: [], inSync: false },
    d: { f: { [k80]: 'docker → vtunnel:applied@8' }, settled: [{ sink: 'vtunnel', ms: 6 }], inSync: true },
  });
}));

test('status: a port two sources claim stays until both give it up, then is removed by the sink and dropped', marbles(({ cold, expectObservable }, scheduler) => {
  const now = (): number => scheduler.now();
  const in$ = inputs(cold, 'abcdefgh', {
    a: { type: 'claims', source: 'docker', delta: add(d80) },
    b: { type: 'claims', source: 'iptables', delta: add(i80) },
    c: { type: 'routed', sink: 'vtunnel', delta: add(d80) },
    d: { type: 'report', sink: 'vtunnel', report: wrote([d80]) },
    e: { type: 'claims', source: 'docker', delta: del(d80) },
    f: { type: 'claims', source: 'iptables', delta: del(i80) },
    g: { type: 'routed', sink: 'vtunnel', delta: del(d80) },
    h: { type: 'report', sink: 'vtunnel', report: wrote([], [d80]) },
  }, now);
  expectObservable(in$.pipe(statusOf(), map(forwards))).toBe('abcdefgh', {
    a: { [k80]: 'docker → ' },
    b: { [k80]: 'docker+iptables → ' },
    c: { [k80]: 'docker+iptables → vtunnel:pending@2' },
    d: { [k80]: 'docker+iptables → vtunnel:applied@3' },
    e: { [k80]: 'iptables → vtunnel:applied@3' },
    f: { [k80]: ' → vtunnel:applied@3' },
    g: { [k80]: ' → vtunnel:pending(removing)@6' },
    h: {},
  });
}));

test('status: a failed write marks what the sink had pending failed, with the error and when; a later write applies it', marbles(({ cold, expectObservable }, scheduler) => {
  const now = (): number => scheduler.now();
  const in$ = inputs(cold, 'ab-c--d', {
    a: { type: 'claims', source: 'docker', delta: add(d80, d81) },
    b: { type: 'routed', sink: 'vtunnel', delta: add(d80, d81) },
    c: { type: 'report', sink: 'vtunnel', report: failed('connect ECONNREFUSED 127.0.0.1:3040') },
    d: { type: 'report', sink: 'vtunnel', report: wrote([d80, d81]) },
  }, now);
  expectObservable(in$.pipe(statusOf(), map((s) => ({ f: forwards(s), sink: pick(s) })))).toBe('ab-c--d', {
    a: { f: { [k80]: 'docker → ', [k81]: 'docker → ' }, sink: undefined },
    b: { f: { [k80]: 'docker → vtunnel:pending@1', [k81]: 'docker → vtunnel:pending@1' }, sink: { inSync: false, failing: false, failures: 0, writes: 0, applied: 0 } },
    c: {
      f: { [k80]: 'docker → vtunnel:failed:connect ECONNREFUSED 127.0.0.1:3040@3', [k81]: 'docker → vtunnel:failed:connect ECONNREFUSED 127.0.0.1:3040@3' },
      sink: { inSync: false, failing: true, failures: 1, writes: 0, applied: 0 },
    },
    d: { f: { [k80]: 'docker → vtunnel:applied@6', [k81]: 'docker → vtunnel:applied@6' }, sink: { inSync: true, failing: false, failures: 1, writes: 1, applied: 2 } },
  });
}));

function pick(s: AgentStatus): { inSync: boolean; failing: boolean; failures: number; writes: number; applied: number } | undefined {
  const k = s.sinks['vtunnel'];
  return k && { inSync: k.inSync, failing: k.failing, failures: k.failures, writes: k.writes, applied: k.applied };
}

test('status: a failure that names its forwards fails only those, and leaves the sink itself not failing', () => {
  let s = emptyStatus;
  for (const input of [
    { type: 'connected', at: 0, source: 'docker' },
    { type: 'claims', at: 1, source: 'docker', delta: add(d80, d81) },
    { type: 'routed', at: 2, sink: 'vtunnel', delta: add(d80, d81) },
    { type: 'report', at: 3, sink: 'vtunnel', report: wrote([d80, d81]) },
    { type: 'report', at: 4, sink: 'vtunnel', report: failed('81: address in use', [d81]) },
  ] as const satisfies readonly StatusInput[]) s = reduceStatus(s, input).status;
  assert.deepEqual(forwards(s), { [k80]: 'docker → vtunnel:applied@3', [k81]: 'docker → vtunnel:failed:81: address in use@4' });
  assert.deepEqual([s.sinks['vtunnel']?.failing, s.sinks['vtunnel']?.inSync], [false, false]);
  assert.deepEqual(healthView(s).problems, ['sink vtunnel: not in sync (1 failed): 81: address in use']);
});

test('status: a source is connected after it lists, and a retry makes it disconnected with the error, counted', marbles(({ cold, expectObservable }, scheduler) => {
  const now = (): number => scheduler.now();
  const in$ = inputs(cold, 's-c-d-d-c', {
    s: { type: 'start', sources: ['docker'], sinks: [] },
    c: { type: 'connected', source: 'docker' },
    d: { type: 'disconnected', source: 'docker', error: 'connect ENOENT /var/run/docker.sock' },
  }, now);
  expectObservable(in$.pipe(statusOf(), map((s) => s.sources['docker']))).toBe('s-c-d-e-f', {
    s: { connected: false, events: 0, reconnects: 0, forwards: 0 },
    c: { connected: true, since: 2, events: 0, reconnects: 0, forwards: 0 },
    d: { connected: false, since: 4, lastError: 'connect ENOENT /var/run/docker.sock', lastErrorAt: 4, events: 0, reconnects: 1, forwards: 0 },
    // down since the first failure, however many retries follow
    e: { connected: false, since: 4, lastError: 'connect ENOENT /var/run/docker.sock', lastErrorAt: 6, events: 0, reconnects: 2, forwards: 0 },
    f: { connected: true, since: 8, lastError: 'connect ENOENT /var/run/docker.sock', lastErrorAt: 6, events: 0, reconnects: 2, forwards: 0 },
  });
}));

test('status: withdrawn drops the sink from every forward; reduceStatus never changes the state it is given', () => {
  const steps: StatusInput[] = [
    { type: 'claims', at: 1, source: 'docker', delta: add(d80) },
    { type: 'routed', at: 2, sink: 'vtunnel', delta: add(d80) },
    { type: 'report', at: 3, sink: 'vtunnel', report: wrote([d80]) },
    { type: 'claims', at: 4, source: 'docker', delta: del(d80) },
  ];
  let s = emptyStatus;
  for (const input of steps) s = reduceStatus(s, input).status;
  const before = JSON.stringify(forwards(s));
  const after = reduceStatus(s, { type: 'report', at: 5, sink: 'vtunnel', report: { sink: 'vtunnel', type: 'withdrawn', count: 1 } }).status;
  assert.equal(JSON.stringify(forwards(s)), before);
  assert.deepEqual(forwards(after), {});
  assert.equal(after.sinks['vtunnel']?.applied, 0);
});

/** A sink that fails its first write and applies it 2 frames later; later deltas it applies at once. */
function flakySink(scheduler: SchedulerLike): Sink {
  return (deltas$) =>
    deltas$.pipe(
      concatMap((d, i) => {
        const wrote: SinkReport = { sink: 'vtunnel', type: 'wrote', added: d.added, removed: d.removed };
        if (i > 0) return of(wrote);
        return concat(of<SinkReport>({ sink: 'vtunnel', type: 'failed', error: 'refused', retryInMs: 2 }), timer(2, scheduler).pipe(map(() => wrote)));
      }),
      endWith<SinkReport>({ sink: 'vtunnel', type: 'withdrawn', count: 0 }),
    );
}

test('status: the tracker follows a real createAgent pipeline in virtual time, one fold per synchronous batch', marbles(({ hot, cold, expectObservable }, scheduler) => {
  const tracker = statusTracker({ now: () => scheduler.now(), scheduler });
  const docker = hot<SourceEvent>('-a 19ms b 19ms c', { a: snapshot([['c1', [d80]]]), b: upsert('c2', [d81]), c: remove('c1') });
  const agent = createAgent(
    { sources: { docker }, routes: [{ sink: flakySink(scheduler), sources: ['docker'], name: 'vtunnel' }], coalesceMs: 0, scheduler, observer: tracker.observer },
    cold('60ms s'),
  );
  const connection = tracker.connection('docker');
  cold('c').subscribe(() => { connection.connected(); });
  agent.subscribe();
  const summary = tracker.status$.pipe(map((s) => JSON.stringify({ f: forwards(s), ok: healthView(s).ok })), distinctUntilChanged());
  const at = (f: Record<string, string>, ok: boolean): string => JSON.stringify({ f, ok });
  // started and connected at 0 (no change to see); the first write fails at 1 and its retry
  // applies at 3; c2 comes at 21 and c1 goes at 41, each applied in the same batch
  expectObservable(summary, '^ 58ms !').toBe('ab-c 17ms d 19ms e', {
    a: at({}, true),
    b: at({ [k80]: 'docker → vtunnel:failed:refused@1' }, false),
    c: at({ [k80]: 'docker → vtunnel:applied@3' }, true),
    d: at({ [k80]: 'docker → vtunnel:applied@3', [k81]: 'docker → vtunnel:applied@21' }, true),
    e: at({ [k81]: 'docker → vtunnel:applied@21' }, true),
  });
  expectObservable(tracker.settled$, '^ 58ms !').toBe('---a 17ms b 19ms c', { a: { sink: 'vtunnel', ms: 2 }, b: { sink: 'vtunnel', ms: 0 }, c: { sink: 'vtunnel', ms: 0 } });
}));

test('status: current() folds what is queued, so a read right after an event already sees it', () => {
  const tracker = statusTracker();
  tracker.observer.claims('docker', add(d80));
  assert.deepEqual(forwards(tracker.current()), { [k80]: 'docker → ' });
  tracker.close();
});
