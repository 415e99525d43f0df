import assert from 'node:assert/strict';
import { test } from 'node:test';
import { defer, Observable, throwError, type SchedulerLike } from 'rxjs';
import {
  dockerEvents,
  EVENTS_OPEN,
  type DockerClient,
  type DockerContainerInspect,
  type DockerContainerSummary,
  type DockerEvent,
} from '../streams/docker.js';
import { remove, snapshot, upsert, type SourceEvent } from '../src/model.js';
import { fwd, marbles, recordingLogger } from './helpers.js';

const backoff = { initialMs: 10, maxMs: 40, factor: 2, jitter: 0, stableMs: 100 };
type Ev = typeof EVENTS_OPEN | DockerEvent;
const O: typeof EVENTS_OPEN = EVENTS_OPEN;
test('docker: the containers running at connect teach it, so the first start after connecting is published at once', marbles((h, scheduler) => {
  const { cold, expectObservable } = h;
  const running: DockerContainerSummary = { Id: 'c1', Ports: [{ IP: '0.0.0.0', PrivatePort: 80, PublicPort: 8080, Type: 'tcp' }, { IP: '::', PrivatePort: 80, PublicPort: 8080, Type: 'tcp' }] };
  const unpublished: DockerContainerSummary = { Id: 'c0', Ports: [{ PrivatePort: 53, Type: 'udp' }] };
  const { inspect, calls } = inspects({
    c1: [cold('-i|', { i: asStarted('c1', 8080) })],
    c2: [cold('-i|', { i: asCreated('c2', 9090) }), cold('-i|', { i: asStarted('c2', 9090) })],
  });
  const client = scripted([cold<Ev>('O---a-b', { O, a: ev('create', 'c2'), b: ev('start', 'c2') })], [cold('l|', { l: [unpublished, running] })], inspect);
  // c1's inspect (1 → 2) teaches how "" expands; c2's start (6) is published at once and confirmed at 8
  const stream = dockerEvents(client, { backoff, scheduler, logger: recordingLogger().log, confirmAfter: () => cold('-x') });
  const listed = snapshot([['c0', []], ['c1', [fwd(8080, { owner: 'c1', containerPort: 80 }), fwd(8080, { owner: 'c1', hostIp: '::', containerPort: 80 })]]]);
  expectObservable(stream, '^ 20ms !').toBe('l-----p-q', { l: listed, p: published('c2', 9090), q: published('c2', 9090) });
  h.flush();
  // c0 publishes nothing, so it is not read
  assert.deepEqual(Object.fromEntries(calls), { c1: 1, c2: 2 });
}));

const ev = (Action: string, id: string): DockerEvent => ({ Type: 'container', Action, Actor: { ID: id } });

const web: DockerContainerSummary = { Id: 'c1', Ports: [{ IP: '0.0.0.0', PrivatePort: 80, PublicPort: 8080, Type: 'tcp' }] };
const webInspect: DockerContainerInspect = {
  Id: 'c2',
  State: { Running: true },
  NetworkSettings: {
    Ports: {
      '53/udp': [{ HostIp: '127.0.0.1', HostPort: '5353' }],
      '80/tcp': [
        { HostIp: '0.0.0.0', HostPort: '9090' },
        { HostIp: '::', HostPort: '9090' },
      ],
      '443/tcp': null,
    },
  },
};
const c1Ports = [fwd(8080, { owner: 'c1', containerPort: 80 })];
const c2Ports = [
  fwd(5353, { owner: 'c2', protocol: 'udp', hostIp: '127.0.0.1', containerPort: 53 }),
  fwd(9090, { owner: 'c2', containerPort: 80 }),
  fwd(9090, { owner: 'c2', hostIp: '::', containerPort: 80 }),
];

/** A client whose every connection plays the next scripted events observable. */
function scripted(
  connections: Observable<Ev>[],
  lists: Observable<readonly DockerContainerSummary[]>[],
  inspect: (id: string) => Observable<DockerContainerInspect>,
): DockerClient {
  let c = 0;
  let l = 0;
  return {
    events: () => defer(() => connections[Math.min(c++, connections.length - 1)]!),
    listContainers: () => defer(() => lists[Math.min(l++, lists.length - 1)]!),
    inspect,
  };
}

const values = {
  s: snapshot([['c1', c1Ports]]),
  e: snapshot([]),
  u: upsert('c2', c2Ports),
  r: remove('c2'),
  x: remove('c1'),
};

function run(client: DockerClient, scheduler: SchedulerLike): Observable<SourceEvent> {
  return dockerEvents(client, { backoff, scheduler, logger: recordingLogger().log });
}

