import assert from 'node:assert/strict';
import { test } from 'node:test';
import { defer, Observable, of, throwError, type SchedulerLike } from 'rxjs';
import {
  CONTAINERD_EVENTS_OPEN,
  containerdEvents,
  type ContainerdClient,
  type ContainerdContainer,
  type ContainerdEvent,
  type ContainerdTask,
} from '../streams/containerd.js';
import { remove, snapshot, upsert, type Forward, type SourceEvent } from '../src/model.js';
import type { RunHelpers } from './helpers.js';
import { fwd, marbles, recordingLogger } from './helpers.js';

const backoff = { initialMs: 10, maxMs: 40, factor: 2, jitter: 0, stableMs: 100 };
type Ev = typeof CONTAINERD_EVENTS_OPEN | ContainerdEvent;
const O: typeof CONTAINERD_EVENTS_OPEN = CONTAINERD_EVENTS_OPEN;

const start = (namespace: string, id: string): ContainerdEvent => ({ namespace, topic: '/tasks/start', event: { container_id: id } });
const exit = (namespace: string, id: string, execId = id): ContainerdEvent => ({ namespace, topic: '/tasks/exit', event: { container_id: id, id: execId } });
const update = (namespace: string, id: string, labels: Record<string, string>): ContainerdEvent => ({
  namespace,
  topic: '/containers/update',
  event: { id, labels },
});
const del = (namespace: string, id: string): ContainerdEvent => ({ namespace, topic: '/containers/delete', event: { id } });

const running = (id: string): ContainerdTask => ({ container_id: '', id, status: 'RUNNING' });
const task = (id: string, status: ContainerdTask['status']): ContainerdTask => ({ container_id: id, id, status });

const portsLabel = (...mappings: object[]): Record<string, string> => ({ 'nerdctl/ports': JSON.stringify(mappings) });
const http = { HostPort: 8080, ContainerPort: 80, Protocol: 'tcp', HostIP: '0.0.0.0' };
const dns = { hostport: 5353, containerport: 53, protocol: 'UDP', hostip: '127.0.0.1' };

const cd = (hostPort: number, owner: string, opts: { protocol?: 'tcp' | 'udp'; hostIp?: string; containerPort?: number } = {}): Forward =>
  fwd(hostPort, { ...opts, owner, source: 'containerd' });
const webPorts = (owner: string): Forward[] => [cd(8080, owner, { containerPort: 80 })];
const dnsPorts = (owner: string): Forward[] => [cd(5353, owner, { protocol: 'udp', hostIp: '127.0.0.1', containerPort: 53 })];

interface Script {
  readonly connections: Observable<Ev>[];
  readonly namespaces?: Observable<readonly string[]>[];
  readonly tasks?: (namespace: string) => Observable<readonly ContainerdTask[]>;
  readonly container?: (namespace: string, id: string) => Observable<ContainerdContainer>;
  readonly networkConfig?: (dir: string) => Observable<string | undefined>;
}

/** Calls the client received, in order, so tests can check what was (not) looked up. */
type Calls = string[];

/** A client whose every connection plays the next scripted events observable (and the next namespace list). */
function scripted(h: RunHelpers, script: Script, calls: Calls = []): ContainerdClient {
  let c = 0;
  let n = 0;
  const namespaces = script.namespaces ?? [h.cold('(n|)', { n: [] })];
  return {
    events: () => defer(() => script.connections[Math.min(c++, script.connections.length - 1)]!),
    namespaces: () =>
      defer(() => {
        calls.push('namespaces');
        return namespaces[Math.min(n++, namespaces.length - 1)]!;
      }),
    tasks: (ns) =>
      defer(() => {
        calls.push(`tasks ${ns}`);
        return script.tasks ? script.tasks(ns) : h.cold('(t|)', { t: [] });
      }),
    container: (ns, id) =>
      defer(() => {
        calls.push(`container ${ns}/${id}`);
        return script.container ? script.container(ns, id) : throwError(() => new Error('no containers in this script'));
      }),
    networkConfig: (dir) =>
      defer(() => {
        calls.push(`networkConfig ${dir}`);
        return script.networkConfig ? script.networkConfig(dir) : throwError(() => new Error('no files in this script'));
      }),
  };
}

