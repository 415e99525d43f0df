/**
 * The containerd stream against a real containerd: `containerdEvents(grpcContainerdClient())`
 * folded by `toPortSet()`, compared with what `ctr tasks ls` says runs. The tests run a
 * containerd of their own (own socket, root and state under /run/portstream-test-containerd and
 * /var/lib/portstream-test-containerd; see containerdEngine.ts), so killing it
 * never touches the system containerd that dockerd uses, and stop it in an `after` hook. Images
 * come from `docker save` of local/busybox:latest (no registry), containers from `ctr run` with
 * `nerdctl/ports` labels, in two namespaces, with host ports in 17000-17999.
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import { pino } from 'pino';
import { tap } from 'rxjs';
import { CONTAINERD_EVENTS_OPEN, containerdEvents, type ContainerdEvent } from '../streams/containerd.js';
import { grpcContainerdClient } from '../streams/containerdClient.js';
import { toPortSet } from '../operators/toPortSet.js';
import type { PortKey, SourceEvent } from '../src/model.js';
import { alive, engineTest, gateFor, recordPortSets, sameKeys, sorted, waitFor, type PortSetRecorder } from './engines.js';
import { containerdNeeds, ctrTruth, leftCgroups, OwnContainerd, TestTasks, type TestContainer } from './containerdEngine.js';

const opts = { needs: containerdNeeds, timeout: 180_000 };
const nsA = 'portstream-test';
const nsB = 'portstream-test-2';

/** Every container any test made, for the truth: a leftover that still runs must be in the view too. */
const made: TestContainer[] = [];
const containerd = new OwnContainerd();

let ready: Promise<void> | undefined;
function containerdReady(): Promise<void> {
  ready ??= (async () => {
    await containerd.start();
    await containerd.sweep();
    await containerd.importBusybox(nsA);
    await containerd.importBusybox(nsB);
  })();
  return ready;
}

if (gateFor(containerdNeeds).status === 'ok') {
  after(async () => {
    if (ready === undefined) return; // no test ran: nothing was started
    await containerd.stop();
    assert.deepEqual(containerd.shims(), [], 'no shim of the tests\' containerd is left');
    assert.deepEqual(leftCgroups(), [], 'no cgroup of the tests\' namespaces is left');
  });
}

interface Watched extends PortSetRecorder {
  /** Every event the stream received, in order (CONTAINERD_EVENTS_OPEN included). */
  readonly received: (typeof CONTAINERD_EVENTS_OPEN | ContainerdEvent)[];
  /** Every source event the stream emitted, in order (before toPortSet folds them). */
  readonly emitted: SourceEvent[];
  /** Log lines at warn and above. */
  readonly warnings: () => string[];
}

/** The agent under test, with a short back-off so a containerd restart is noticed quickly. */
function watchContainerd(): Watched {
  const warnings: string[] = [];
  const log = pino(
    { level: 'debug' },
    {
      write: (line: string) => {
        const { level, msg } = JSON.parse(line) as { level: number; msg: string };
        if (level >= 40) warnings.push(msg);
        if (level >= (pino.levels.values[process.env['PORTSTREAM_LOG_LEVEL'] ?? 'warn'] ?? 40)) process.stderr.write(line);
      },
    },
  );
  const client = grpcContainerdClient(containerd.socket, { logger: log });
  const received: Watched['received'] = [];
  const emitted: SourceEvent[] = [];
  const recorder = recordPortSets(
    containerdEvents(
      { ...client, events: () => client.events().pipe(tap((e) => received.push(e))) },
      { logger: log, backoff: { initialMs: 100, maxMs: 1_000, stableMs: 5_000 } },
    ).pipe(
      tap((e) => emitted.push(e)),
      toPortSet(),
    ),
  );
  return {
    ...recorder,
    received,
    emitted,
    warnings: () => warnings,
    stop: () => {
      recorder.stop();
      client.close();
    },
  };
}

const label = (...mappings: object[]): Record<string, string> => ({ 'nerdctl/ports': JSON.stringify(mappings) });
const tcp = (hostPort: number, containerPort = 80, HostIP = '0.0.0.0'): object => ({ HostPort: hostPort, ContainerPort: containerPort, Protocol: 'tcp', HostIP });
const udp = (hostPort: number, containerPort = 53): object => ({ HostPort: hostPort, ContainerPort: containerPort, Protocol: 'udp', HostIP: '0.0.0.0' });

