/**
 * The docker stream against a real dockerd: `dockerEvents(dockerodeClient())` folded by
 * `toPortSet()`, compared with what `docker ps` says. The tests start containerd and dockerd when
 * they do not answer yet, and leave them running (`.ci/run` stops what it started). Containers
 * use `local/busybox:latest`, made without a registry, and host ports in 18000-18999.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after } from 'node:test';
import { pino } from 'pino';
import { dockerEvents } from '../streams/docker.js';
import { dockerodeClient } from '../streams/dockerClient.js';
import { toPortSet } from '../operators/toPortSet.js';
import { portKey, type PortKey, type SourceEvent } from '../src/model.js';
import {
  busyboxImage,
  containerPid,
  dockerNeeds,
  dockerPortKeys,
  dockerPsPortKeys,
  docker,
  engineTest,
  ensureBusyboxImage,
  ensureDockerd,
  gateFor,
  killDockerd9,
  recordPortSets,
  removeTestContainers,
  restartDockerd,
  sameKeys,
  sleep,
  sorted,
  testLabel,
  TestContainers,
  waitFor,
  type PortSetRecorder,
} from './engines.js';

const log = pino({ level: process.env['PORTSTREAM_LOG_LEVEL'] ?? 'warn' }, pino.destination(2));
const opts = { needs: dockerNeeds, timeout: 180_000 };

/** Started once, by the first test that runs: the engines, the image, and whether `-p` also binds `::`. */
let ready: Promise<{ ipv6: boolean }> | undefined;
function dockerReady(): Promise<{ ipv6: boolean }> {
  ready ??= (async () => {
    await ensureDockerd();
    await ensureBusyboxImage();
    await removeTestContainers();
    // Whether this dockerd publishes each `-p` port on `::` too depends on its IPv6 set-up:
    // look at what it does rather than assume.
    const probe = new TestContainers();
    try {
      const id = await probe.run('-p', '18999:80', busyboxImage, 'sleep', '60');
      const keys = await dockerPortKeys(id);
      assert.ok(keys.has('tcp/0.0.0.0:18999'), `docker port of the probe: ${sorted(keys).join(' ')}`);
      return { ipv6: keys.has('tcp/[::]:18999') };
    } finally {
      await probe.removeAll();
    }
  })();
  return ready;
}

if (gateFor(dockerNeeds).status === 'ok') {
  after(async () => {
    await ensureDockerd();
    await removeTestContainers();
  });
}

/** The agent under test, with a short back-off so a dockerd restart is noticed quickly. */
function watchDocker(client = dockerodeClient({ logger: log })): PortSetRecorder {
  return recordPortSets(
    dockerEvents(client, {
      logger: log,
      backoff: { initialMs: 100, maxMs: 1_000, stableMs: 5_000 },
    }).pipe(toPortSet()),
  );
}

/** `tcp/0.0.0.0:P` (and `tcp/[::]:P` when dockerd binds IPv6 too) for each host port. */
function wildcardKeys(protocol: 'tcp' | 'udp', ports: readonly number[], ipv6: boolean): PortKey[] {
  return ports.flatMap((p) => [`${protocol}/0.0.0.0:${String(p)}`, ...(ipv6 ? [`${protocol}/[::]:${String(p)}`] : [])]);
}

function hasAll(view: Set<PortKey>, keys: readonly PortKey[]): boolean {
  return keys.every((k) => view.has(k));
}

function hasNone(view: Set<PortKey>, keys: readonly PortKey[]): boolean {
  return keys.every((k) => !view.has(k));
}

function show(agent: PortSetRecorder, label = 'agent'): string {
  return `${label}: [${sorted(agent.keys()).join(' ')}]${agent.ended() ? ` (stream ${String(agent.ended())})` : ''}`;
}

/** Waits until the agent's view equals `docker ps`, then asserts it (so a mismatch shows a diff). */
async function assertViewEqualsDockerPs(agent: PortSetRecorder, timeoutMs = 15_000): Promise<void> {
  let truth = new Set<PortKey>();
  await waitFor(
    async () => {
      truth = await dockerPsPortKeys();
      return sameKeys(agent.keys(), truth);
    },
    timeoutMs,
    () => `the agent's view to equal docker ps; ${show(agent)}, docker ps: [${sorted(truth).join(' ')}]`,
  );
  assert.deepEqual(sorted(agent.keys()), sorted(await dockerPsPortKeys()));
  assert.equal(agent.ended(), undefined, 'the stream must never end');
}

