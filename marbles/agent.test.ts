import assert from 'node:assert/strict';
import { test } from 'node:test';
import { concat, defer, finalize, map, NEVER, Observable, of, tap, throwError, toArray } from 'rxjs';
import { createAgent } from '../src/agent.js';
import { applyDelta, emptyPortSet, remove, snapshot, upsert, type PortDelta, type PortSet, type SourceEvent } from '../src/model.js';
import type { Sink } from '../src/sinks/sink.js';
import { fwd, marbles, poisoned, recordingLogger } from './helpers.js';

const d80 = fwd(80, { source: 'docker', owner: 'c1' });
const d81 = fwd(81, { source: 'docker', owner: 'c2' });
const i80 = fwd(80, { source: 'iptables', owner: 'rule' });

/** A sink that records each delta it is given and reports one write per delta. */
function recordingSink(seen: PortDelta[], name = 'rec'): Sink {
  return (deltas$) =>
    new Observable((subscriber) =>
      deltas$
        .pipe(
          tap((d) => seen.push(d)),
          map((d) => ({ sink: name, type: 'wrote' as const, added: d.added, removed: d.removed })),
        )
        .subscribe({
          next: (r) => { subscriber.next(r); },
          error: (e: unknown) => { subscriber.error(e); },
          complete: () => {
            subscriber.next({ sink: name, type: 'withdrawn', count: 0 });
            subscriber.complete();
          },
        }),
    );
}

const net = (deltas: PortDelta[]): PortSet => deltas.reduce(applyDelta, emptyPortSet);

test('agent: sources are diffed independently and merged with claim counts per sink', marbles(({ hot, cold, expectObservable, flush }, scheduler) => {
  const docker = hot<SourceEvent>('-a----b-----c', { a: snapshot([['c1', [d80]]]), b: upsert('c2', [d81]), c: snapshot([]) });
  const iptables = hot<SourceEvent>('---a', { a: upsert('rule', [i80]) });
  const seen: PortDelta[] = [];
  const reports = createAgent(
    { sources: { docker, iptables }, routes: [{ sink: recordingSink(seen), sources: ['docker', 'iptables'] }], coalesceMs: 2, scheduler },
    cold('20ms s'),
  );
  // docker's reconnect snapshot at 12 drops c1 and c2, but port 80 stays: iptables still claims it
  expectObservable(reports.pipe(map((r) => r.type))).toBe('-w----w-----w-------(x|)', { w: 'wrote', x: 'withdrawn' });
  flush();
  assert.deepEqual(seen, [
    { added: [d80], removed: [] },
    { added: [d81], removed: [] },
    { added: [], removed: [d81] },
  ]);
  assert.deepEqual([...net(seen).keys()], ['tcp/0.0.0.0:80']);
}));

test('agent: each sink gets only the sources routed to it, and one subscription serves both', marbles(({ cold, expectObservable, flush }, scheduler) => {
  let subscriptions = 0;
  const docker = cold<SourceEvent>('a-b', { a: upsert('c1', [d80]), b: remove('c1') }).pipe(tap({ subscribe: () => subscriptions++ }));
  const iptables = cold<SourceEvent>('-a', { a: upsert('rule', [fwd(443, { source: 'iptables', owner: 'rule' })]) });
  const toVtunnel: PortDelta[] = [];
  const toTable: PortDelta[] = [];
  const reports = createAgent(
    {
      sources: { docker, iptables },
      routes: [
        { sink: recordingSink(toVtunnel, 'vtunnel'), sources: ['docker'] },
        { sink: recordingSink(toTable, 'table'), sources: ['docker', 'iptables'] },
      ],
      coalesceMs: 0,
      scheduler,
    },
    cold('5ms s'),
  );
  // frames are stamped by hand: several sinks report in one frame, which marble groups cannot show here
  expectObservable(reports.pipe(map((r) => `${String(scheduler.now())} ${r.sink}:${r.type}`), toArray())).toBe('-----(a|)', {
    a: [
      '0 vtunnel:wrote',
      '0 table:wrote',
      '1 table:wrote',
      '2 vtunnel:wrote',
      '2 table:wrote',
      '5 vtunnel:withdrawn',
      '5 table:withdrawn',
    ],
  });
  flush();
  assert.equal(subscriptions, 1);
  assert.equal(toVtunnel.length, 2);
  assert.equal(toTable.length, 3);
  assert.deepEqual(net(toTable).size, 1);
}));

