import assert from 'node:assert/strict';
import { test } from 'node:test';
import { defer, type Observable, type SchedulerLike } from 'rxjs';
import {
  kubernetesServices,
  type KubeServiceList,
  type KubeServicesClient,
  type KubeStatus,
  type KubernetesStreamOptions,
  type KubeWatchEvent,
} from '../streams/kubernetes.js';
import type { KubeService, KubeServicePort } from '../streams/kubeServices.js';
import { remove, snapshot, upsert, type Forward, type SourceEvent } from '../src/model.js';
import { fwd, marbles, recordingLogger } from './helpers.js';

const backoff = { initialMs: 10, maxMs: 40, factor: 2, jitter: 0, stableMs: 100 };
const API = 'kubernetes/apiserver';

function svc(namespace: string, name: string, uid: string, type: string | undefined, ports: KubeServicePort[], rv = '1'): KubeService {
  return { metadata: { namespace, name, uid, resourceVersion: rv }, spec: { ...(type !== undefined && { type }), ports } };
}

const web = svc('default', 'web', 'u-web', 'NodePort', [{ name: 'http', protocol: 'TCP', port: 80, nodePort: 30080 }]);
const web2 = svc('default', 'web', 'u-web', 'NodePort', [{ name: 'http', protocol: 'TCP', port: 80, nodePort: 30081 }], '2');
const webClusterIP = svc('default', 'web', 'u-web', 'ClusterIP', [{ name: 'http', protocol: 'TCP', port: 80 }], '3');
const dns = svc('kube-system', 'dns', 'u-dns', 'LoadBalancer', [
  { name: 'dns-tcp', protocol: 'TCP', port: 53, nodePort: 31053 },
  { name: 'dns-udp', protocol: 'UDP', port: 53, nodePort: 31054 },
]);
const internal = svc('default', 'internal', 'u-int', undefined, [{ port: 8080 }]);

const k = (hostPort: number, owner: string, protocol: 'tcp' | 'udp' = 'tcp', hostIp = '0.0.0.0'): Forward =>
  fwd(hostPort, { source: 'kubernetes', owner, protocol, hostIp });
const apiFwd = k(6443, API);
const webFwd = [k(30080, 'u-web')];
const web2Fwd = [k(30081, 'u-web')];
const dnsFwd = [k(53, 'u-dns', 'tcp'), k(53, 'u-dns', 'udp')];

