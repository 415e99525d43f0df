import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Observable } from 'rxjs';
import type { TestScheduler } from 'rxjs/testing';
import { manageBindings, type BindingEvent, type ManageBindingsOptions, type ProxyEvent } from '../src/host/bindings.js';
import type { HostBinding, PortMapping, VmAddress } from '../src/wire/parsePortMapping.js';
import { marbles, recordingLogger, type RunHelpers } from './helpers.js';

// The host side's state logic in virtual time: which proxies are open when, and the back-off of
// a listen that fails. Back-off: 10, 20, 40, 40, ... (random() = 0.5 neutralises the jitter).

const http: HostBinding = { protocol: 'tcp', hostIp: '0.0.0.0', hostPort: 8080, containerPort: 80 };
const dns: HostBinding = { protocol: 'udp', hostIp: '0.0.0.0', hostPort: 5353, containerPort: 53 };
const http6: HostBinding = { protocol: 'tcp', hostIp: '::', hostPort: 8080, containerPort: 80 };
const vm: VmAddress = { ip: '172.26.112.5', prefix: 20, family: 4 };
const vm2: VmAddress = { ip: '172.26.112.9', prefix: 20, family: 4 };
const linkLocal: VmAddress = { ip: 'fe80::1', prefix: 64, family: 6 };

const add = (bindings: HostBinding[], connectAddrs: VmAddress[] = [vm]): PortMapping => ({ remove: false, bindings, connectAddrs });
const del = (...bindings: HostBinding[]): PortMapping => ({ remove: true, bindings, connectAddrs: [vm] });

const bound = (binding: HostBinding, target = vm.ip): BindingEvent => ({
  type: 'bound',
  key: `${binding.protocol}/${binding.hostIp.includes(':') ? `[${binding.hostIp}]` : binding.hostIp}:${String(binding.hostPort)}`,
  binding,
  target,
});
const unbound = (key: string): BindingEvent => ({ type: 'unbound', key });
const conflict = (binding: HostBinding, retryInMs: number, error = 'listen EADDRINUSE: address already in use 0.0.0.0:8080'): BindingEvent => ({
  type: 'conflict',
  key: `${binding.protocol}/${binding.hostIp}:${String(binding.hostPort)}`,
  binding,
  target: vm.ip,
  error,
  retryInMs,
});

/**
 * A fake proxy opener: each open answers with the next marble of `script` (`-l` listens after a
 * frame, `-#` fails after a frame, `-l--#` listens then fails later) and records
 * `FRAME open KEY -> TARGET` and `FRAME close KEY`.
 */
function scriptedOpen(h: RunHelpers, scheduler: TestScheduler, script: string[]) {
  const calls: string[] = [];
  const targets = new Map<string, () => string>();
  const open = (binding: HostBinding, target: () => string): Observable<ProxyEvent> => {
    const key = `${binding.protocol}/${String(binding.hostPort)}`;
    targets.set(key, target);
    calls.push(`${String(scheduler.now())} open ${key} -> ${target()}`);
    const marble = script.shift();
    assert.ok(marble !== undefined, `unexpected open of ${key} at ${String(scheduler.now())}`);
    const answer = h.cold<ProxyEvent>(marble, { l: { type: 'listening' } }, new Error(`listen EADDRINUSE: address already in use 0.0.0.0:${String(binding.hostPort)}`));
    return new Observable<ProxyEvent>((subscriber) => {
      const sub = answer.subscribe(subscriber);
      return () => {
        sub.unsubscribe();
        calls.push(`${String(scheduler.now())} close ${key}`);
      };
    });
  };
  return { open, calls, targets };
}

function options(scheduler: TestScheduler, open: ManageBindingsOptions['open']) {
  const logger = recordingLogger();
  const opts: ManageBindingsOptions = {
    open,
    localAddresses: () => new Set(['192.168.1.10', '::1']),
    backoff: { initialMs: 10, factor: 2, maxMs: 40, jitter: 0.2 },
    random: () => 0.5,
    scheduler,
    logger: logger.log,
  };
  return { opts, lines: logger.lines };
}