engineTest('start-up scan: a container running before the stream subscribes is in the first set', opts, async (t) => {
  const { ipv6 } = await dockerReady();
  const containers = new TestContainers();
  t.after(() => containers.removeAll());
  const id = await containers.run('-p', '18100:80', '-p', '18101:53/udp', '-p', '18102-18103:81-82', busyboxImage, 'httpd', '-f', '-p', '80');
  const expected = [...wildcardKeys('tcp', [18100, 18102, 18103], ipv6), ...wildcardKeys('udp', [18101], ipv6)];
  assert.deepEqual(sorted(await dockerPortKeys(id)), sorted(expected), 'docker itself publishes what the test expects');

  const agent = watchDocker();
  t.after(() => { agent.stop(); });
  await waitFor(() => agent.sets.length > 0, 15_000, 'the first set');
  const first = agent.sets[0];
  assert.ok(first);
  assert.deepEqual(sorted([...first.keys()].filter((k) => /:1810[0-3]$/.test(k))), sorted(expected));
  for (const key of expected) assert.equal(first.get(key)?.owner, id, `${key} is owned by the container`);
  assert.deepEqual(
    ['tcp/0.0.0.0:18100', 'udp/0.0.0.0:18101', 'tcp/0.0.0.0:18102', 'tcp/0.0.0.0:18103'].map((k) => first.get(k)?.containerPort),
    [80, 53, 81, 82],
  );
  assert.deepEqual(sorted(first.keys()), sorted(await dockerPsPortKeys()), 'the first set is the whole of docker ps');
});

engineTest('docker run -d -p, then docker rm -f: the port appears, then goes', opts, async (t) => {
  const { ipv6 } = await dockerReady();
  const containers = new TestContainers();
  t.after(() => containers.removeAll());
  const agent = watchDocker();
  t.after(() => { agent.stop(); });
  await waitFor(() => agent.sets.length > 0, 15_000, 'the first set');
  const keys = wildcardKeys('tcp', [18200], ipv6);
  assert.ok(hasNone(agent.keys(), keys), show(agent));

  const id = await containers.run('-p', '18200:80', busyboxImage, 'httpd', '-f', '-p', '80');
  await waitFor(() => hasAll(agent.keys(), keys), 10_000, () => `${keys.join(' ')} to appear; ${show(agent)}`);
  assert.equal(agent.latest()?.get('tcp/0.0.0.0:18200')?.owner, id);
  await assertViewEqualsDockerPs(agent);

  await docker('rm', '-f', id);
  await waitFor(() => hasNone(agent.keys(), keys), 10_000, () => `${keys.join(' ')} to go; ${show(agent)}`);
  await assertViewEqualsDockerPs(agent);
});

engineTest('DOCKER_HOST on TCP: through dockerode, to the same dockerd behind a byte-for-byte TCP proxy', opts, async (t) => {
  const { ipv6 } = await dockerReady();
  // dockerd listens on its unix socket only: each TCP connection is piped to it unchanged.
  const piped = new Set<net.Socket>();
  const proxy = net.createServer((client) => {
    const engine = net.connect('/var/run/docker.sock');
    for (const socket of [client, engine]) {
      piped.add(socket);
      socket.on('close', () => piped.delete(socket));
      socket.on('error', () => { client.destroy(); engine.destroy(); });
    }
    client.pipe(engine).pipe(client);
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    // dockerode's kept-alive connections would hold close() open
    for (const socket of piped) socket.destroy();
    return new Promise((resolve) => proxy.close(resolve));
  });
  const { port } = proxy.address() as net.AddressInfo;
  const containers = new TestContainers();
  t.after(() => containers.removeAll());
  const agent = watchDocker(dockerodeClient({ host: '127.0.0.1', port, logger: log }));
  t.after(() => { agent.stop(); });
  await waitFor(() => agent.sets.length > 0, 15_000, 'the first set');
  const id = await containers.run('-p', '18210:80', busyboxImage, 'httpd', '-f', '-p', '80');
  const keys = wildcardKeys('tcp', [18210], ipv6);
  await waitFor(() => hasAll(agent.keys(), keys), 10_000, () => `${keys.join(' ')} to appear; ${show(agent)}`);
  assert.equal(agent.latest()?.get('tcp/0.0.0.0:18210')?.owner, id);
  await docker('rm', '-f', id);
  await waitFor(() => hasNone(agent.keys(), keys), 10_000, () => `${keys.join(' ')} to go; ${show(agent)}`);
  await assertViewEqualsDockerPs(agent);
});