function hasAll(view: Set<PortKey>, keys: readonly PortKey[]): boolean {
  return keys.every((k) => view.has(k));
}

function hasNone(view: Set<PortKey>, keys: readonly PortKey[]): boolean {
  return keys.every((k) => !view.has(k));
}

function show(agent: Watched): string {
  return `agent: [${sorted(agent.keys()).join(' ')}]${agent.ended() ? ` (stream ${String(agent.ended())})` : ''}`;
}

async function firstSet(agent: Watched): Promise<void> {
  await waitFor(() => agent.sets.length > 0, 15_000, () => `the first set; ${show(agent)}`);
}

async function run(tasks: TestTasks, namespace: string, id: string, labels: Record<string, string>, keys: PortKey[]): Promise<TestContainer> {
  const c = await tasks.run(namespace, id, labels, keys);
  made.push(c);
  return c;
}

/** Waits until the agent's view equals the truth from `ctr tasks ls`, then asserts it (so a mismatch shows a diff). */
async function assertViewEqualsTruth(agent: Watched, timeoutMs = 15_000): Promise<void> {
  let truth = new Set<PortKey>();
  await waitFor(
    async () => {
      truth = await ctrTruth(containerd, made);
      return sameKeys(agent.keys(), truth);
    },
    timeoutMs,
    () => `the agent's view to equal ctr's truth; ${show(agent)}, truth: [${sorted(truth).join(' ')}]`,
  );
  assert.deepEqual(sorted(agent.keys()), sorted(await ctrTruth(containerd, made)));
  assert.equal(agent.ended(), undefined, 'the stream must never end');
}

engineTest('start-up scan: running tasks in every namespace are in the first set; stopped and task-less containers are not', opts, async (t) => {
  await containerdReady();
  const tasks = new TestTasks(containerd);
  t.after(() => tasks.removeAll());
  await run(tasks, nsA, 'scan-web', label(tcp(17100), udp(17101)), ['tcp/0.0.0.0:17100', 'udp/0.0.0.0:17101']);
  await run(tasks, nsB, 'scan-web', label(tcp(17102, 8080, '127.0.0.1')), ['tcp/127.0.0.1:17102']);
  const stopped = await run(tasks, nsA, 'scan-stopped', label(tcp(17103)), ['tcp/0.0.0.0:17103']);
  await containerd.ctr(nsA, 'tasks', 'kill', '-s', 'SIGKILL', stopped.id);
  await waitFor(async () => (await containerd.tasksOf(nsA)).get(stopped.id)?.status === 'STOPPED', 15_000, 'the killed task to stop');
  await tasks.create(nsB, 'scan-created', label(tcp(17104)));

  const agent = watchContainerd();
  t.after(() => {
    agent.stop();
  });
  await firstSet(agent);
  const first = agent.sets[0]!;
  assert.deepEqual(sorted(first.keys()), ['tcp/0.0.0.0:17100', 'tcp/127.0.0.1:17102', 'udp/0.0.0.0:17101']);
  assert.deepEqual(sorted(first.keys()), sorted(await ctrTruth(containerd, made)), 'the first set is the whole truth');
  assert.equal(first.get('tcp/0.0.0.0:17100')?.owner, `${nsA}/scan-web`);
  assert.equal(first.get('tcp/127.0.0.1:17102')?.owner, `${nsB}/scan-web`, 'the same ID in another namespace is another owner');
  assert.deepEqual({ ...first.get('udp/0.0.0.0:17101') }, {
    protocol: 'udp',
    hostIp: '0.0.0.0',
    hostPort: 17101,
    containerPort: 53,
    source: 'containerd',
    owner: `${nsA}/scan-web`,
  });
  assert.equal(agent.received[0], CONTAINERD_EVENTS_OPEN, 'the subscription was live before the scan');
});