test('agent: a source that emits as it is subscribed reaches every sink it feeds, not only the first', marbles(({ cold, expectObservable, flush }, scheduler) => {
  // as the Kubernetes stream does with the API port (startWith), or a library user's of(...)
  const kubernetes = concat(of(upsert('kubernetes/apiserver', [fwd(6443, { source: 'kubernetes', owner: 'kubernetes/apiserver' })])), NEVER);
  const toVtunnel: PortDelta[] = [];
  const toTable: PortDelta[] = [];
  const reports = createAgent(
    {
      sources: { kubernetes },
      routes: [
        { sink: recordingSink(toVtunnel, 'vtunnel'), sources: ['kubernetes'] },
        { sink: recordingSink(toTable, 'table'), sources: ['kubernetes'] },
      ],
      coalesceMs: 0,
      scheduler,
    },
    cold('5ms s'),
  );
  expectObservable(reports.pipe(map((r) => `${String(scheduler.now())} ${r.sink}:${r.type}`), toArray())).toBe('-----(a|)', {
    a: ['0 vtunnel:wrote', '0 table:wrote', '5 vtunnel:withdrawn', '5 table:withdrawn'],
  });
  flush();
  assert.deepEqual([...net(toVtunnel).keys()], ['tcp/0.0.0.0:6443']);
  assert.deepEqual([...net(toTable).keys()], ['tcp/0.0.0.0:6443']);
}));

test('agent: at stop the sources are let go at once, while a slow sink is still withdrawing', marbles(({ cold, expectObservable, flush }, scheduler) => {
  let released = -1;
  const docker = concat(of(upsert('c1', [d80])), NEVER).pipe(finalize(() => (released = scheduler.now())));
  // a sink whose withdrawal takes 10 frames after its input completes
  const slow: Sink = (deltas$) =>
    new Observable((subscriber) =>
      deltas$.subscribe({
        next: (d) => { subscriber.next({ sink: 'slow', type: 'wrote', added: d.added, removed: d.removed }); },
        complete: () => {
          scheduler.schedule(() => {
            subscriber.next({ sink: 'slow', type: 'withdrawn', count: 1 });
            subscriber.complete();
          }, 10);
        },
      }),
    );
  const reports = createAgent({ sources: { docker }, routes: [{ sink: slow, sources: ['docker'] }], coalesceMs: 0, scheduler }, cold('5ms s'));
  expectObservable(reports.pipe(map((r) => r.type))).toBe('w---- 10ms (x|)', { w: 'wrote', x: 'withdrawn' });
  flush();
  assert.equal(released, 5, 'the source is unsubscribed at the stop, not when the withdrawal ends');
}));

test('agent: a route naming an unknown source is a programming error, said at once', () => {
  // A plan written out in TypeScript cannot name a missing source; one built at run time can.
  // @ts-expect-error -- 'nope' is not a key of `sources`
  assert.throws(() => createAgent({ sources: {}, routes: [{ sink: recordingSink([]), sources: ['nope'] }] }, new Observable()), /source "nope"/);
});

const noJitter = { initialMs: 3, maxMs: 12, factor: 2, jitter: 0 };
const i443 = fwd(443, { source: 'iptables', owner: 'rule' });