test('docker: opens events first, snapshots the list, then follows start and die', marbles((h, scheduler) => {
  const { cold, expectObservable } = h;
  const client = scripted(
    [cold<Ev>('O-a--b', { O, a: ev('start', 'c2'), b: ev('die', 'c2') })],
    [cold('---l|', { l: [web] })],
    () => cold('-i|', { i: webInspect }),
  );
  // the start event arrives while the list is in flight: it waits behind the snapshot
  expectObservable(run(client, scheduler), '^ 10ms !').toBe('---s-ur', values);
}));

test('docker: stop and destroy remove without inspecting; other event types are ignored', marbles((h, scheduler) => {
  const { cold, expectObservable } = h;
  const inspected: string[] = [];
  const client = scripted(
    [cold<Ev>('O-abc', { O, a: ev('stop', 'c2'), b: { Type: 'image', Action: 'start', Actor: { ID: 'i' } }, c: ev('destroy', 'c2') })],
    [cold('l|', { l: [web] })],
    (id) => {
      inspected.push(id);
      return cold('|');
    },
  );
  expectObservable(run(client, scheduler), '^ 10ms !').toBe('s-r-r', values);
  h.flush();
  // c1 only, the running container read once at connect to learn from (learnFromRunning)
  assert.deepEqual(inspected, ['c1']);
}));

test('docker: a dropped event stream reconnects with back-off and re-lists', marbles((h, scheduler) => {
  const { cold, expectObservable } = h;
  const client = scripted(
    [cold<Ev>('O--#', { O }), cold<Ev>('O', { O })],
    [cold('l|', { l: [web] }), cold('l|', { l: [] })],
    () => cold('|'),
  );
  // dropped at 3, back-off 10 → reconnect at 13 and the fresh snapshot drops c1
  expectObservable(run(client, scheduler), '^ 20ms !').toBe('s 12ms e', values);
}));

test('docker: an event stream that just ends is a reconnect too', marbles((h, scheduler) => {
  const { cold, expectObservable } = h;
  const client = scripted([cold<Ev>('O-|', { O }), cold<Ev>('O', { O })], [cold('l|', { l: [web] }), cold('l|', { l: [] })], () => cold('|'));
  expectObservable(run(client, scheduler), '^ 20ms !').toBe('s 11ms e', values);
}));

test('docker: an error while listing backs off and tries the whole connection again', marbles((h, scheduler) => {
  const { cold, expectObservable } = h;
  const client = scripted(
    [cold<Ev>('O', { O }), cold<Ev>('O', { O })],
    [cold('-#', undefined, new Error('500 from dockerd')), cold('l|', { l: [web] })],
    () => cold('|'),
  );
  expectObservable(run(client, scheduler), '^ 20ms !').toBe('- 10ms s', values);
}));

test('docker: a missing socket at start is waited for with growing back-off', marbles((h, scheduler) => {
  const { cold, expectObservable } = h;
  const enoent = Object.assign(new Error('connect ENOENT /var/run/docker.sock'), { code: 'ENOENT' });
  const client = scripted(
    [cold<Ev>('#', undefined, enoent), cold<Ev>('#', undefined, enoent), cold<Ev>('O', { O })],
    [cold('l|', { l: [web] })],
    () => cold('|'),
  );
  // fail at 0, wait 10; fail at 10, wait 20; connect at 30
  expectObservable(run(client, scheduler), '^ 40ms !').toBe('30ms s', values);
}));

test('docker: an inspect that finds the container gone removes it; any other inspect error re-lists', marbles((h, scheduler) => {
  const { cold, expectObservable } = h;
  const { log, lines } = recordingLogger();
  const gone = Object.assign(new Error('no such container'), { statusCode: 404 });
  const client = scripted(
    [cold<Ev>('O-ab', { O, a: ev('start', 'c2'), b: ev('start', 'c3') }), cold<Ev>('O', { O })],
    [cold('l|', { l: [] }), cold('l|', { l: [web] })],
    (id) => (id === 'c2' ? throwError(() => gone) : throwError(() => new Error('socket hang up'))),
  );
  // c3's inspect fails at 3: back-off 10, reconnect at 13, and the list brings what c3 has (here c1)
  expectObservable(dockerEvents(client, { backoff, scheduler, logger: log }), '^ 20ms !').toBe('e-r 10ms s', values);
  h.flush();
  const warnings = lines().filter((l) => l.level >= 40);
  assert.equal(warnings.length, 1);
  assert.match(warnings[0]!.msg, /cannot inspect container c3.*socket hang up.*re-listing in 10 ms/);
}));