engineTest('ctr run -d, then ctr tasks kill: the ports appear, then go, in both namespaces', opts, async (t) => {
  await containerdReady();
  const tasks = new TestTasks(containerd);
  t.after(() => tasks.removeAll());
  const agent = watchContainerd();
  t.after(() => {
    agent.stop();
  });
  await firstSet(agent);
  const keysA = ['tcp/0.0.0.0:17200', 'udp/0.0.0.0:17201'];
  const keysB = ['tcp/0.0.0.0:17202'];
  assert.ok(hasNone(agent.keys(), [...keysA, ...keysB]), show(agent));

  await run(tasks, nsA, 'life', label(tcp(17200), udp(17201)), keysA);
  await run(tasks, nsB, 'life', label(tcp(17202)), keysB);
  await waitFor(() => hasAll(agent.keys(), [...keysA, ...keysB]), 10_000, () => `the ports to appear; ${show(agent)}`);
  assert.equal(agent.latest()?.get('tcp/0.0.0.0:17200')?.owner, `${nsA}/life`);
  assert.equal(agent.latest()?.get('tcp/0.0.0.0:17202')?.owner, `${nsB}/life`);
  await assertViewEqualsTruth(agent);

  await containerd.ctr(nsA, 'tasks', 'kill', '-s', 'SIGKILL', 'life');
  await waitFor(() => hasNone(agent.keys(), keysA), 10_000, () => `${nsA}/life's ports to go; ${show(agent)}`);
  assert.ok(hasAll(agent.keys(), keysB), `the other namespace's container keeps its ports; ${show(agent)}`);
  await assertViewEqualsTruth(agent);

  // and a container deleted with its task (ctr's own clean-up order: kill, delete task, delete container)
  await containerd.ctr(nsB, 'tasks', 'kill', '-s', 'SIGKILL', 'life');
  await waitFor(() => hasNone(agent.keys(), keysB), 10_000, () => `${nsB}/life's ports to go; ${show(agent)}`);
  await tasks.removeAll();
  await assertViewEqualsTruth(agent);
});

engineTest('ctr tasks exec exiting while the container runs is not a removal', opts, async (t) => {
  await containerdReady();
  const tasks = new TestTasks(containerd);
  t.after(() => tasks.removeAll());
  const agent = watchContainerd();
  t.after(() => {
    agent.stop();
  });
  await firstSet(agent);
  const keys = ['tcp/0.0.0.0:17300'];
  await run(tasks, nsA, 'exec-host', label(tcp(17300)), keys);
  await waitFor(() => hasAll(agent.keys(), keys), 10_000, () => `the port to appear; ${show(agent)}`);
  const setsBefore = agent.sets.length;

  await containerd.ctr(nsA, 'tasks', 'exec', '--exec-id', 'probe', 'exec-host', 'sh', '-c', 'exit 3').catch(() => undefined); // exits 3 on purpose
  // A container started after the exec: once its port is in, every earlier event (the exec's exit
  // included) has been handled, because the stream handles events in order.
  const sentinel = ['tcp/0.0.0.0:17301'];
  await run(tasks, nsA, 'exec-sentinel', label(tcp(17301)), sentinel);
  await waitFor(() => hasAll(agent.keys(), sentinel), 10_000, () => `the sentinel's port to appear; ${show(agent)}`);

  const execExit = agent.received.find((e) => e !== CONTAINERD_EVENTS_OPEN && e.topic === '/tasks/exit' && e.event.id === 'probe');
  assert.ok(execExit, 'the stream received the exec process\'s /tasks/exit');
  assert.equal(execExit !== CONTAINERD_EVENTS_OPEN && execExit.namespace, nsA);
  const since = agent.sets.slice(setsBefore);
  assert.ok(since.length > 0);
  assert.ok(since.every((set) => set.has('tcp/0.0.0.0:17300')), 'the port never went away after the exec exited');
  assert.equal((await containerd.tasksOf(nsA)).get('exec-host')?.status, 'RUNNING');
  await assertViewEqualsTruth(agent);
});