const notFound = (): Error => Object.assign(new Error('5 NOT_FOUND: container not found'), { code: 5 });
const unavailable = (): Error => Object.assign(new Error('14 UNAVAILABLE: No connection established'), { code: 14 });
const cancelled = (): Error => Object.assign(new Error('1 CANCELLED: Cancelled on client'), { code: 1 });

function run(client: ContainerdClient, scheduler: SchedulerLike, log = recordingLogger().log): Observable<SourceEvent> {
  return containerdEvents(client, { backoff, scheduler, logger: log });
}

test('containerd: subscribes first, scans, then follows a task start and its exit', marbles((h, scheduler) => {
  const { cold, expectObservable } = h;
  const labels: Record<string, Record<string, string>> = { c1: portsLabel(http), c2: portsLabel(dns) };
  const client = scripted(h, {
    connections: [cold<Ev>('O-a--b', { O, a: start('ns1', 'c2'), b: exit('ns1', 'c2') })],
    namespaces: [cold('-n|', { n: ['ns1'] })],
    tasks: () => cold('-t|', { t: [running('c1')] }),
    container: (_ns, id) => cold('-c|', { c: { id, labels: labels[id]! } }),
  });
  // The start arrives (2) while the scan is in flight: it waits behind the snapshot (4).
  expectObservable(run(client, scheduler), '^ 20ms !').toBe('----sur', {
    s: snapshot([['ns1/c1', webPorts('ns1/c1')]]),
    u: upsert('ns1/c2', dnsPorts('ns1/c2')),
    r: remove('ns1/c2'),
  });
}));

test('containerd: the scan covers every namespace, keeps live tasks only, and keys owners by namespace', marbles((h, scheduler) => {
  const { cold, expectObservable } = h;
  const calls: Calls = [];
  const tasks: Record<string, ContainerdTask[]> = {
    default: [running('web'), task('done', 'STOPPED'), task('new', 'CREATED'), task('nap', 'PAUSED')],
    'k8s.io': [running('web'), task('gone', 'RUNNING')],
    empty: [],
  };
  const client = scripted(
    h,
    {
      connections: [cold<Ev>('O', { O })],
      namespaces: [cold('(n|)', { n: ['default', 'k8s.io', 'empty'] })],
      tasks: (ns) => cold('(t|)', { t: tasks[ns]! }),
      container: (ns, id) =>
        id === 'gone' ? throwError(notFound) : cold('(c|)', { c: { id, labels: ns === 'default' && id === 'web' ? portsLabel(http) : portsLabel(dns) } }),
    },
    calls,
  );
  expectObservable(run(client, scheduler), '^ 10ms !').toBe('s', {
    s: snapshot([
      ['default/nap', dnsPorts('default/nap')],
      ['default/web', webPorts('default/web')],
      ['k8s.io/web', dnsPorts('k8s.io/web')],
    ]),
  });
  h.flush();
  assert.deepEqual(calls, [
    'namespaces',
    'tasks default',
    'container default/web',
    'container default/nap',
    'tasks k8s.io',
    'container k8s.io/web',
    'container k8s.io/gone',
    'tasks empty',
  ]);
}));

test('containerd: an exec process exiting is not the container exiting; the init process is', marbles((h, scheduler) => {
  const { cold, expectObservable } = h;
  const client = scripted(h, {
    connections: [cold<Ev>('O-abcd', { O, a: exit('ns', 'c1', 'exec-1'), b: exit('ns', 'c1', 'c1'), c: exit('ns', 'c2', ''), d: exit('other', 'c3', 'sh') })],
    namespaces: [cold('(n|)', { n: ['ns'] })],
    tasks: () => cold('(t|)', { t: [running('c1'), running('c2')] }),
    container: (_ns, id) => cold('(c|)', { c: { id, labels: id === 'c1' ? portsLabel(http) : portsLabel(dns) } }),
  });
  expectObservable(run(client, scheduler), '^ 10ms !').toBe('s--xy', {
    s: snapshot([
      ['ns/c1', webPorts('ns/c1')],
      ['ns/c2', dnsPorts('ns/c2')],
    ]),
    x: remove('ns/c1'),
    y: remove('ns/c2'),
  });
}));