test(
  'an add opens a proxy, a repeated add is a no-op, a remove closes it',
  marbles((h, scheduler) => {
    const { open, calls } = scriptedOpen(h, scheduler, ['-l']);
    const mappings = h.cold('a--a--r', { a: add([http]), r: del(http) });
    h.expectObservable(mappings.pipe(manageBindings(options(scheduler, open).opts))).toBe('-b----u', {
      b: bound(http),
      u: unbound('tcp/0.0.0.0:8080'),
    });
    h.flush();
    assert.deepEqual(calls, ['0 open tcp/8080 -> 172.26.112.5', '6 close tcp/8080']);
  }),
);

test(
  'each binding of a message is its own proxy; tcp and udp on one number are apart; a remove of one leaves the other',
  marbles((h, scheduler) => {
    const { open, calls } = scriptedOpen(h, scheduler, ['l', 'l']);
    const mappings = h.cold('a---r', { a: add([http, dns]), r: del(dns) });
    h.expectObservable(mappings.pipe(manageBindings(options(scheduler, open).opts))).toBe('(bc)u', {
      b: bound(http),
      c: bound(dns),
      u: unbound('udp/0.0.0.0:5353'),
    });
    h.flush();
    assert.deepEqual(calls, ['0 open tcp/8080 -> 172.26.112.5', '0 open udp/5353 -> 172.26.112.5', '4 close udp/5353']);
  }),
);

test(
  'a taken host port is retried with back-off until it frees; one warning, then debug lines',
  marbles((h, scheduler) => {
    const { open, calls } = scriptedOpen(h, scheduler, ['#', '#', '#', '#', 'l']);
    const { opts, lines } = options(scheduler, open);
    h.expectObservable(h.cold('a', { a: add([http]) }).pipe(manageBindings(opts))).toBe('a 9ms b 19ms c 39ms d 39ms e', {
      a: conflict(http, 10),
      b: conflict(http, 20),
      c: conflict(http, 40),
      d: conflict(http, 40),
      e: bound(http),
    });
    h.flush();
    assert.deepEqual(
      calls.filter((c) => c.includes('open')).map((c) => c.split(' ')[0]),
      ['0', '10', '30', '70', '110'],
    );
    assert.deepEqual(
      lines().map((l) => l.level),
      [40, 20, 20, 20, 30],
    );
    assert.equal(
      lines()[0]?.msg,
      'cannot listen on 0.0.0.0:8080 (tcp): listen EADDRINUSE: address already in use 0.0.0.0:8080; retrying in 10 ms until it is free or removed',
    );
    assert.equal(lines()[4]?.msg, 'listening on 0.0.0.0:8080 (tcp), forwarding to 172.26.112.5:8080 after 4 retries');
  }),
);

test(
  'a remove during back-off stops the retries',
  marbles((h, scheduler) => {
    const { open, calls } = scriptedOpen(h, scheduler, ['#']);
    const mappings = h.cold('a----r', { a: add([http]), r: del(http) });
    h.expectObservable(mappings.pipe(manageBindings(options(scheduler, open).opts))).toBe('a----u', {
      a: conflict(http, 10),
      u: unbound('tcp/0.0.0.0:8080'),
    });
    h.flush();
    assert.deepEqual(calls, ['0 open tcp/8080 -> 172.26.112.5', '0 close tcp/8080']);
  }),
);

test(
  'a proxy that fails after listening is opened again, and the back-off starts over after each success',
  marbles((h, scheduler) => {
    const { open, calls } = scriptedOpen(h, scheduler, ['l--#', '#', 'l']);
    h.expectObservable(h.cold('a', { a: add([http]) }).pipe(manageBindings(options(scheduler, open).opts))).toBe('b--c 9ms d 19ms e', {
      b: bound(http),
      c: conflict(http, 10),
      d: conflict(http, 20),
      e: bound(http),
    });
    h.flush();
    assert.deepEqual(
      calls.filter((c) => c.includes('open')).map((c) => c.split(' ')[0]),
      ['0', '13', '33'],
    );
  }),
);

test(
  'an add with a new VM address retargets the binding without closing it',
  marbles((h, scheduler) => {
    const { open, calls, targets } = scriptedOpen(h, scheduler, ['l']);
    const mappings = h.cold('a-b', { a: add([http]), b: add([http], [vm2]) });
    h.expectObservable(mappings.pipe(manageBindings(options(scheduler, open).opts))).toBe('b-r', {
      b: bound(http),
      r: { type: 'retargeted', key: 'tcp/0.0.0.0:8080', target: vm2.ip },
    });
    h.flush();
    assert.deepEqual(calls, ['0 open tcp/8080 -> 172.26.112.5']);
    assert.equal(targets.get('tcp/8080')?.(), vm2.ip, 'new connections go to the new address');
  }),
);