engineTest('a udp port and a 127.0.0.1 binding', opts, async (t) => {
  const { ipv6 } = await dockerReady();
  const containers = new TestContainers();
  t.after(() => containers.removeAll());
  const agent = watchDocker();
  t.after(() => { agent.stop(); });
  await waitFor(() => agent.sets.length > 0, 15_000, 'the first set');

  const id = await containers.run('-p', '18300:53/udp', '-p', '127.0.0.1:18301:80', busyboxImage, 'httpd', '-f', '-p', '80');
  const expected = [...wildcardKeys('udp', [18300], ipv6), 'tcp/127.0.0.1:18301'];
  const wrong = ['tcp/0.0.0.0:18300', 'tcp/[::]:18300', 'tcp/0.0.0.0:18301', 'tcp/[::]:18301', 'udp/127.0.0.1:18301'];
  await waitFor(() => hasAll(agent.keys(), expected), 10_000, () => `${expected.join(' ')} to appear; ${show(agent)}`);
  const view = agent.keys();
  assert.deepEqual(sorted([...view].filter((k) => /:1830[01]$/.test(k))), sorted(expected), 'exactly the udp and loopback forwards');
  assert.ok(hasNone(view, wrong), show(agent));
  const loopback = agent.latest()?.get('tcp/127.0.0.1:18301');
  assert.deepEqual(loopback && { ...loopback }, {
    protocol: 'tcp',
    hostIp: '127.0.0.1',
    hostPort: 18301,
    containerPort: 80,
    source: 'docker',
    owner: id,
  });
  assert.equal(agent.latest()?.get('udp/0.0.0.0:18300')?.containerPort, 53);
  await assertViewEqualsDockerPs(agent);

  await docker('rm', '-f', id);
  await waitFor(() => hasNone(agent.keys(), expected), 10_000, () => `${expected.join(' ')} to go; ${show(agent)}`);
  await assertViewEqualsDockerPs(agent);
});

engineTest('a port range: -p 18400-18402:80-82', opts, async (t) => {
  const { ipv6 } = await dockerReady();
  const containers = new TestContainers();
  t.after(() => containers.removeAll());
  const agent = watchDocker();
  t.after(() => { agent.stop(); });
  await waitFor(() => agent.sets.length > 0, 15_000, 'the first set');

  const id = await containers.run('-p', '18400-18402:80-82', busyboxImage, 'httpd', '-f', '-p', '80');
  const expected = wildcardKeys('tcp', [18400, 18401, 18402], ipv6);
  await waitFor(() => hasAll(agent.keys(), expected), 10_000, () => `${expected.join(' ')} to appear; ${show(agent)}`);
  const set = agent.latest();
  assert.deepEqual(
    [18400, 18401, 18402].map((p) => set?.get(`tcp/0.0.0.0:${String(p)}`)?.containerPort),
    [80, 81, 82],
    'each host port of the range maps to its container port',
  );
  await assertViewEqualsDockerPs(agent);

  await docker('rm', '-f', id);
  await waitFor(() => hasNone(agent.keys(), expected), 10_000, () => `${expected.join(' ')} to go; ${show(agent)}`);
  await assertViewEqualsDockerPs(agent);
});