test('containerd: a label update re-reads a running container\'s ports and is ignored for one that does not run', marbles((h, scheduler) => {
  const { cold, expectObservable } = h;
  const calls: Calls = [];
  const client = scripted(
    h,
    {
      connections: [
        cold<Ev>('O-abcde', {
          O,
          a: update('ns', 'c1', portsLabel(dns)),
          b: update('ns', 'idle', portsLabel(http)),
          c: exit('ns', 'c1'),
          d: update('ns', 'c1', portsLabel(http)),
          e: update('ns', 'c2', {}),
        }),
      ],
      namespaces: [cold('(n|)', { n: ['ns'] })],
      tasks: () => cold('(t|)', { t: [running('c1'), running('c2')] }),
      container: (_ns, id) => cold('(c|)', { c: { id, labels: portsLabel(http) } }),
    },
    calls,
  );
  // a: c1's ports change; b: a container without a running task; c: c1 exits; d: too late for c1;
  // e: c2's labels no longer publish anything
  expectObservable(run(client, scheduler), '^ 10ms !').toBe('s-u-r-e', {
    s: snapshot([
      ['ns/c1', webPorts('ns/c1')],
      ['ns/c2', webPorts('ns/c2')],
    ]),
    u: upsert('ns/c1', dnsPorts('ns/c1')),
    r: remove('ns/c1'),
    e: upsert('ns/c2', []),
  });
  h.flush();
  assert.deepEqual(calls.filter((c) => c.startsWith('container')), ['container ns/c1', 'container ns/c2'], 'updates use the labels in the event');
}));

test('containerd: a container deletion removes it, and a later update of that ID is ignored', marbles((h, scheduler) => {
  const { cold, expectObservable } = h;
  const client = scripted(h, {
    connections: [cold<Ev>('O-ab', { O, a: del('ns', 'c1'), b: update('ns', 'c1', portsLabel(dns)) })],
    namespaces: [cold('(n|)', { n: ['ns'] })],
    tasks: () => cold('(t|)', { t: [running('c1')] }),
    container: (_ns, id) => cold('(c|)', { c: { id, labels: portsLabel(http) } }),
  });
  expectObservable(run(client, scheduler), '^ 10ms !').toBe('s-x', { s: snapshot([['ns/c1', webPorts('ns/c1')]]), x: remove('ns/c1') });
}));

test('containerd: a dropped event stream (CANCELLED on a containerd restart) reconnects with back-off and re-lists', marbles((h, scheduler) => {
  const { cold, expectObservable } = h;
  const client = scripted(h, {
    connections: [cold<Ev>('O--#', { O }, cancelled()), cold<Ev>('O', { O })],
    namespaces: [cold('(n|)', { n: ['ns'] })],
    tasks: (() => {
      let calls = 0;
      return () => (calls++ === 0 ? cold('(t|)', { t: [running('c1')] }) : cold('(t|)', { t: [] }));
    })(),
    container: (_ns, id) => cold('(c|)', { c: { id, labels: portsLabel(http) } }),
  });
  // dropped at 3, back-off 10 → reconnect at 13 and the fresh snapshot drops c1
  expectObservable(run(client, scheduler), '^ 20ms !').toBe('s 12ms e', { s: snapshot([['ns/c1', webPorts('ns/c1')]]), e: snapshot([]) });
}));

test('containerd: an event stream that just ends is a reconnect too, and the running set starts afresh', marbles((h, scheduler) => {
  const { cold, expectObservable } = h;
  const client = scripted(h, {
    connections: [cold<Ev>('O-|', { O }), cold<Ev>('O-a', { O, a: update('ns', 'c1', portsLabel(dns)) })],
    namespaces: [cold('(n|)', { n: ['ns'] })],
    tasks: (() => {
      let calls = 0;
      return () => (calls++ === 0 ? cold('(t|)', { t: [running('c1')] }) : cold('(t|)', { t: [] }));
    })(),
    container: (_ns, id) => cold('(c|)', { c: { id, labels: portsLabel(http) } }),
  });
  // c1 ran before the reconnect but not after: its label update must not bring its ports back
  expectObservable(run(client, scheduler), '^ 20ms !').toBe('s 11ms e', { s: snapshot([['ns/c1', webPorts('ns/c1')]]), e: snapshot([]) });
}));