engineTest('ctr containers label: a running container\'s ports follow its label; a task-less container\'s label publishes nothing', opts, async (t) => {
  await containerdReady();
  const tasks = new TestTasks(containerd);
  t.after(() => tasks.removeAll());
  const agent = watchContainerd();
  t.after(() => {
    agent.stop();
  });
  await firstSet(agent);
  const c = await run(tasks, nsB, 'relabel', label(tcp(17400), tcp(17401)), ['tcp/0.0.0.0:17400', 'tcp/0.0.0.0:17401']);
  await waitFor(() => hasAll(agent.keys(), c.keys), 10_000, () => `the first ports to appear; ${show(agent)}`);

  await containerd.ctr(nsB, 'containers', 'label', 'relabel', `nerdctl/ports=${JSON.stringify([tcp(17401), udp(17402)])}`);
  const now = ['tcp/0.0.0.0:17401', 'udp/0.0.0.0:17402'];
  made[made.indexOf(c)] = { ...c, keys: now };
  await waitFor(
    () => hasAll(agent.keys(), now) && hasNone(agent.keys(), ['tcp/0.0.0.0:17400']),
    10_000,
    () => `the ports to follow the label; ${show(agent)}`,
  );
  await assertViewEqualsTruth(agent);

  const idle = await tasks.create(nsB, 'relabel-idle', {});
  made.push(idle);
  await containerd.ctr(nsB, 'containers', 'label', idle.id, `nerdctl/ports=${JSON.stringify([tcp(17403)])}`);
  // the sentinel trick again: once its port is in, the idle container's update has been handled
  await run(tasks, nsB, 'relabel-sentinel', label(tcp(17404)), ['tcp/0.0.0.0:17404']);
  await waitFor(() => hasAll(agent.keys(), ['tcp/0.0.0.0:17404']), 10_000, () => `the sentinel's port; ${show(agent)}`);
  assert.ok(
    agent.received.some((e) => e !== CONTAINERD_EVENTS_OPEN && e.topic === '/containers/update' && e.event.id === idle.id),
    'the idle container\'s update reached the stream',
  );
  assert.ok(hasNone(agent.keys(), ['tcp/0.0.0.0:17403']), show(agent));
  await assertViewEqualsTruth(agent);
});

engineTest('a malformed label gets one log line naming container and namespace; the valid ports count and the agent goes on', opts, async (t) => {
  await containerdReady();
  const tasks = new TestTasks(containerd);
  t.after(() => tasks.removeAll());
  const agent = watchContainerd();
  t.after(() => {
    agent.stop();
  });
  await firstSet(agent);

  await run(tasks, nsA, 'mixed', label(tcp(17500), { HostPort: 99999, ContainerPort: 80 }, { HostPort: 17501, Protocol: 'sctp' }), ['tcp/0.0.0.0:17500']);
  await run(tasks, nsB, 'garbage', { 'nerdctl/ports': '[{"HostPort":17502,' }, []);
  await run(tasks, nsB, 'after-garbage', label(udp(17503)), ['udp/0.0.0.0:17503']);
  await waitFor(() => hasAll(agent.keys(), ['tcp/0.0.0.0:17500', 'udp/0.0.0.0:17503']), 10_000, () => `the valid ports; ${show(agent)}`);
  assert.ok(hasNone(agent.keys(), ['tcp/0.0.0.0:17501', 'tcp/0.0.0.0:17502']), show(agent));

  const about = (id: string, ns: string): string[] => agent.warnings().filter((w) => w.startsWith(`container ${id} in namespace ${ns}:`));
  assert.equal(about('mixed', nsA).length, 1, `one line for ${nsA}/mixed: ${agent.warnings().join(' | ')}`);
  assert.match(about('mixed', nsA)[0]!, /host port 99999 is not a port number.*unknown protocol "sctp".*forwarding its 1 valid port$/);
  assert.equal(about('garbage', nsB).length, 1, `one line for ${nsB}/garbage: ${agent.warnings().join(' | ')}`);
  assert.match(about('garbage', nsB)[0]!, /the nerdctl\/ports label is not JSON/);
  await assertViewEqualsTruth(agent);
});

