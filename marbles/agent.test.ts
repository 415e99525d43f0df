import assert from 'node:assert/strict';
import { test } from 'node:test';
import { concat, finalize, map, NEVER, Observable, of, tap, toArray } from 'rxjs';
import { createAgent } from '../src/agent.js';
import { applyDelta, emptyPortSet, remove, snapshot, upsert, type PortDelta, type PortSet, type SourceEvent } from '../src/model.js';
import type { Sink } from '../src/sinks/sink.js';
import { fwd, marbles } from './helpers.js';

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