test('containerd: an error anywhere in the scan backs off and tries the whole connection again', marbles((h, scheduler) => {
  const { cold, expectObservable } = h;
  let tasksCalls = 0;
  let lookups = 0;
  const client = scripted(h, {
    connections: [cold<Ev>('O', { O }), cold<Ev>('O', { O }), cold<Ev>('O', { O })],
    namespaces: [cold('(n|)', { n: ['ns'] })],
    // the first scan fails listing tasks, the second looking up a container, the third succeeds
    tasks: () => (tasksCalls++ === 0 ? cold('-#', undefined, unavailable()) : cold('(t|)', { t: [running('c1')] })),
    container: (_ns, id) => (lookups++ === 0 ? cold('-#', undefined, new Error('4 DEADLINE_EXCEEDED')) : cold('(c|)', { c: { id, labels: portsLabel(http) } })),
  });
  // fails at 1, waits 10; fails at 12, waits 20; succeeds at 32
  expectObservable(run(client, scheduler), '^ 40ms !').toBe('32ms s', { s: snapshot([['ns/c1', webPorts('ns/c1')]]) });
}));

test('containerd: a missing socket at start is waited for with growing back-off', marbles((h, scheduler) => {
  const { cold, expectObservable } = h;
  const client = scripted(h, {
    connections: [cold<Ev>('#', undefined, unavailable()), cold<Ev>('#', undefined, unavailable()), cold<Ev>('O', { O })],
    namespaces: [cold('(n|)', { n: [] })],
  });
  const { log, lines } = recordingLogger();
  // fail at 0, wait 10; fail at 10, wait 20; connect at 30
  expectObservable(run(client, scheduler, log), '^ 40ms !').toBe('30ms e', { e: snapshot([]) });
  h.flush();
  const warnings = lines().filter((l) => l.level === 40).map((l) => l.msg);
  assert.equal(warnings.length, 2);
  assert.match(warnings[0]!, /cannot reach containerd \(14 UNAVAILABLE.*\); reconnecting and re-listing in 10 ms/);
}));