/** A source whose n-th subscription is `attempts[n]` (the last one repeats). */
function attempts<T>(...runs: Observable<T>[]): Observable<T> {
  let n = 0;
  return defer(() => runs[Math.min(n++, runs.length - 1)] ?? NEVER);
}

test('agent: the doc comment diagram: a source that fails is resubscribed, its fresh list diffed against what it had', marbles(({ cold, expectObservable, flush }, scheduler) => {
  const { log, lines } = recordingLogger();
  const docker = attempts(cold<SourceEvent>('-a--#', { a: upsert('c1', [d80]) }), cold<SourceEvent>('-s', { s: snapshot([['c1', [d80]]]) }));
  const iptables = cold<SourceEvent>('------b', { b: upsert('rule', [i443]) });
  const seen: PortDelta[] = [];
  const reports = createAgent(
    { sources: { docker, iptables }, routes: [{ sink: recordingSink(seen), sources: ['docker', 'iptables'] }], coalesceMs: 0, backoff: noJitter, logger: log, scheduler },
    cold('20ms s'),
  );
  expectObservable(reports.pipe(map((r) => r.type))).toBe('-a----b------------- (x|)', { a: 'wrote', b: 'wrote', x: 'withdrawn' });
  flush();
  assert.deepEqual(seen, [{ added: [d80], removed: [] }, { added: [i443], removed: [] }]);
  assert.deepEqual(lines().map((l) => l.msg), ['source docker: its stream failed; its next list is diffed against what it has (error); resubscribing in 3 ms']);
}));

test('agent: a throw while folding a source withdraws that source\'s ports and starts it over; the other source keeps forwarding', marbles(({ cold, expectObservable, flush }, scheduler) => {
  const { log, lines } = recordingLogger();
  const docker = attempts(
    cold<SourceEvent>('-a-b', { a: upsert('c1', [d80]), b: upsert('c2', [poisoned(81, { owner: 'c2' })]) }),
    cold<SourceEvent>('s', { s: snapshot([['c1', [d80]]]) }),
  );
  const iptables = cold<SourceEvent>('--a----b', { a: upsert('rule', [i443]), b: remove('rule') });
  const seen: PortDelta[] = [];
  const reports = createAgent(
    { sources: { docker, iptables }, routes: [{ sink: recordingSink(seen), sources: ['docker', 'iptables'] }], coalesceMs: 0, backoff: noJitter, logger: log, scheduler },
    cold('20ms s'),
  );
  // 80 withdrawn at 3 (the throw), listed again at 6 after a back-off of 3; 443 is untouched
  expectObservable(reports.pipe(map((r) => r.type))).toBe('-www--ww------------(x|)', { w: 'wrote', x: 'withdrawn' });
  flush();
  assert.deepEqual(seen, [
    { added: [d80], removed: [] },
    { added: [i443], removed: [] },
    { added: [], removed: [d80] },
    { added: [d80], removed: [] },
    { added: [], removed: [i443] },
  ]);
  assert.match(lines()[0]?.msg ?? '', /^source docker: failed \(cannot fold its events \(poisoned forward\); withdrew its 1 ports\); resubscribing in 3 ms$/);
}));

/** Like recordingSink, but its first run fails (a throw in its projection) on a delta that adds `port`. */
function flakySink(seen: PortDelta[], port: number, name = 'flaky'): Sink {
  let runs = 0;
  return (deltas$) =>
    defer(() => {
      const run = ++runs;
      return recordingSink(seen, name)(
        deltas$.pipe(
          tap((d) => {
            if (run === 1 && d.added.some((f) => f.hostPort === port)) throw new Error(`cannot write ${String(port)}`);
          }),
        ),
      );
    });
}