engineTest('without a nerdctl/ports label, the ports come from nerdctl/state-dir\'s network-config.json', opts, async (t) => {
  await containerdReady();
  const tasks = new TestTasks(containerd);
  t.after(() => tasks.removeAll());
  const dir = await mkdtemp(join(tmpdir(), 'portstream-nerdctl-state-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const objectDir = join(dir, 'object');
  const arrayDir = join(dir, 'array');
  for (const [d, content] of [
    [objectDir, { portMappings: [tcp(17600)] }],
    [arrayDir, [udp(17601)]],
  ] as const) {
    await mkdir(d);
    await writeFile(join(d, 'network-config.json'), JSON.stringify(content));
  }
  const agent = watchContainerd();
  t.after(() => {
    agent.stop();
  });
  await firstSet(agent);
  await run(tasks, nsA, 'state-object', { 'nerdctl/state-dir': objectDir }, ['tcp/0.0.0.0:17600']);
  await run(tasks, nsA, 'state-array', { 'nerdctl/state-dir': arrayDir }, ['udp/0.0.0.0:17601']);
  await waitFor(() => hasAll(agent.keys(), ['tcp/0.0.0.0:17600', 'udp/0.0.0.0:17601']), 10_000, () => `the ports from the files; ${show(agent)}`);
  await assertViewEqualsTruth(agent);
});

engineTest('kill -9 of containerd while tasks run, a task dying while it is down, then a restart: the view equals the truth', opts, async (t) => {
  await containerdReady();
  const tasks = new TestTasks(containerd);
  t.after(() => tasks.removeAll());
  // The restart must happen even if the test fails while containerd is down: the next tests need it.
  t.after(async () => {
    if (!containerd.running()) await containerd.start();
  });
  const uncaught: unknown[] = [];
  const onUncaught = (error: unknown): void => {
    uncaught.push(error);
  };
  process.on('uncaughtException', onUncaught);
  t.after(() => process.off('uncaughtException', onUncaught));
  const agent = watchContainerd();
  t.after(() => {
    agent.stop();
  });
  await firstSet(agent);

  const survivorA = await run(tasks, nsA, 'restart-a', label(tcp(17700)), ['tcp/0.0.0.0:17700']);
  const survivorB = await run(tasks, nsB, 'restart-b', label(tcp(17701), udp(17702)), ['tcp/0.0.0.0:17701', 'udp/0.0.0.0:17702']);
  const victim = await run(tasks, nsB, 'restart-victim', label(tcp(17703)), ['tcp/0.0.0.0:17703']);
  const all = [survivorA, survivorB, victim].flatMap((c) => c.keys);
  await waitFor(() => hasAll(agent.keys(), all), 10_000, () => `all ports to appear; ${show(agent)}`);
  await assertViewEqualsTruth(agent);
  const victimPid = (await containerd.tasksOf(nsB)).get(victim.id)?.pid;
  assert.ok(victimPid !== undefined && victimPid > 0, 'the victim task has a pid');

  await containerd.kill9();
  const setsAtKill = agent.sets.length;
  const emittedAtKill = agent.emitted.length;
  // While containerd is down, the victim's process dies (as a crash would); its exit event has
  // nowhere to go, so only a re-list after the restart can notice.
  process.kill(victimPid, 'SIGKILL');
  await waitFor(() => !alive(victimPid), 10_000, 'the victim process to die');
  await containerd.start();

  await waitFor(async () => (await containerd.tasksOf(nsB)).get(victim.id)?.status === 'STOPPED', 30_000, 'containerd to see the victim stopped');
  await assertViewEqualsTruth(agent, 30_000);
  const view = agent.keys();
  assert.ok(hasAll(view, [...survivorA.keys, ...survivorB.keys]), `the survivors' ports are there; ${show(agent)}`);
  assert.ok(hasNone(view, victim.keys), `the victim's port is gone; ${show(agent)}`);
  assert.ok(agent.sets.length > setsAtKill, 'the agent emitted after the restart');
  // Whether or not the victim's exit event reaches the agent (the shim may deliver it late), the
  // re-list after reconnecting must already be the truth: survivors in, victim out.
  const relist = agent.emitted.slice(emittedAtKill).find((e) => e.type === 'snapshot');
  assert.ok(relist?.type === 'snapshot', 'the agent re-listed after reconnecting');
  assert.deepEqual(
    [...relist.owners.keys()].filter((o) => o.includes('/restart-')).sort(),
    [`${nsA}/restart-a`, `${nsB}/restart-b`].sort(),
    'the re-list has the survivors and not the victim',
  );
  assert.ok(
    agent.warnings().some((w) => /lost containerd/.test(w)),
    `the agent noticed containerd going away: ${agent.warnings().join(' | ')}`,
  );
  assert.deepEqual(
    uncaught.map((e) => (e instanceof Error ? `${e.message}\n${e.stack ?? ''}` : String(e))),
    [],
    'the containerd kill must not raise an uncaught exception in the agent',
  );
});