test('docker: a list or inspect without an answer times out into a reconnect', marbles((h, scheduler) => {
  const { cold, expectObservable } = h;
  const { log, lines } = recordingLogger();
  const client = scripted(
    [cold<Ev>('O', { O }), cold<Ev>('O-a', { O, a: ev('start', 'c2') }), cold<Ev>('O', { O })],
    [cold('-'), cold('l|', { l: [] }), cold('l|', { l: [web] })],
    () => cold('-'),
  );
  // the list hangs: timeout at 5, reconnect at 15 (e); c2's inspect hangs from 17 to 22, reconnect at 42 (s)
  const opts = { backoff, scheduler, logger: log, requestTimeoutMs: 5 };
  expectObservable(dockerEvents(client, opts), '^ 50ms !').toBe('15ms e 26ms s', values);
  h.flush();
  const msgs = lines().filter((l) => l.level >= 40).map((l) => l.msg);
  assert.match(msgs[0]!, /no answer to the container list within 5 ms/);
  assert.match(msgs[1]!, /no answer to the inspect of container c2 within 5 ms/);
}));

test('docker: an event stream that does not open in time is a reconnect; once open, quiet hours are fine', marbles((h, scheduler) => {
  const { cold, expectObservable } = h;
  const { log, lines } = recordingLogger();
  const client = scripted([cold<Ev>('-'), cold<Ev>('O', { O })], [cold('l|', { l: [web] })], () => cold('|'));
  // no answer: timeout at 5, back-off 10, reconnect at 15 and list; then nothing for 100 frames
  expectObservable(dockerEvents(client, { backoff, scheduler, logger: log, requestTimeoutMs: 5 }), '^ 120ms !').toBe('15ms s', values);
  h.flush();
  const msgs = lines().filter((l) => l.level >= 40).map((l) => l.msg);
  assert.equal(msgs.length, 1);
  assert.match(msgs[0]!, /no answer to the event stream within 5 ms/);
}));

test('docker: a start whose container already stopped again is a removal', marbles((h, scheduler) => {
  const { cold, expectObservable } = h;
  const client = scripted(
    [cold<Ev>('O-a', { O, a: ev('start', 'c2') })],
    [cold('l|', { l: [] })],
    () => cold('i|', { i: { ...webInspect, State: { Running: false } } }),
  );
  expectObservable(run(client, scheduler), '^ 10ms !').toBe('e-r', values);
}));

test('docker: a malformed port gets one log line and the container keeps its valid ports', marbles((h, scheduler) => {
  const { cold, expectObservable } = h;
  const { log, lines } = recordingLogger();
  const odd: DockerContainerInspect = {
    Id: 'c2',
    State: { Running: true },
    NetworkSettings: { Ports: { 'eighty/tcp': [{ HostIp: '0.0.0.0', HostPort: '1' }], '80/tcp': [{ HostIp: '0.0.0.0', HostPort: '9090' }] } },
  };
  const client = scripted([cold<Ev>('O-a', { O, a: ev('start', 'c2') })], [cold('l|', { l: [] })], () => cold('i|', { i: odd }));
  expectObservable(dockerEvents(client, { backoff, scheduler, logger: log }), '^ 10ms !').toBe('e-u', {
    e: values.e,
    u: upsert('c2', [fwd(9090, { owner: 'c2', containerPort: 80 })]),
  });
  h.flush();
  const warnings = lines().filter((l) => l.level === 40);
  assert.equal(warnings.length, 1);
  assert.match(warnings[0]!.msg, /container c2: unrecognised port spec "eighty\/tcp"/);
}));

// Predicting a start from what its create asked for (streams/dockerPredict.ts).

/** `docker run -p PORT:80` on dockerd 20.10: as created, and as started. */
const asCreated = (id: string, port: number): DockerContainerInspect => ({
  Id: id,
  State: { Running: false },
  HostConfig: { NetworkMode: 'default', PortBindings: { '80/tcp': [{ HostIp: '', HostPort: String(port) }] } },
  NetworkSettings: { Ports: {} },
});
const asStarted = (id: string, port: number, ips: readonly string[] = ['0.0.0.0', '::']): DockerContainerInspect => ({
  ...asCreated(id, port),
  State: { Running: true },
  NetworkSettings: { Ports: { '80/tcp': ips.map((HostIp) => ({ HostIp, HostPort: String(port) })) } },
});
const published = (id: string, port: number, ips: readonly string[] = ['0.0.0.0', '::']): SourceEvent =>
  upsert(id, ips.map((hostIp) => fwd(port, { owner: id, hostIp, containerPort: 80 })));

/** Answers each container's inspects in turn from `answers[id]` (the last one repeats), counting them. */
function inspects(answers: Readonly<Record<string, readonly Observable<DockerContainerInspect>[]>>): { inspect: (id: string) => Observable<DockerContainerInspect>; calls: Map<string, number> } {
  const calls = new Map<string, number>();
  return {
    calls,
    inspect: (id) =>
      defer(() => {
        const n = calls.get(id) ?? 0;
        calls.set(id, n + 1);
        const list = answers[id] ?? [];
        return list[Math.min(n, list.length - 1)] ?? throwError(() => new Error(`no script for ${id}`));
      }),
  };
}

