import assert from 'node:assert/strict';
import { test } from 'node:test';
import { defer, map, type Observable } from 'rxjs';
import { listenerSink, type PlaceholderBinder } from '../src/sinks/listeners.js';
import { portKey, type Forward, type PortDelta } from '../src/model.js';
import { pino } from 'pino';
import { fwd, marbles, recordingLogger, type RunHelpers } from './helpers.js';

const web = fwd(8080, { source: 'iptables', owner: 'r1' });
const dns = fwd(5353, { source: 'iptables', owner: 'r2', protocol: 'udp', hostIp: '127.0.0.1' });
const web6 = fwd(8080, { source: 'iptables', owner: 'r3', hostIp: '::' });
const add = (...f: Forward[]): PortDelta => ({ added: f, removed: [] });
const del = (...f: Forward[]): PortDelta => ({ added: [], removed: f });

const inUse = (): Error => Object.assign(new Error('listen EADDRINUSE: address already in use 0.0.0.0:8080'), { code: 'EADDRINUSE' });
const notHere = (): Error => Object.assign(new Error('listen EADDRNOTAVAIL: address not available 10.9.9.9:8080'), { code: 'EADDRNOTAVAIL' });

type Cold = ReturnType<RunHelpers['cold']>;

/** A binder whose every hold of a key plays the next scripted placeholder (the last one repeats). */
function scripted(plays: Record<string, (() => Cold)[]>, fallback: () => Cold): PlaceholderBinder & {
  readonly holds: Map<string, Cold[]>;
} {
  const holds = new Map<string, Cold[]>();
  return {
    holds,
    hold: (forward) =>
      defer(() => {
        const key = portKey(forward);
        const list = holds.get(key) ?? [];
        const script = plays[key] ?? [fallback];
        const placeholder = script[Math.min(list.length, script.length - 1)]!();
        list.push(placeholder);
        holds.set(key, list);
        return placeholder;
      }),
  };
}

const bound = (h: RunHelpers) => (): Cold => h.cold('b');
const types = (reports: Observable<{ type: string }>): Observable<string> => reports.pipe(map((r) => r.type));

test('listeners: a placeholder is held from its add until its remove, and closed at once then', marbles((h, scheduler) => {
  const binder = scripted({}, bound(h));
  const deltas = h.cold<PortDelta>('a---b---|', { a: add(web, dns), b: del(web) });
  const reports = deltas.pipe(listenerSink({ binder, scheduler, logger: recordingLogger().log }));
  h.expectObservable(types(reports)).toBe('w---w---(d|)', { w: 'wrote', d: 'withdrawn' });
  h.flush();
  h.expectSubscriptions(binder.holds.get('tcp/0.0.0.0:8080')![0]!.subscriptions).toBe('^---!');
  h.expectSubscriptions(binder.holds.get('udp/127.0.0.1:5353')![0]!.subscriptions).toBe('^-------!');
}));

test('listeners: reports carry the delta, and the withdrawal counts what was still held', marbles((h, scheduler) => {
  const binder = scripted({}, bound(h));
  const deltas = h.cold<PortDelta>('a-b|', { a: add(web, dns, web6), b: del(dns) });
  h.expectObservable(deltas.pipe(listenerSink({ binder, scheduler, logger: recordingLogger().log }))).toBe('a-b(c|)', {
    a: { sink: 'listeners', type: 'wrote', added: [web, dns, web6], removed: [] },
    b: { sink: 'listeners', type: 'wrote', added: [], removed: [dns] },
    c: { sink: 'listeners', type: 'withdrawn', count: 2 },
  });
}));

test('listeners: a port already in use is not an error; it is noted once and taken when it frees up', marbles((h, scheduler) => {
  const { log, lines } = recordingLogger();
  const busy = (): Cold => h.cold('#', undefined, inUse());
  const binder = scripted({ 'tcp/0.0.0.0:8080': [busy, busy, busy, bound(h)] }, bound(h));
  const deltas = h.cold<PortDelta>('a 50ms -', { a: add(web) });
  h.expectObservable(types(deltas.pipe(listenerSink({ binder, scheduler, retryMs: 10, jitter: 0, logger: log }))), '^ 50ms !').toBe('w', { w: 'wrote' });
  h.flush();
  // tried at 0, 10, 20; bound at 30 and held from then on
  const holds = binder.holds.get('tcp/0.0.0.0:8080')!;
  assert.equal(holds.length, 4);
  h.expectSubscriptions(holds[3]!.subscriptions).toBe('30ms ^ 20ms !');
  const info = lines().filter((l) => l.level === 30).map((l) => l.msg);
  assert.deepEqual(info, [
    'tcp/0.0.0.0:8080 is in use already (something in the VM listens there, which is all WSL needs); taking it when it frees up',
    'tcp/0.0.0.0:8080: placeholder listening now',
  ]);
  assert.equal(lines().filter((l) => l.level >= 40).length, 0, 'no warning or error');
}));