test('agent: a sink that fails is logged, reported and restarted with back-off with the whole state; the other sink keeps forwarding', marbles(({ cold, expectObservable, flush }, scheduler) => {
  const { log, lines } = recordingLogger();
  const docker = cold<SourceEvent>('-a-b----c', { a: upsert('c1', [d80]), b: upsert('c2', [d81]), c: upsert('c3', [fwd(82, { owner: 'c3' })]) });
  const toFlaky: PortDelta[] = [];
  const toSteady: PortDelta[] = [];
  const reports = createAgent(
    {
      sources: { docker },
      routes: [
        { sink: flakySink(toFlaky, 81), sources: ['docker'], name: 'vtunnel' },
        { sink: recordingSink(toSteady, 'steady'), sources: ['docker'] },
      ],
      coalesceMs: 0,
      backoff: noJitter,
      logger: log,
      scheduler,
    },
    cold('20ms s'),
  );
  expectObservable(reports.pipe(map((r) => `${String(scheduler.now())} ${r.sink}:${r.type}`), toArray())).toBe('20ms (a|)', {
    a: [
      '1 flaky:wrote',
      '1 steady:wrote',
      '3 vtunnel:failed',
      '3 steady:wrote',
      '6 flaky:wrote', // restarted after 3 with 80 and 81
      '8 flaky:wrote',
      '8 steady:wrote',
      '20 flaky:withdrawn',
      '20 steady:withdrawn',
    ],
  });
  flush();
  assert.deepEqual(toFlaky.slice(1), [{ added: [d80, d81], removed: [] }, { added: [fwd(82, { owner: 'c3' })], removed: [] }]);
  assert.equal(toSteady.length, 3);
  assert.deepEqual(lines().map((l) => l.msg), ['sink vtunnel failed (cannot write 81); restarting it in 3 ms with the whole state']);
}));

test('agent: a stop during a failed sink\'s back-off restarts it at once, so it withdraws what it had', marbles(({ cold, expectObservable, flush }, scheduler) => {
  const docker = cold<SourceEvent>('-a-b', { a: upsert('c1', [d80]), b: upsert('c2', [d81]) });
  const seen: PortDelta[] = [];
  const reports = createAgent(
    { sources: { docker }, routes: [{ sink: flakySink(seen, 81), sources: ['docker'] }], coalesceMs: 0, backoff: { ...noJitter, initialMs: 50 }, logger: recordingLogger().log, scheduler },
    cold('5ms s'),
  );
  expectObservable(reports.pipe(map((r) => r.type))).toBe('-w-f-(wx|)', { w: 'wrote', f: 'failed', x: 'withdrawn' });
  flush();
  assert.deepEqual(seen.at(-1), { added: [d80, d81], removed: [] }, 'told the whole state, then its input ends');
}));

test('agent: a sink that fails while withdrawing is given up, and the agent still completes', marbles(({ cold, expectObservable }, scheduler) => {
  const { log, lines } = recordingLogger();
  const docker = cold<SourceEvent>('-a', { a: upsert('c1', [d80]) });
  const failsAtEnd: Sink = (deltas$) => concat(deltas$.pipe(map((d) => ({ sink: 'end', type: 'wrote' as const, added: d.added, removed: d.removed }))), throwError(() => new Error('host gone')));
  const reports = createAgent({ sources: { docker }, routes: [{ sink: failsAtEnd, sources: ['docker'], name: 'end' }], coalesceMs: 0, backoff: noJitter, logger: log, scheduler }, cold('5ms s'));
  expectObservable(reports.pipe(map((r) => r.type))).toBe('-w---|', { w: 'wrote' });
  scheduler.flush();
  assert.deepEqual(lines().map((l) => l.msg), ['sink end failed while withdrawing (host gone); giving up on it']);
}));

