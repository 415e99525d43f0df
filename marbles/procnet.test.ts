import assert from 'node:assert/strict';
import { test } from 'node:test';
import { map, type Observable, type SchedulerLike } from 'rxjs';
import { procnetEvents, type ProcnetOptions, type SocketTable } from '../streams/procnet.js';
import { procnetExclusions, parsePortList, defaultProcnetExclude, type ForwardPolicy } from '../streams/procnetPolicy.js';
import type { ListeningSocket } from '../streams/procnetTable.js';
import { mergeDeltas } from '../operators/mergeDeltas.js';
import { toPortDeltas } from '../operators/toPortDeltas.js';
import { portKey, remove, snapshot, upsert, type Forward, type SourceEvent } from '../src/model.js';
import { fwd, marbles, recordingLogger } from './helpers.js';

/** Virtual time: a scan every 10 frames, published after 30. */
const timing = { scanMs: 10, stableMs: 30, fullScanMs: 1000, refreshMs: 1000, backoff: { initialMs: 20, maxMs: 40, factor: 2, jitter: 0, stableMs: 100 } } as const;

const ranges = parsePortList(defaultProcnetExclude);
if (!('ranges' in ranges)) throw new Error('the default exclusion list does not parse');
const policy: ForwardPolicy = { exclude: procnetExclusions(ranges.ranges, 6443), reachable: (ip) => ip === '10.213.0.2' };

let nextInode = 1000;
function sock(port: number, ip = '0.0.0.0', opts: Partial<ListeningSocket> = {}): ListeningSocket {
  return { protocol: 'tcp', family: ip.includes(':') ? 6 : 4, ip, port, inode: nextInode++, ...opts };
}

/**
 * A socket table played from a script: each socket is present in [from, to) of virtual time.
 * Records every read, every decode and every question about own inodes.
 */
function scripted(
  scheduler: SchedulerLike,
  entries: readonly { socket: ListeningSocket; from?: number; to?: number }[],
  opts: { own?: ReadonlySet<number>; failAt?: ReadonlySet<number>; token?: (now: number) => string } = {},
): SocketTable & { reads: number[]; decodes: number[]; asked: number[][] } {
  const reads: number[] = [];
  const decodes: number[] = [];
  const asked: number[][] = [];
  return {
    name: 'a scripted table',
    reads,
    decodes,
    asked,
    read: () => {
      const now = scheduler.now();
      reads.push(now);
      if (opts.failAt?.has(now)) throw new Error('EPERM');
      const present = entries.filter((e) => (e.from ?? 0) <= now && now < (e.to ?? Infinity)).map((e) => e.socket);
      return {
        fingerprint: present.map((s) => String(s.inode)).join(','),
        decode: () => {
          decodes.push(now);
          return present;
        },
      };
    },
    ownInodes: (candidates) => {
      asked.push([...candidates]);
      return new Set([...candidates].filter((i) => opts.own?.has(i)));
    },
    ...(opts.token && { changeToken: () => opts.token!(scheduler.now()) }),
  };
}

const published = (socket: ListeningSocket, hostIp = socket.ip, protocol = socket.protocol): Forward => {
  const f = { protocol, hostIp, hostPort: socket.port, source: 'procnet' } as const;
  return { ...f, owner: portKey(f) };
};
const up = (f: Forward): SourceEvent => upsert(f.owner, [f]);

function events(table: SocketTable, scheduler: SchedulerLike, extra: Partial<ProcnetOptions> = {}): Observable<SourceEvent> {
  return procnetEvents(table, { policy, ...timing, scheduler, logger: recordingLogger().log, ...extra });
}

test('a port is published once it has stood for the interval, and removed at the first scan it is gone', marbles(({ expectObservable }, scheduler) => {
  const web = sock(8080, '0.0.0.0', { inode: 1 });
  const table = scripted(scheduler, [{ socket: web, from: 15, to: 75 }]);
  // seen first by the scan at 20, published by the one at 50; gone at the scan at 80
  expectObservable(events(table, scheduler), '^ 99ms !').toBe('s 49ms a 29ms r', {
    s: snapshot([]),
    a: up(published(web)),
    r: remove(published(web).owner),
  });
}));