test(
  'a binding without a usable VM address of its family is skipped with one log line; the rest goes on',
  marbles((h, scheduler) => {
    const { open, calls } = scriptedOpen(h, scheduler, ['l']);
    const { opts, lines } = options(scheduler, open);
    const mappings = h.cold('a', { a: add([http6, http], [vm, linkLocal]) });
    h.expectObservable(mappings.pipe(manageBindings(opts))).toBe('(sb)', {
      s: { type: 'skipped', key: 'tcp/[::]:8080', reason: 'the VM sent no usable IPv6 connect address (172.26.112.5/20, fe80::1/64)' },
      b: bound(http),
    });
    h.flush();
    assert.deepEqual(calls, ['0 open tcp/8080 -> 172.26.112.5']);
    assert.deepEqual(lines()[0], { level: 40, msg: 'skipping tcp/[::]:8080: the VM sent no usable IPv6 connect address (172.26.112.5/20, fe80::1/64)' });
  }),
);

test(
  'the same skipped add re-sent (the agent re-sends its state) warns once; a new reason, or an add after a remove, warns again',
  marbles((h, scheduler) => {
    const { open, calls } = scriptedOpen(h, scheduler, []);
    const { opts, lines } = options(scheduler, open);
    const noV6 = (addrs: string): string => `the VM sent no usable IPv6 connect address (${addrs})`;
    const mappings = h.cold('a 9ms a 9ms b 9ms r 9ms b', {
      a: add([http6], [vm, linkLocal]),
      b: add([http6], [vm]),
      r: del(http6),
    });
    h.expectObservable(mappings.pipe(manageBindings(opts))).toBe('s 19ms t 19ms t', {
      s: { type: 'skipped', key: 'tcp/[::]:8080', reason: noV6('172.26.112.5/20, fe80::1/64') },
      t: { type: 'skipped', key: 'tcp/[::]:8080', reason: noV6('172.26.112.5/20') },
    });
    h.flush();
    assert.deepEqual(calls, []);
    assert.deepEqual(lines().filter((l) => l.level === 40).map((l) => l.msg), [
      `skipping tcp/[::]:8080: ${noV6('172.26.112.5/20, fe80::1/64')}`,
      `skipping tcp/[::]:8080: ${noV6('172.26.112.5/20')}`,
      `skipping tcp/[::]:8080: ${noV6('172.26.112.5/20')}`,
    ]);
  }),
);

test(
  'a binding whose VM address is this host\'s own would forward to itself: skipped with one line; a different local address is fine',
  marbles((h, scheduler) => {
    const { open, calls } = scriptedOpen(h, scheduler, ['l']);
    const { opts, lines } = options(scheduler, open);
    const loopback: VmAddress = { ip: '127.0.0.1', prefix: 8, family: 4 };
    const own: VmAddress = { ip: '192.168.1.10', prefix: 24, family: 4 };
    const other: HostBinding = { ...http, hostIp: '127.0.0.2', hostPort: 9090 };
    const mappings = h.cold('a 9ms b', { a: add([http, other], [loopback]), b: add([dns], [own]) });
    const reason = (ip: string, port: number): string => `its VM address ${ip} is this host's own, so 0.0.0.0:${String(port)} would forward to itself`;
    h.expectObservable(mappings.pipe(manageBindings(opts))).toBe('(sb) 6ms t', {
      s: { type: 'skipped', key: 'tcp/0.0.0.0:8080', reason: reason('127.0.0.1', 8080) },
      b: bound(other, '127.0.0.1'),
      t: { type: 'skipped', key: 'udp/0.0.0.0:5353', reason: reason('192.168.1.10', 5353) },
    });
    h.flush();
    assert.deepEqual(calls, ['0 open tcp/9090 -> 127.0.0.1']);
    assert.deepEqual(lines().filter((l) => l.level === 40).map((l) => l.msg), [
      `skipping tcp/0.0.0.0:8080: ${reason('127.0.0.1', 8080)}`,
      `skipping udp/0.0.0.0:5353: ${reason('192.168.1.10', 5353)}`,
    ]);
  }),
);