test('docker: once a start has shown how the engine expands addresses, the next start is published at once and then confirmed', marbles((h, scheduler) => {
  const { cold, expectObservable } = h;
  const { inspect, calls } = inspects({
    c2: [cold('-i|', { i: asCreated('c2', 9090) }), cold('-i|', { i: asStarted('c2', 9090) })],
    c3: [cold('-i|', { i: asCreated('c3', 9191) }), cold('-i|', { i: asStarted('c3', 9191) })],
  });
  const client = scripted([cold<Ev>('O-a-b----c-d', { O, a: ev('create', 'c2'), b: ev('start', 'c2'), c: ev('create', 'c3'), d: ev('start', 'c3') })], [cold('l|', { l: [] })], inspect);
  // c2: nothing learned yet, so its start waits for its inspect (4 → 5). c3: published at its
  // start (11), and the inspect, made once the confirm wait (1 frame) is over, agrees at 13.
  const stream = dockerEvents(client, { backoff, scheduler, logger: recordingLogger().log, confirmAfter: () => cold('-x') });
  expectObservable(stream, '^ 20ms !').toBe('e----u-----p-q', { e: values.e, u: published('c2', 9090), p: published('c3', 9191), q: published('c3', 9191) });
  h.flush();
  assert.deepEqual(Object.fromEntries(calls), { c2: 2, c3: 2 });
}));

test('docker: a prediction the inspect contradicts is corrected, with one log line', marbles((h, scheduler) => {
  const { cold, expectObservable } = h;
  const { log, lines } = recordingLogger();
  const { inspect } = inspects({
    c2: [cold('-i|', { i: asCreated('c2', 9090) }), cold('-i|', { i: asStarted('c2', 9090) })],
    // the engine was set up differently meanwhile: IPv4 only
    c3: [cold('-i|', { i: asCreated('c3', 9191) }), cold('-i|', { i: asStarted('c3', 9191, ['0.0.0.0']) })],
  });
  const client = scripted([cold<Ev>('O-a-b----c-d', { O, a: ev('create', 'c2'), b: ev('start', 'c2'), c: ev('create', 'c3'), d: ev('start', 'c3') })], [cold('l|', { l: [] })], inspect);
  const stream = dockerEvents(client, { backoff, scheduler, logger: log, confirmAfter: () => cold('-x') });
  expectObservable(stream, '^ 20ms !').toBe('e----u-----p-q', { e: values.e, u: published('c2', 9090), p: published('c3', 9191), q: published('c3', 9191, ['0.0.0.0']) });
  h.flush();
  assert.deepEqual(lines().filter((l) => l.level >= 30 && /predicted/.test(l.msg)).map((l) => l.msg), ['container c3: its ports differed from those predicted at its start; corrected']);
}));

test("docker: a start that comes while its create's inspect is out takes that answer, without asking again", marbles((h, scheduler) => {
  const { cold, expectObservable } = h;
  // dockerd answers the inspect only once the start lets go of the container: as started
  const { inspect, calls } = inspects({ c2: [cold('---i|', { i: asStarted('c2', 9090) })] });
  const client = scripted([cold<Ev>('O-ab', { O, a: ev('create', 'c2'), b: ev('start', 'c2') })], [cold('l|', { l: [] })], inspect);
  expectObservable(run(client, scheduler), '^ 20ms !').toBe('e----u', { e: values.e, u: published('c2', 9090) });
  h.flush();
  assert.equal(calls.get('c2'), 1);
}));

test("docker: a create's inspect that answers from before the start, or fails, leaves the start to its own inspect", marbles((h, scheduler) => {
  const { cold, expectObservable } = h;
  const { log, lines } = recordingLogger();
  const { inspect, calls } = inspects({
    c2: [cold('--i|', { i: asCreated('c2', 9090) }), cold('-i|', { i: asStarted('c2', 9090) })],
    c3: [cold('-#', undefined, new Error('connection reset')), cold('-i|', { i: asStarted('c3', 9191) })],
  });
  const client = scripted([cold<Ev>('O-ab---c-d', { O, a: ev('create', 'c2'), b: ev('start', 'c2'), c: ev('create', 'c3'), d: ev('start', 'c3') })], [cold('l|', { l: [] })], inspect);
  // c2: the create's answer (at 4) shows it not running yet: asked again, answered at 5.
  // c3: the create's inspect failed at 8; its start (9) is not predicted: the ports come at 10
  expectObservable(dockerEvents(client, { backoff, scheduler, logger: log }), '^ 20ms !').toBe('e----u----v', { e: values.e, u: published('c2', 9090), v: published('c3', 9191) });
  h.flush();
  assert.deepEqual(Object.fromEntries(calls), { c2: 2, c3: 2 });
  assert.equal(lines().filter((l) => l.level >= 40).length, 0, 'a failed create inspect costs only the prediction');
}));