engineTest('--restart=always: after the process inside is killed and docker restarts it, the port is published again', opts, async (t) => {
  const { ipv6 } = await dockerReady();
  const containers = new TestContainers();
  t.after(() => containers.removeAll());
  const agent = watchDocker();
  t.after(() => { agent.stop(); });
  await waitFor(() => agent.sets.length > 0, 15_000, 'the first set');

  const id = await containers.run('--restart=always', '-p', '18500:80', busyboxImage, 'httpd', '-f', '-p', '80');
  const keys = wildcardKeys('tcp', [18500], ipv6);
  await waitFor(() => hasAll(agent.keys(), keys), 10_000, () => `${keys.join(' ')} to appear; ${show(agent)}`);
  const seenBefore = agent.sets.length;

  // Kill the container's process from the host, as a crash would: docker restarts it.
  const pid = await containerPid(id);
  process.kill(pid, 'SIGKILL');
  await waitFor(
    async () => {
      const [restarts = '', running = '', newPid = ''] = (
        await docker('inspect', '--format', '{{.RestartCount}} {{.State.Running}} {{.State.Pid}}', id)
      ).trim().split(' ');
      return Number(restarts) >= 1 && running === 'true' && Number(newPid) !== pid && Number(newPid) > 0;
    },
    30_000,
    'docker to restart the container',
  );
  await waitFor(() => hasAll(agent.keys(), keys), 10_000, () => `${keys.join(' ')} to be published again; ${show(agent)}`);
  const between = agent.sets.slice(seenBefore);
  assert.ok(
    between.some((set) => hasNone(new Set(set.keys()), keys)),
    'the agent followed the die (the port went away) before the restart brought it back',
  );
  assert.equal(agent.latest()?.get('tcp/0.0.0.0:18500')?.owner, id);
  await assertViewEqualsDockerPs(agent);
});

engineTest('kill -9 of dockerd while containers run, then a restart: the view equals docker ps', opts, async (t) => {
  const { ipv6 } = await dockerReady();
  const containers = new TestContainers();
  // removeAll starts dockerd again first if the test failed while it was down.
  t.after(() => containers.removeAll());
  // A killed dockerd surfaces as a connection reset; an emitter without an error listener
  // would turn it into an uncaught exception that crashes the agent. Name it here if it happens.
  const uncaught: unknown[] = [];
  const onUncaught = (error: unknown): void => {
    uncaught.push(error);
  };
  process.on('uncaughtException', onUncaught);
  t.after(() => process.off('uncaughtException', onUncaught));
  const agent = watchDocker();
  t.after(() => { agent.stop(); });
  await waitFor(() => agent.sets.length > 0, 15_000, 'the first set');

  await containers.run('-p', '18600:80', busyboxImage, 'httpd', '-f', '-p', '80');
  await containers.run('--restart=always', '-p', '18601:80', '-p', '18602:53/udp', busyboxImage, 'httpd', '-f', '-p', '80');
  const plain = wildcardKeys('tcp', [18600], ipv6);
  const always = [...wildcardKeys('tcp', [18601], ipv6), ...wildcardKeys('udp', [18602], ipv6)];
  await waitFor(() => hasAll(agent.keys(), [...plain, ...always]), 10_000, () => `all ports to appear; ${show(agent)}`);
  await assertViewEqualsDockerPs(agent);

  await killDockerd9();
  const setsAtKill = agent.sets.length;
  await restartDockerd();

  // With live-restore off, dockerd's restart stops the containers it lost; --restart=always
  // ones come back. The agent must have reconnected and re-listed to drop the plain one.
  await waitFor(async () => hasAll(await dockerPsPortKeys(), always), 30_000, 'docker to bring back the --restart=always container');
  await assertViewEqualsDockerPs(agent, 30_000);
  const view = agent.keys();
  assert.ok(hasAll(view, always), `the --restart=always ports are back; ${show(agent)}`);
  assert.ok(hasNone(view, plain), `the plain container's port is gone; ${show(agent)}`);
  assert.ok(agent.sets.length > setsAtKill, 'the agent emitted after the restart');
  assert.deepEqual(
    uncaught.map((e) => (e instanceof Error ? `${e.message}\n${e.stack ?? ''}` : String(e))),
    [],
    'the dockerd kill must not raise an uncaught exception in the agent',
  );
});