test(
  'a remove of a binding that is not there does nothing',
  marbles((h, scheduler) => {
    const { open, calls } = scriptedOpen(h, scheduler, []);
    h.expectObservable(h.cold('r', { r: del(http) }).pipe(manageBindings(options(scheduler, open).opts))).toBe('-');
    h.flush();
    assert.deepEqual(calls, []);
  }),
);

test(
  'when the input completes every proxy is closed and the stream completes',
  marbles((h, scheduler) => {
    const { open, calls } = scriptedOpen(h, scheduler, ['l', 'l']);
    const mappings = h.cold('a---|', { a: add([http, dns]) });
    h.expectObservable(mappings.pipe(manageBindings(options(scheduler, open).opts))).toBe('(bc)|', { b: bound(http), c: bound(dns) });
    h.flush();
    assert.deepEqual(calls.slice(2), ['4 close tcp/8080', '4 close udp/5353']);
  }),
);

test(
  'unsubscribing closes every proxy and cancels retries; an input error does too',
  marbles((h, scheduler) => {
    const first = scriptedOpen(h, scheduler, ['l', '#']);
    h.expectObservable(h.cold('a', { a: add([http, dns]) }).pipe(manageBindings(options(scheduler, first.open).opts)), '^ 4ms !').toBe('(bc)', {
      b: bound(http),
      c: conflict(dns, 10, 'listen EADDRINUSE: address already in use 0.0.0.0:5353'),
    });
    const second = scriptedOpen(h, scheduler, ['l']);
    h.expectObservable(h.cold('a-#', { a: add([http]) }).pipe(manageBindings(options(scheduler, second.open).opts))).toBe('b-#', { b: bound(http) });
    h.flush();
    assert.deepEqual(first.calls, ['0 open tcp/8080 -> 172.26.112.5', '0 open udp/5353 -> 172.26.112.5', '0 close udp/5353', '5 close tcp/8080']);
    assert.deepEqual(second.calls, ['0 open tcp/8080 -> 172.26.112.5', '2 close tcp/8080']);
  }),
);

test(
  'the diagram of manageBindings: the proxy lives from the add to the remove; a repeated add is a no-op',
  marbles((h, scheduler) => {
    const answer = h.cold<ProxyEvent>('-l', { l: { type: 'listening' } });
    const { opts } = options(scheduler, () => answer);
    const mappings = h.cold('a--a--r|', { a: add([http]), r: del(http) });
    h.expectObservable(mappings.pipe(manageBindings(opts))).toBe('-b----u|', { b: bound(http), u: unbound('tcp/0.0.0.0:8080') });
    h.expectSubscriptions(answer.subscriptions).toBe('^-----!');
  }),
);

test(
  'an open that throws is a failed listen: reported as a conflict and retried, never uncaught',
  marbles((h, scheduler) => {
    let throws = 1;
    const { opts } = options(scheduler, () => {
      if (throws-- > 0) throw new Error('listen EADDRINUSE: address already in use 0.0.0.0:8080');
      return h.cold<ProxyEvent>('l', { l: { type: 'listening' } });
    });
    h.expectObservable(h.cold('a', { a: add([http]) }).pipe(manageBindings(opts))).toBe('a 9ms b', { a: conflict(http, 10), b: bound(http) });
  }),
);

test(
  'a localAddresses that throws becomes the stream\'s error notification, and closes what was open',
  marbles((h, scheduler) => {
    const { open, calls } = scriptedOpen(h, scheduler, ['l']);
    let asks = 0;
    const opts: ManageBindingsOptions = {
      ...options(scheduler, open).opts,
      localAddresses: () => {
        if (asks++ > 0) throw new Error('no interfaces');
        return new Set<string>();
      },
    };
    h.expectObservable(h.cold('a-b', { a: add([http]), b: add([dns]) }).pipe(manageBindings(opts))).toBe('b-#', { b: bound(http) }, new Error('no interfaces'));
    h.flush();
    assert.deepEqual(calls, ['0 open tcp/8080 -> 172.26.112.5', '2 close tcp/8080']);
  }),
);