test('a listener that lives under the interval is never published, however many scans see it', marbles(({ expectObservable }, scheduler) => {
  const brief = sock(3000, '::', { v6only: true });
  const table = scripted(scheduler, [{ socket: brief, from: 20, to: 50 }, { socket: sock(3001), from: 60, to: 89 }]);
  expectObservable(events(table, scheduler), '^ 199ms !').toBe('s', { s: snapshot([]) });
}));

test('what stands at start-up waits the interval too; the first event is the snapshot', marbles(({ expectObservable }, scheduler) => {
  const web = sock(8080);
  const dns = sock(5353, '127.0.0.1', { protocol: 'udp' });
  const table = scripted(scheduler, [{ socket: web }, { socket: dns }]);
  expectObservable(events(table, scheduler, { stableMs: 0 }), '^ 15ms !').toBe('s', {
    s: snapshot([published(web), published(dns)].map((f) => [f.owner, [f]] as const)),
  });
}));

test('a dual-stack :: socket stands for 0.0.0.0 and ::; a v6-only one and an IPv4-mapped one for their own', marbles(({ expectObservable }, scheduler) => {
  const dual = sock(4000, '::', { v6only: false });
  const v6only = sock(4001, '::', { v6only: true });
  const mapped = sock(4002, '::ffff:127.0.0.1', { family: 6 });
  const table = scripted(scheduler, [{ socket: dual }, { socket: v6only }, { socket: mapped }]);
  expectObservable(events(table, scheduler, { stableMs: 0 }), '^ 5ms !').toBe('s', {
    s: snapshot(
      [published(dual, '0.0.0.0'), published(dual, '::'), published(v6only, '::'), published(mapped, '127.0.0.1')].map((f) => [f.owner, [f]] as const),
    ),
  });
}));

test('exclusion: infrastructure ports, the API port, unreachable addresses and own sockets never appear', marbles(({ expectObservable }, scheduler) => {
  const keep = [sock(8080), sock(8081, '127.0.0.1'), sock(8082, '::1'), sock(8083, '10.213.0.2')];
  const drop = [
    sock(22), sock(53, '0.0.0.0', { protocol: 'udp' }), sock(10250, '::'), sock(6443, '::'), sock(2380, '10.213.0.2'), sock(8472, '0.0.0.0', { protocol: 'udp' }),
    sock(8090, '127.0.0.53'), sock(8091, '172.17.0.1'), sock(8092, 'fe80::1'), sock(8093, '169.254.1.1'), sock(5353, '224.0.0.251', { protocol: 'udp' }),
    sock(8094, '10.213.0.9'),
  ];
  const mine = sock(8095);
  const table = scripted(scheduler, [...keep, ...drop, mine].map((socket) => ({ socket })), { own: new Set([mine.inode]) });
  expectObservable(events(table, scheduler, { stableMs: 0 }), '^ 25ms !').toBe('s', {
    s: snapshot(keep.map((s) => published(s)).map((f) => [f.owner, [f]] as const)),
  });
  scheduler.flush();
  assert.equal(table.asked.length, 1, 'own inodes are asked about once, for the sockets never seen before');
}));

test('no double count: docker-proxy listening on the port Docker publishes is one forward, gone when both are', marbles(({ cold, expectObservable }, scheduler) => {
  // Docker publishes -p 8080:80 as HostIp 0.0.0.0 and :: (dockerPorts.ts); docker-proxy listens on
  // 0.0.0.0:8080 and, v6-only, on [::]:8080. Same keys: the merge counts two claims per key.
  const docker4 = fwd(8080, { hostIp: '0.0.0.0', containerPort: 80, owner: 'c1' });
  const docker6 = fwd(8080, { hostIp: '::', containerPort: 80, owner: 'c1' });
  const proxy4 = sock(8080, '0.0.0.0');
  const proxy6 = sock(8080, '::', { v6only: true });
  assert.equal(portKey(published(proxy4)), portKey(docker4));
  assert.equal(portKey(published(proxy6)), portKey(docker6));
  const dockerEvents = cold<SourceEvent>('s 9ms u 99ms r', { s: snapshot([]), u: upsert('c1', [docker4, docker6]), r: remove('c1') });
  const table = scripted(scheduler, [{ socket: proxy4, from: 10, to: 120 }, { socket: proxy6, from: 10, to: 120 }]);
  const merged = mergeDeltas(dockerEvents.pipe(toPortDeltas()), events(table, scheduler).pipe(toPortDeltas()));
  // Docker adds at 10; procnet claims the same keys at 40 (nothing new); Docker lets go at 110,
  // and the keys go only when docker-proxy's sockets are gone too (the scan at 120).
  expectObservable(merged.pipe(map((d) => ({ added: d.added.map(portKey).sort(), removed: d.removed.map(portKey).sort() }))), '^ 199ms !').toBe(
    '10ms a 109ms (rq)',
    { a: { added: ['tcp/0.0.0.0:8080', 'tcp/[::]:8080'], removed: [] }, r: { added: [], removed: ['tcp/0.0.0.0:8080'] }, q: { added: [], removed: ['tcp/[::]:8080'] } },
  );
}));

