import assert from 'node:assert/strict';
import { test } from 'node:test';
import { defer, map, type Observable } from 'rxjs';
import { loopbackSink } from '../src/loopback/sink.js';
import type { ForwarderSpec, ListenAddr } from '../src/loopback/plan.js';
import type { Forward, PortDelta } from '../src/model.js';
import { fwd, marbles, recordingLogger, type RunHelpers } from './helpers.js';

const db = fwd(5432, { hostIp: '127.0.0.1', owner: 'pg' });
const dns = fwd(5353, { hostIp: '127.0.0.1', protocol: 'udp', owner: 'dns' });
const web = fwd(8080, { owner: 'web' });
const vm: ListenAddr = { ip: '10.0.0.2', cidr: '10.0.0.2/24' };
const moved: ListenAddr = { ip: '10.0.1.2', cidr: '10.0.1.2/24' };
const add = (...f: Forward[]): PortDelta => ({ added: f, removed: [] });
const del = (...f: Forward[]): PortDelta => ({ added: [], removed: f });

type Cold = ReturnType<RunHelpers['cold']>;

/** Forwarders whose every open of a key plays the next script (the last repeats). */
function scripted(plays: Record<string, (() => Cold)[]>, fallback: () => Cold): { holds: Map<string, Cold[]>; open: (spec: ForwarderSpec) => Observable<unknown> } {
  const holds = new Map<string, Cold[]>();
  return {
    holds,
    open: (spec) =>
      defer(() => {
        const list = holds.get(spec.key) ?? [];
        const script = plays[spec.key] ?? [fallback];
        const played = script[Math.min(list.length, script.length - 1)]!();
        list.push(played);
        holds.set(spec.key, list);
        return played;
      }),
  };
}

const types = (reports: Observable<{ type: string }>): Observable<string> => reports.pipe(map((r) => r.type));

test('loopback: a forwarder on the connect address is held from the add of a 127.0.0.1 forward to its remove', marbles((h, scheduler) => {
  const fw = scripted({}, () => h.cold('l'));
  const deltas = h.cold<PortDelta>('a---b---|', { a: add(db, dns, web), b: del(db) });
  const reports = deltas.pipe(loopbackSink({ listenAddrs: () => [vm], ipv6: true, open: fw.open, scheduler, logger: recordingLogger().log }));
  h.expectObservable(reports).toBe('a---b---(c|)', {
    a: { sink: 'loopback', type: 'wrote', added: [db, dns, web], removed: [] },
    b: { sink: 'loopback', type: 'wrote', added: [], removed: [db] },
    c: { sink: 'loopback', type: 'withdrawn', count: 1 },
  });
  h.flush();
  assert.deepEqual([...fw.holds.keys()], ['tcp/10.0.0.2:5432', 'udp/10.0.0.2:5353'], 'only the loopback forwards, on the connect address');
  h.expectSubscriptions(fw.holds.get('tcp/10.0.0.2:5432')![0]!.subscriptions).toBe('^---!');
  h.expectSubscriptions(fw.holds.get('udp/10.0.0.2:5353')![0]!.subscriptions).toBe('^-------!');
}));

test('loopback: a listen that fails is said once, reported, and tried again until it works', marbles((h, scheduler) => {
  const taken = (): Cold => h.cold('#', undefined, Object.assign(new Error('listen EADDRINUSE: address already in use 10.0.0.2:5432'), { code: 'EADDRINUSE' }));
  const fw = scripted({ 'tcp/10.0.0.2:5432': [taken, taken, () => h.cold('l')] }, () => h.cold('l'));
  const { log, lines } = recordingLogger();
  const deltas = h.cold<PortDelta>('a 10s |', { a: add(db) });
  const reports = deltas.pipe(loopbackSink({ listenAddrs: () => [vm], ipv6: true, open: fw.open, scheduler, logger: log, retryMs: 100, random: () => 0.5 }));
  h.expectObservable(types(reports)).toBe('(wf) 9997ms (d|)', { w: 'wrote', f: 'failed', d: 'withdrawn' });
  h.flush();
  assert.equal(fw.holds.get('tcp/10.0.0.2:5432')!.length, 3, 'two failures, then it listens');
  assert.equal(lines().filter((l) => l.msg.includes('cannot listen')).length, 1, 'the same failure is said once');
  assert.ok(lines().some((l) => l.msg.includes('forwarding to 127.0.0.1 now')));
}));

test('loopback: a connect address the VM does not have gives one log line, no forwarder, and no error', marbles((h, scheduler) => {
  const fw = scripted({}, () => h.cold('l'));
  const { log, lines } = recordingLogger();
  const deltas = h.cold<PortDelta>('a-b-|', { a: add(db), b: add(dns) });
  const reports = deltas.pipe(loopbackSink({ listenAddrs: () => [], ipv6: false, open: fw.open, scheduler, logger: log }));
  h.expectObservable(types(reports)).toBe('----(d|)', { d: 'withdrawn' });
  h.flush();
  assert.equal(fw.holds.size, 0, 'nothing was opened');
  const said = lines().filter((l) => l.msg.includes('no IPv4 address'));
  assert.deepEqual(said.map((l) => l.msg.split(':')[0]), ['tcp/127.0.0.1', 'udp/127.0.0.1'], 'one line per binding, once');
}));

test('loopback: when the connect address changes, the forwarders move to the new one', marbles((h, scheduler) => {
  const fw = scripted({}, () => h.cold('l'));
  let addrs: ListenAddr[] = [vm];
  h.cold('3s x').subscribe(() => (addrs = [moved]));
  const deltas = h.cold<PortDelta>('a 9s |', { a: add(db) });
  const reports = deltas.pipe(loopbackSink({ listenAddrs: () => addrs, ipv6: true, open: fw.open, scheduler, logger: recordingLogger().log, rereadMs: 2000 }));
  h.expectObservable(types(reports)).toBe('w 3999ms w 5000ms (d|)', { w: 'wrote', d: 'withdrawn' });
  h.flush();
  h.expectSubscriptions(fw.holds.get('tcp/10.0.0.2:5432')![0]!.subscriptions).toBe('^ 3999ms !');
  h.expectSubscriptions(fw.holds.get('tcp/10.0.1.2:5432')![0]!.subscriptions).toBe('4s ^ 5000ms !');
}));

test('loopback: an address reader that throws is logged and counts as no address, never an error', marbles((h, scheduler) => {
  const fw = scripted({}, () => h.cold('l'));
  const { log, lines } = recordingLogger();
  const deltas = h.cold<PortDelta>('a|', { a: add(db) });
  const reports = deltas.pipe(loopbackSink({ listenAddrs: () => { throw new Error('boom'); }, ipv6: true, open: fw.open, scheduler, logger: log }));
  h.expectObservable(types(reports)).toBe('-(d|)', { d: 'withdrawn' });
  h.flush();
  assert.ok(lines().some((l) => l.msg.includes('boom')));
}));