test('listeners: other bind errors are reported as failed once per streak, and retried', marbles((h, scheduler) => {
  const { log, lines } = recordingLogger();
  const missing = (): Cold => h.cold('#', undefined, notHere());
  const odd = fwd(8080, { source: 'iptables', owner: 'r4', hostIp: '10.9.9.9' });
  const binder = scripted({ 'tcp/10.9.9.9:8080': [missing, missing, bound(h)] }, bound(h));
  const deltas = h.cold<PortDelta>('a 30ms -', { a: add(odd) });
  h.expectObservable(deltas.pipe(listenerSink({ binder, scheduler, retryMs: 10, jitter: 0, logger: log })), '^ 30ms !').toBe('(wf)', {
    w: { sink: 'listeners', type: 'wrote', added: [odd], removed: [] },
    f: { sink: 'listeners', type: 'failed', error: 'tcp/10.9.9.9:8080: listen EADDRNOTAVAIL: address not available 10.9.9.9:8080', retryInMs: 10 },
  });
  h.flush();
  assert.equal(binder.holds.get('tcp/10.9.9.9:8080')!.length, 3);
  assert.equal(lines().filter((l) => l.level === 40).length, 1, 'one warning for the streak');
}));

test('listeners: a port removed while waiting for it to free up stops being retried', marbles((h, scheduler) => {
  const busy = (): Cold => h.cold('#', undefined, inUse());
  const binder = scripted({ 'tcp/0.0.0.0:8080': [busy] }, bound(h));
  const deltas = h.cold<PortDelta>('a-------------b 50ms -', { a: add(web), b: del(web) });
  h.expectObservable(types(deltas.pipe(listenerSink({ binder, scheduler, retryMs: 10, jitter: 0, logger: recordingLogger().log }))), '^ 70ms !').toBe(
    'w-------------w',
    { w: 'wrote' },
  );
  h.flush();
  assert.equal(binder.holds.get('tcp/0.0.0.0:8080')!.length, 2, 'tried at 0 and 10, never after the remove at 14');
}));

test('listeners: unsubscribing closes every placeholder; an input error closes them too', marbles((h, scheduler) => {
  const binder = scripted({}, bound(h));
  h.expectObservable(types(h.cold<PortDelta>('a', { a: add(web) }).pipe(listenerSink({ binder, scheduler, logger: recordingLogger().log }))), '^--!').toBe('w', { w: 'wrote' });
  const failing = h.cold<PortDelta>('a-#', { a: add(dns) });
  h.expectObservable(types(failing.pipe(listenerSink({ binder, scheduler, logger: recordingLogger().log })))).toBe('w-#', { w: 'wrote' });
  h.flush();
  h.expectSubscriptions(binder.holds.get('tcp/0.0.0.0:8080')![0]!.subscriptions).toBe('^--!');
  h.expectSubscriptions(binder.holds.get('udp/127.0.0.1:5353')![0]!.subscriptions).toBe('^-!');
}));

test('listeners: the diagram of listenerSink', marbles((h, scheduler) => {
  const binder = scripted({}, bound(h));
  const deltas = h.cold<PortDelta>('--a-----------b---------|', { a: add(web), b: del(web) });
  h.expectObservable(types(deltas.pipe(listenerSink({ binder, scheduler, logger: recordingLogger().log })))).toBe('--w-----------w---------(d|)', { w: 'wrote', d: 'withdrawn' });
  h.flush();
  h.expectSubscriptions(binder.holds.get('tcp/0.0.0.0:8080')![0]!.subscriptions).toBe('--^-----------!');
}));

test('listeners: a binder that throws is a failed bind: reported, retried, never uncaught', marbles((h, scheduler) => {
  let throws = 2;
  const binder: PlaceholderBinder = {
    hold: () => {
      if (throws-- > 0) throw new Error('binder blew up');
      return h.cold('b');
    },
  };
  const deltas = h.cold<PortDelta>('a 30ms -', { a: add(web) });
  h.expectObservable(deltas.pipe(listenerSink({ binder, scheduler, retryMs: 10, jitter: 0, logger: recordingLogger().log })), '^ 30ms !').toBe('(wf)', {
    w: { sink: 'listeners', type: 'wrote', added: [web], removed: [] },
    f: { sink: 'listeners', type: 'failed', error: 'tcp/0.0.0.0:8080: binder blew up', retryInMs: 10 },
  });
  h.flush();
  assert.equal(throws, -1, 'tried at 0, 10 and 20');
}));

test('listeners: a logger that throws becomes the sink\'s error notification', marbles((h, scheduler) => {
  const log = pino({
    hooks: {
      logMethod: () => {
        throw new Error('logger broke');
      },
    },
  });
  const binder = scripted({}, bound(h));
  const deltas = h.cold<PortDelta>('a|', { a: add(web) });
  h.expectObservable(types(deltas.pipe(listenerSink({ binder, scheduler, logger: log })))).toBe('w#', { w: 'wrote' }, new Error('logger broke'));
}));