test('containerd: a start whose container is gone is a removal; another lookup error reconnects and re-lists, so its ports are not lost', marbles((h, scheduler) => {
  const { cold, expectObservable } = h;
  const { log, lines } = recordingLogger();
  let c3Lookups = 0;
  const client = scripted(h, {
    connections: [cold<Ev>('O-ab', { O, a: start('ns', 'c2'), b: start('ns', 'c3') }), cold<Ev>('O', { O })],
    namespaces: [cold('(n|)', { n: [] }), cold('(n|)', { n: ['ns'] })],
    tasks: () => cold('(t|)', { t: [running('c3')] }),
    container: (_ns, id) => {
      if (id === 'c2') return throwError(notFound);
      // containerd too slow once (its deadline), then answers
      return ++c3Lookups === 1 ? throwError(() => new Error('4 DEADLINE_EXCEEDED: Deadline exceeded')) : cold('(c|)', { c: { id, labels: portsLabel(http) } });
    },
  });
  // c3's lookup fails at 3: back-off 10, reconnect at 13, and the scan brings c3 with its ports
  expectObservable(run(client, scheduler, log), '^ 20ms !').toBe('e-r 10ms s', {
    e: snapshot([]),
    r: remove('ns/c2'),
    s: snapshot([['ns/c3', webPorts('ns/c3')]]),
  });
  h.flush();
  const warnings = lines().filter((l) => l.level >= 40);
  assert.equal(warnings.length, 1);
  assert.match(warnings[0]!.msg, /cannot look up container c3 in namespace ns after its task started \(4 DEADLINE_EXCEEDED.*re-listing in 10 ms/);
}));

test('containerd: a malformed port gets one log line naming container and namespace; the valid ports still count', marbles((h, scheduler) => {
  const { cold, expectObservable } = h;
  const { log, lines } = recordingLogger();
  const id = 'a'.repeat(64);
  const odd = {
    'nerdctl/ports': JSON.stringify([http, { HostPort: 70000, ContainerPort: 81 }, { HostPort: 9000, Protocol: 'sctp' }]),
  };
  const client = scripted(h, {
    connections: [cold<Ev>('O-a', { O, a: start('tenant', id) })],
    container: () => cold('(c|)', { c: { id, labels: odd } }),
  });
  expectObservable(run(client, scheduler, log), '^ 10ms !').toBe('e-u', { e: snapshot([]), u: upsert(`tenant/${id}`, webPorts(`tenant/${id}`)) });
  h.flush();
  const warnings = lines().filter((l) => l.level === 40);
  assert.equal(warnings.length, 1, 'one line for the container, however many entries are bad');
  assert.match(warnings[0]!.msg, /^container aaaaaaaaaaaa in namespace tenant: /);
  assert.match(warnings[0]!.msg, /entry 2 .*host port 70000 is not a port number/);
  assert.match(warnings[0]!.msg, /entry 3 .*unknown protocol "sctp"/);
  assert.match(warnings[0]!.msg, /forwarding its 1 valid port$/);
}));

test('containerd: a label that is not JSON gives the container no ports and one line; the stream goes on', marbles((h, scheduler) => {
  const { cold, expectObservable } = h;
  const { log, lines } = recordingLogger();
  const client = scripted(h, {
    connections: [cold<Ev>('O-ab', { O, a: start('ns', 'bad'), b: start('ns', 'good') })],
    container: (_ns, id) => cold('(c|)', { c: { id, labels: id === 'bad' ? { 'nerdctl/ports': '[{"HostPort":80' } : portsLabel(http) } }),
  });
  expectObservable(run(client, scheduler, log), '^ 10ms !').toBe('e-uv', {
    e: snapshot([]),
    u: upsert('ns/bad', []),
    v: upsert('ns/good', webPorts('ns/good')),
  });
  h.flush();
  const warnings = lines().filter((l) => l.level === 40);
  assert.equal(warnings.length, 1);
  assert.match(warnings[0]!.msg, /container bad in namespace ns: the nerdctl\/ports label is not JSON/);
}));

test('containerd: without a nerdctl/ports label the state directory\'s network-config.json is read, in either shape', marbles((h, scheduler) => {
  const { cold, expectObservable } = h;
  const { log, lines } = recordingLogger();
  const calls: Calls = [];
  const files: Record<string, string | undefined> = {
    '/state/obj': JSON.stringify({ portMappings: [http], other: 1 }),
    '/state/arr': JSON.stringify([dns]),
    '/state/none': undefined,
  };
  const labels: Record<string, Record<string, string>> = {
    obj: { 'nerdctl/state-dir': '/state/obj' },
    arr: { 'nerdctl/state-dir': '/state/arr' },
    none: { 'nerdctl/state-dir': '/state/none' },
    both: { 'nerdctl/state-dir': '/state/obj', ...portsLabel(dns) },
    broken: { 'nerdctl/state-dir': '/state/broken' },
  };
  const client = scripted(
    h,
    {
      connections: [cold<Ev>('O-a', { O, a: start('ns', 'broken') })],
      namespaces: [cold('(n|)', { n: ['ns'] })],
      tasks: () => cold('(t|)', { t: ['obj', 'arr', 'none', 'both'].map(running) }),
      container: (_ns, id) => cold('(c|)', { c: { id, labels: labels[id]! } }),
      networkConfig: (dir) => {
        if (dir === '/state/broken') return throwError(() => new Error('EACCES: permission denied'));
        const text = files[dir];
        // (a marble value of undefined would play the letter itself)
        return text === undefined ? of(undefined) : cold('(f|)', { f: text });
      },
    },
    calls,
  );
  expectObservable(run(client, scheduler, log), '^ 10ms !').toBe('s-u', {
    s: snapshot([
      ['ns/arr', dnsPorts('ns/arr')],
      ['ns/both', dnsPorts('ns/both')],
      ['ns/none', []],
      ['ns/obj', webPorts('ns/obj')],
    ]),
    u: upsert('ns/broken', []),
  });
  h.flush();
  assert.deepEqual(
    calls.filter((c) => c.startsWith('networkConfig')).sort(),
    ['networkConfig /state/arr', 'networkConfig /state/broken', 'networkConfig /state/none', 'networkConfig /state/obj'],
    'the label wins: no file read for the container that has both',
  );
  const warnings = lines().filter((l) => l.level === 40);
  assert.equal(warnings.length, 1);
  assert.match(warnings[0]!.msg, /container broken in namespace ns: cannot read \/state\/broken\/network-config.json \(EACCES/);
}));