engineTest('predicted starts: a container already running when the stream connects teaches it, so the first start after connecting is published at once', opts, async (t) => {
  const { ipv6 } = await dockerReady();
  const containers = new TestContainers();
  t.after(() => containers.removeAll());
  const running = await containers.run('-p', '18220:80', busyboxImage, 'sleep', '600');
  const events: SourceEvent[] = [];
  const sub = dockerEvents(dockerodeClient({ logger: log }), { logger: log }).subscribe((e) => events.push(e));
  t.after(() => { sub.unsubscribe(); });
  await waitFor(() => events.some((e) => e.type === 'snapshot' && e.owners.has(running)), 15_000, 'the snapshot with the running container');
  await sleep(300); // its inspect, read beside the snapshot
  const upserts = (id: string): string[] =>
    events.flatMap((e) => (e.type === 'upsert' && e.owner === id ? [e.forwards.map((f) => portKey(f)).sort().join(' ')] : []));

  const first = (await docker('create', '--label', testLabel, '-p', '18221:80', busyboxImage, 'sleep', '600')).trim();
  containers.ids.push(first);
  await sleep(500);
  await docker('start', first);
  const want = wildcardKeys('tcp', [18221], ipv6).sort().join(' ');
  // two publications: the prediction at the start event, then the inspect agreeing
  await waitFor(() => upserts(first).length >= 2, 10_000, () => `a predicted and a confirmed publication; got ${JSON.stringify(upserts(first))}`);
  assert.deepEqual(upserts(first), [want, want]);
});

engineTest('predicted starts: a container created, then started, and restarted is published at each start from what it asked for, and its inspect agrees', opts, async (t) => {
  const { ipv6 } = await dockerReady();
  const containers = new TestContainers();
  t.after(() => containers.removeAll());
  const events: SourceEvent[] = [];
  const sub = dockerEvents(dockerodeClient({ logger: log }), { logger: log }).subscribe((e) => events.push(e));
  t.after(() => { sub.unsubscribe(); });
  await waitFor(() => events.length > 0, 15_000, 'the first snapshot');
  const upserts = (id: string): string[] =>
    events.flatMap((e) => (e.type === 'upsert' && e.owner === id ? [e.forwards.map((f) => portKey(f)).sort().join(' ')] : []));

  // The first start teaches the stream how this dockerd expands `-p PORT:80`; its own start
  // waits for its inspect, since nothing is known yet.
  const first = await containers.run('-p', '18210:80', busyboxImage, 'sleep', '600');
  await waitFor(() => upserts(first).length > 0, 10_000, () => `the first container's ports; events: ${JSON.stringify(events)}`);
  assert.deepEqual(upserts(first), [wildcardKeys('tcp', [18210], ipv6).sort().join(' ')]);

  // Created now, started once its create has been read: predicted, then confirmed alike.
  const second = (await docker('create', '--label', testLabel, '-p', '18211:80', busyboxImage, 'sleep', '600')).trim();
  containers.ids.push(second);
  await sleep(500);
  await docker('start', second);
  const want = wildcardKeys('tcp', [18211], ipv6).sort().join(' ');
  await waitFor(() => upserts(second).length >= 2, 10_000, () => `a predicted and a confirmed publication; got ${JSON.stringify(upserts(second))}`);
  assert.deepEqual(upserts(second), [want, want]);
  assert.deepEqual(sorted(await dockerPortKeys(second)).join(' '), want, 'what docker port says');

  // A restart is predicted from what its last inspect showed.
  await docker('restart', '-t', '0', second);
  await waitFor(() => upserts(second).length >= 4, 15_000, () => `the restart's two publications; got ${JSON.stringify(upserts(second))}`);
  assert.deepEqual(upserts(second), [want, want, want, want]);

  // A port the engine picks is never predicted: one publication, from the inspect.
  const dynamic = await containers.run('-p', '80', busyboxImage, 'sleep', '600');
  await waitFor(() => upserts(dynamic).length > 0, 10_000, 'the dynamic port');
  await sleep(200);
  assert.equal(upserts(dynamic).length, 1);
  assert.deepEqual(upserts(dynamic)[0], sorted(await dockerPortKeys(dynamic)).join(' '));
});