test('agent: a stop during a source\'s back-off ends the wait; the sinks still withdraw', marbles(({ cold, expectObservable }, scheduler) => {
  const docker = cold<SourceEvent>('-a#', { a: upsert('c1', [d80]) });
  const reports = createAgent(
    { sources: { docker }, routes: [{ sink: recordingSink([]), sources: ['docker'] }], coalesceMs: 0, backoff: { ...noJitter, initialMs: 100 }, logger: recordingLogger().log, scheduler },
    cold('5ms s'),
  );
  expectObservable(reports.pipe(map((r) => r.type))).toBe('-w---(x|)', { w: 'wrote', x: 'withdrawn' });
}));
/** A sink that records what it is given and, once its input completes, the withdrawal. */
function withdrawingSink(log: string[]): Sink {
  return (deltas$) =>
    new Observable((subscriber) =>
      deltas$.subscribe({
        next: (d) => {
          log.push(`+${String(d.added.length)}-${String(d.removed.length)}`);
          subscriber.next({ sink: 'w', type: 'wrote', added: d.added, removed: d.removed });
        },
        error: (e: unknown) => { subscriber.error(e); },
        complete: () => {
          log.push('withdrawn');
          subscriber.next({ sink: 'w', type: 'withdrawn', count: 1 });
          subscriber.complete();
        },
      }),
    );
}

test('agent: an AbortSignal stops it as stop$ does: the sink withdraws, the reports complete', marbles(({ hot, expectObservable, flush }, scheduler) => {
  const docker = hot<SourceEvent>('-a', { a: upsert('c1', [d80]) });
  const controller = new AbortController();
  scheduler.schedule(() => { controller.abort(); }, 5);
  const log: string[] = [];
  const reports = createAgent({ sources: { docker }, routes: [{ sink: withdrawingSink(log), sources: ['docker'] }], coalesceMs: 0, scheduler }, { signal: controller.signal });
  expectObservable(reports.pipe(map((r) => r.type))).toBe('-w---(x|)', { w: 'wrote', x: 'withdrawn' });
  flush();
  assert.deepEqual(log, ['+1-0', 'withdrawn']);
}));

test('agent: a signal that has already aborted withdraws at once', () => {
  const log: string[] = [];
  const types: string[] = [];
  createAgent({ sources: { docker: of(upsert('c1', [d80])) }, routes: [{ sink: withdrawingSink(log), sources: ['docker'] }], coalesceMs: 0 }, { signal: AbortSignal.abort() })
    .subscribe((r) => types.push(r.type));
  assert.deepEqual(types, ['withdrawn']);
  assert.deepEqual(log, ['withdrawn']);
});

test('agent: unsubscribing withdraws too; the sources stop, the withdrawal runs unobserved', marbles(({ hot, flush }, scheduler) => {
  let sourceUnsubscribed = false;
  const docker = hot<SourceEvent>('-a', { a: upsert('c1', [d80]) }).pipe(finalize(() => { sourceUnsubscribed = true; }));
  const log: string[] = [];
  const seen: string[] = [];
  const subscription = createAgent({ sources: { docker }, routes: [{ sink: withdrawingSink(log), sources: ['docker'] }], coalesceMs: 0, scheduler }, NEVER)
    .subscribe((r) => seen.push(r.type));
  scheduler.schedule(() => { subscription.unsubscribe(); }, 3);
  flush();
  assert.deepEqual(log, ['+1-0', 'withdrawn']);
  assert.deepEqual(seen, ['wrote'], 'the withdrawal report goes nowhere once unsubscribed');
  assert.equal(sourceUnsubscribed, true);
}));

test('agent: a route naming a source the plan lacks does not compile', () => {
  const docker: Observable<SourceEvent> = of();
  const sink = recordingSink([]);
  // @ts-expect-error -- 'dockr' is a typo of 'docker'
  assert.throws(() => createAgent({ sources: { docker }, routes: [{ sink, sources: ['dockr'] }] }), /source "dockr"/);
  // A plan typed with plain strings (built at run time) still compiles, and is checked at run time.
  const names: string[] = ['docker'];
  const sources: Record<string, Observable<SourceEvent>> = { docker };
  createAgent({ sources, routes: [{ sink, sources: names }] }, { signal: AbortSignal.abort() }).subscribe();
});