const list = (items: KubeService[], resourceVersion = '10'): KubeServiceList => ({ metadata: { resourceVersion }, items });
const ev = (type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK', object: KubeService): KubeWatchEvent => ({ type, object });
const gone: KubeStatus = {
  kind: 'Status',
  status: 'Failure',
  message: 'too old resource version: 10 (42)',
  reason: 'Expired',
  code: 410,
};
const bookmark = ev('BOOKMARK', { kind: 'Service', metadata: { resourceVersion: '12' } });

/** A client whose every connection plays the next scripted list and watch; `watched` records the resourceVersions asked for. */
function scripted(lists: Observable<KubeServiceList>[], watches: Observable<KubeWatchEvent>[]): KubeServicesClient & { watched: string[] } {
  let l = 0;
  let w = 0;
  const watched: string[] = [];
  return {
    watched,
    listServices: () => defer(() => lists[Math.min(l++, lists.length - 1)]!),
    watchServices: (rv) =>
      defer(() => {
        watched.push(rv);
        return watches[Math.min(w++, watches.length - 1)]!;
      }),
  };
}

function run(
  clients: Observable<KubeServicesClient>,
  scheduler: SchedulerLike,
  extra: Partial<KubernetesStreamOptions> = {},
): Observable<SourceEvent> {
  return kubernetesServices(clients, { listenerAddr: '0.0.0.0', apiPort: 6443, backoff, scheduler, logger: recordingLogger().log, ...extra });
}

const values = {
  a: snapshot([[API, [apiFwd]]]),
  s: snapshot([
    [API, [apiFwd]],
    ['u-web', webFwd],
  ]),
  d: snapshot([
    [API, [apiFwd]],
    ['u-dns', dnsFwd],
  ]),
  u: upsert('u-dns', dnsFwd),
  v: upsert('u-web', web2Fwd),
  w: upsert('u-web', webFwd),
  r: remove('u-dns'),
  x: remove('u-web'),
  i: remove('u-int'),
};

test('kubernetes: the API port from the start, a snapshot of the list, then the watch from its resourceVersion', marbles((h, scheduler) => {
  const { cold, expectObservable } = h;
  const client = scripted(
    [cold('--l|', { l: list([web, internal], '10') })],
    [cold<KubeWatchEvent>('-a-m-d-b-c', { a: ev('ADDED', dns), m: ev('MODIFIED', web2), d: ev('DELETED', dns), b: bookmark, c: ev('ADDED', internal) })],
  );
  // a bookmark changes nothing; a ClusterIP Service owns nothing (its removal is a no-op downstream)
  expectObservable(run(cold('c', { c: client }), scheduler), '^ 20ms !').toBe('a-su-v-r---i', values);
  h.flush();
  assert.deepEqual(client.watched, ['10']);
}));

test('kubernetes: TCP and UDP on one number are two forwards, on the listener address, the API port too', marbles((h, scheduler) => {
  const { cold, expectObservable } = h;
  const client = scripted([cold('l|', { l: list([dns, internal]) })], [cold<KubeWatchEvent>('-')]);
  const lo = (p: number, owner: string, protocol: 'tcp' | 'udp' = 'tcp'): Forward => k(p, owner, protocol, '127.0.0.1');
  expectObservable(run(cold('c', { c: client }), scheduler, { listenerAddr: '127.0.0.1' }), '^ 5ms !').toBe('(as)', {
    a: snapshot([[API, [lo(6443, API)]]]),
    s: snapshot([
      [API, [lo(6443, API)]],
      ['u-dns', [lo(53, 'u-dns', 'tcp'), lo(53, 'u-dns', 'udp')]],
    ]),
  });
}));

test('kubernetes: without apiPort there is no API forward', marbles((h, scheduler) => {
  const { cold, expectObservable } = h;
  const client = scripted([cold('l|', { l: list([web]) })], [cold<KubeWatchEvent>('-')]);
  const clients = cold('c', { c: client });
  const events = kubernetesServices(clients, { listenerAddr: '0.0.0.0', backoff, scheduler, logger: recordingLogger().log });
  expectObservable(events, '^ 5ms !').toBe('(es)', { e: snapshot([]), s: snapshot([['u-web', webFwd]]) });
}));

test('kubernetes: a type change NodePort → ClusterIP removes the Service, and back adds it', marbles((h, scheduler) => {
  const { cold, expectObservable } = h;
  const client = scripted(
    [cold('--l|', { l: list([web]) })],
    [cold<KubeWatchEvent>('-c-n', { c: ev('MODIFIED', webClusterIP), n: ev('MODIFIED', web) })],
  );
  expectObservable(run(cold('c', { c: client }), scheduler), '^ 10ms !').toBe('a-sx-w', values);
}));

test('kubernetes: a dropped watch re-lists after back-off, and the fresh snapshot drops what was deleted meanwhile', marbles((h, scheduler) => {
  const { cold, expectObservable } = h;
  const client = scripted(
    [cold('l|', { l: list([web], '10') }), cold('l|', { l: list([dns], '20') })],
    [cold<KubeWatchEvent>('--#', undefined, new Error('socket hang up')), cold<KubeWatchEvent>('-')],
  );
  // dropped at 2, back-off 10 → re-list at 12
  expectObservable(run(cold('c', { c: client }), scheduler), '^ 20ms !').toBe('(as) 8ms d', values);
  h.flush();
  assert.deepEqual(client.watched, ['10', '20'], 'each watch starts from its own list');
}));

test('kubernetes: a watch the server ends re-lists too, logged at debug level only', marbles((h, scheduler) => {
  const { cold, expectObservable } = h;
  const { log, lines } = recordingLogger();
  const client = scripted([cold('l|', { l: list([web]) }), cold('l|', { l: list([]) })], [cold<KubeWatchEvent>('---|'), cold<KubeWatchEvent>('-')]);
  expectObservable(run(cold('c', { c: client }), scheduler, { logger: log }), '^ 20ms !').toBe('(as) 9ms a', values);
  h.flush();
  assert.deepEqual(lines().filter((l) => l.level >= 40), []);
  assert.ok(lines().some((l) => l.level === 20 && /ended the Service watch; re-listing in 10 ms/.test(l.msg)));
}));

test('kubernetes: 410 Gone (an ERROR event with an expired Status) re-lists, logged at info as routine', marbles((h, scheduler) => {
  const { cold, expectObservable } = h;
  const { log, lines } = recordingLogger();
  const client = scripted(
    [cold('l|', { l: list([web], '10') }), cold('l|', { l: list([web, dns], '42') })],
    [cold<KubeWatchEvent>('--e-a', { e: { type: 'ERROR', object: gone }, a: ev('ADDED', dns) }), cold<KubeWatchEvent>('-')],
  );
  // nothing after the ERROR is read: the connection is done with
  expectObservable(run(cold('c', { c: client }), scheduler, { logger: log }), '^ 20ms !').toBe('(as) 8ms t', {
    ...values,
    t: snapshot([
      [API, [apiFwd]],
      ['u-web', webFwd],
      ['u-dns', dnsFwd],
    ]),
  });
  h.flush();
  assert.deepEqual(client.watched, ['10', '42']);
  assert.deepEqual(lines().filter((l) => l.level >= 40), []);
  const info = lines().filter((l) => l.level === 30 && /410/.test(l.msg));
  assert.equal(info.length, 1);
  assert.match(info[0]!.msg, /expired \(410 Gone: 410 Expired: too old resource version: 10 \(42\)\); re-listing in 10 ms/);
}));

test('kubernetes: an API server down at start is retried with growing back-off; the API port is there meanwhile', marbles((h, scheduler) => {
  const { cold, expectObservable } = h;
  const { log, lines } = recordingLogger();
  const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:6443'), { code: 'ECONNREFUSED' });
  const client = scripted(
    [cold<KubeServiceList>('#', undefined, refused), cold<KubeServiceList>('#', undefined, refused), cold('l|', { l: list([web]) })],
    [cold<KubeWatchEvent>('-')],
  );
  // fail at 0, wait 10; fail at 10, wait 20; list at 30
  expectObservable(run(cold('c', { c: client }), scheduler, { logger: log }), '^ 40ms !').toBe('a 29ms s', values);
  h.flush();
  const warnings = lines().filter((l) => l.level === 40);
  assert.deepEqual(
    warnings.map((l) => l.msg),
    [
      'cannot reach the Kubernetes API server (connect ECONNREFUSED 127.0.0.1:6443); retrying in 10 ms',
      'cannot reach the Kubernetes API server (connect ECONNREFUSED 127.0.0.1:6443); retrying in 20 ms',
    ],
  );
}));

test('kubernetes: losing a connected API server is one warning, and coming back re-lists', marbles((h, scheduler) => {
  const { cold, expectObservable } = h;
  const { log, lines } = recordingLogger();
  const reset = new Error('read ECONNRESET');
  const client = scripted(
    [cold('l|', { l: list([web]) }), cold<KubeServiceList>('#', undefined, reset), cold('l|', { l: list([]) })],
    [cold<KubeWatchEvent>('-#', undefined, reset), cold<KubeWatchEvent>('-')],
  );
  // drop at 1 → wait 10 → refused at 11 → wait 20 → list at 31
  expectObservable(run(cold('c', { c: client }), scheduler, { logger: log }), '^ 40ms !').toBe('(as) 27ms a', values);
  h.flush();
  assert.deepEqual(
    lines().filter((l) => l.level === 40).map((l) => l.msg),
    [
      'lost the Kubernetes API server (read ECONNRESET); reconnecting and re-listing in 10 ms',
      'cannot reach the Kubernetes API server (read ECONNRESET); retrying in 20 ms',
    ],
  );
}));

test('kubernetes: a kubeconfig that appears late: only the API port until then', marbles((h, scheduler) => {
  const { cold, expectObservable } = h;
  const client = scripted([cold('l|', { l: list([web]) })], [cold<KubeWatchEvent>('-')]);
  expectObservable(run(cold('-----c', { c: client }), scheduler), '^ 20ms !').toBe('a----s', values);
}));

test('kubernetes: a replaced kubeconfig drops the old connection and lists through the new one', marbles((h, scheduler) => {
  const { cold, expectObservable, expectSubscriptions } = h;
  const oldWatch = cold<KubeWatchEvent>('-');
  const first = scripted([cold('l|', { l: list([web]) })], [oldWatch]);
  const second = scripted([cold('-l|', { l: list([dns]) })], [cold<KubeWatchEvent>('-')]);
  expectObservable(run(cold('c----n', { c: first, n: second }), scheduler), '^ 20ms !').toBe('(as)--d', values);
  expectSubscriptions(oldWatch.subscriptions).toBe('^----!');
}));

test('kubernetes: the stream does not end when the clients do', marbles((h, scheduler) => {
  const { cold, expectObservable } = h;
  const client = scripted([cold('l|', { l: list([web]) })], [cold<KubeWatchEvent>('-')]);
  expectObservable(run(cold('c|', { c: client }), scheduler), '^ 20ms !').toBe('(as)', values);
}));

test('kubernetes: a list that never answers times out and is tried again', marbles((h, scheduler) => {
  const { cold, expectObservable } = h;
  const { log, lines } = recordingLogger();
  const client = scripted([cold<KubeServiceList>('-'), cold('l|', { l: list([web]) })], [cold<KubeWatchEvent>('-')]);
  // times out at 5, waits 10, lists at 15
  expectObservable(run(cold('c', { c: client }), scheduler, { logger: log, listTimeoutMs: 5 }), '^ 30ms !').toBe('a 14ms s', values);
  h.flush();
  assert.match(lines().find((l) => l.level === 40)?.msg ?? '', /no answer within 5 ms/);
}));

test('kubernetes: a watch open longer than maxWatchMs is cut and re-listed', marbles((h, scheduler) => {
  const { cold, expectObservable } = h;
  const watch = cold<KubeWatchEvent>('-');
  const client = scripted([cold('l|', { l: list([web]) }), cold('l|', { l: list([dns]) })], [watch]);
  // cut at 8, waits 10, re-lists at 18
  expectObservable(run(cold('c', { c: client }), scheduler, { maxWatchMs: 8 }), '^ 20ms !').toBe('(as) 14ms d', values);
  h.expectSubscriptions(watch.subscriptions).toBe(['^-------!', '------------------^--!']);
}));

test('kubernetes: bad input is one log line per Service naming it; its other ports still count; a re-list does not repeat it', marbles((h, scheduler) => {
  const { cold, expectObservable } = h;
  const { log, lines } = recordingLogger();
  const odd = svc('shop', 'odd', 'u-odd', 'NodePort', [
    { name: 'assoc', protocol: 'SCTP', port: 9, nodePort: 30009 },
    { name: 'zero', protocol: 'TCP', port: 80, nodePort: 0 },
    { name: 'ok', protocol: 'UDP', port: 53, nodePort: 30053 },
  ]);
  const empty = svc('shop', 'empty', 'u-empty', 'NodePort', []);
  const huge = svc('shop', 'huge', 'u-huge', 'LoadBalancer', [{ port: 70000 }]);
  const client = scripted(
    [cold('l|', { l: list([odd, empty, huge, web]) })],
    [cold<KubeWatchEvent>('-#', undefined, new Error('socket hang up')), cold<KubeWatchEvent>('-')],
  );
  const s = snapshot([
    [API, [apiFwd]],
    ['u-odd', [k(30053, 'u-odd', 'udp')]],
    ['u-web', webFwd],
  ]);
  expectObservable(run(cold('c', { c: client }), scheduler, { logger: log }), '^ 20ms !').toBe('(as) 7ms s', { ...values, s });
  h.flush();
  const about = lines().filter((l) => l.level === 40 && l.msg.startsWith('Service '));
  assert.deepEqual(about.map((l) => l.msg), [
    'Service shop/odd: port "assoc" has protocol "SCTP", which cannot be forwarded (only TCP and UDP); port "zero" has nodePort 0, not a port in 1..65535; forwarding its other ports',
    'Service shop/empty: is of type NodePort but has no ports; nothing of it is forwarded',
    'Service shop/huge: port #0 has port 70000, not a port in 1..65535; nothing of it is forwarded',
  ]);
}));

test('kubernetes: a fixed Service is logged again if it breaks again; an unknown event type is one line and ignored', marbles((h, scheduler) => {
  const { cold, expectObservable } = h;
  const { log, lines } = recordingLogger();
  const bad = svc('default', 'web', 'u-web', 'NodePort', [{ port: 80, nodePort: 0 }], '5');
  const client = scripted(
    [cold('--l|', { l: list([bad]) })],
    [cold<KubeWatchEvent>('-f-b-?', { f: ev('MODIFIED', web), b: ev('MODIFIED', bad), '?': { type: 'WHATEVER' } as unknown as KubeWatchEvent })],
  );
  expectObservable(run(cold('c', { c: client }), scheduler, { logger: log }), '^ 20ms !').toBe('a-aw-x', values);
  h.flush();
  const warnings = lines().filter((l) => l.level === 40).map((l) => l.msg);
  assert.deepEqual(warnings, [
    'Service default/web: port #0 has nodePort 0, not a port in 1..65535; nothing of it is forwarded',
    'Service default/web: port #0 has nodePort 0, not a port in 1..65535; nothing of it is forwarded',
    'ignoring a Service watch event of unknown type "WHATEVER"',
  ]);
}));

test('kubernetes: a watch event whose object is not a Service is one line and ignored; the watch goes on', marbles((h, scheduler) => {
  const { cold, expectObservable } = h;
  const { log, lines } = recordingLogger();
  const broken = (type: string, object: unknown): KubeWatchEvent => ({ type, object }) as unknown as KubeWatchEvent;
  const client = scripted(
    [cold('-l|', { l: list([]) })],
    [cold<KubeWatchEvent>('-n-d-s-w', { n: broken('ADDED', null), d: broken('DELETED', 'u-web'), s: broken('MODIFIED', 42), w: ev('ADDED', web) })],
  );
  expectObservable(run(cold('c', { c: client }), scheduler, { logger: log }), '^ 20ms !').toBe('aa------w', values);
  h.flush();
  assert.deepEqual(lines().filter((l) => l.level >= 40).map((l) => l.msg), [
    'ignoring a Service watch ADDED event whose object is null, not a Service',
    'ignoring a Service watch DELETED event whose object is "u-web", not a Service',
    'ignoring a Service watch MODIFIED event whose object is 42, not a Service',
  ]);
}));