test('a failing read keeps what is published and is retried with back-off', marbles(({ expectObservable }, scheduler) => {
  const web = sock(8080);
  const table = scripted(scheduler, [{ socket: web }], { failAt: new Set([10]) });
  // scans 0 (snapshot), 10 fails → back-off 20 → restart at 30: scans 30, 40, ... published at 30
  // because the port has stood since 0 (nothing is forgotten across the failure)
  expectObservable(events(table, scheduler), '^ 45ms !').toBe('s 29ms a', { s: snapshot([]), a: up(published(web)) });
  scheduler.flush();
  assert.deepEqual(table.reads, [0, 10, 30, 40]);
}));

test('an unchanged table is compared, not decoded, once everything present is published', marbles(({ expectObservable }, scheduler) => {
  const table = scripted(scheduler, [{ socket: sock(8080) }, { socket: sock(9090), from: 100 }]);
  expectObservable(events(table, scheduler), '^ 159ms !').toBe('s 29ms a 99ms b', {
    s: snapshot([]),
    a: up(published({ ...sock(8080), inode: 0 })),
    b: up(published({ ...sock(9090), inode: 0 })),
  });
  scheduler.flush();
  assert.deepEqual(table.decodes, [0, 10, 20, 30, 100, 110, 120, 130]);
}));

test('with a change token, a settled table is read only when the token moves, and every fullScanMs', marbles(({ expectObservable }, scheduler) => {
  const web = sock(8080);
  const late = sock(9090);
  // the token moves when 9090 starts listening (at 500), as the kernel's in-use count does
  const table = scripted(scheduler, [{ socket: web }, { socket: late, from: 500 }], { token: (now) => (now < 500 ? 'TCP=1' : 'TCP=2') });
  expectObservable(events(table, scheduler, { fullScanMs: 200 }), '^ 599ms !').toBe('s 29ms a 499ms b', {
    s: snapshot([]),
    a: up(published({ ...web, inode: 0 })),
    b: up(published({ ...late, inode: 0 })),
  });
  scheduler.flush();
  // reads while 8080 waits (0-30), then one per fullScanMs (230, 430), then 500 on the token and
  // every scan while 9090 waits (500-530)
  assert.deepEqual(table.reads, [0, 10, 20, 30, 230, 430, 500, 510, 520, 530]);
}));

test('a new socket is asked about (is it the agent\'s own?) only once it has stood half the interval, and an own one is still never published', marbles(({ expectObservable }, scheduler) => {
  const web = sock(8080, '0.0.0.0', { inode: 1 });
  const mine = sock(8095, '0.0.0.0', { inode: 2 });
  const table = scripted(scheduler, [{ socket: web, from: 15 }, { socket: mine, from: 15 }], { own: new Set([mine.inode]) });
  const askedAt: number[] = [];
  const ownInodes = table.ownInodes.bind(table);
  table.ownInodes = (candidates) => {
    askedAt.push(scheduler.now());
    return ownInodes(candidates);
  };
  // both first seen by the scan at 20; asked about at 40 (stood 20 ≥ 30 / 2), not at 20 or 30;
  // web published at 50, mine never
  expectObservable(events(table, scheduler), '^ 80ms !').toBe('s 49ms a', { s: snapshot([]), a: up(published(web)) });
  scheduler.flush();
  assert.deepEqual(askedAt, [40]);
  assert.deepEqual(table.asked, [[1, 2]]);
}));
