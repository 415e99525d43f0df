/**
 * The fault matrix (issue 7): the REAL agent, started as a user starts it (`node --import tsx
 * src/main.ts FLAGS`, see agentProcess.ts), against real engines and host ends that the test then
 * breaks. In every case the forwarded set (what the host end holds) must equal the truth within
 * 5 s of the fault ending, with nothing leaked and nothing missing, and must stay equal; the time
 * it took is reported with `t.diagnostic`.
 *
 * | fault                                    | agent                        | truth             | host end                |
 * |------------------------------------------|------------------------------|-------------------|-------------------------|
 * | dockerd kill -9, restart                 | -docker → vtunnel            | docker ps         | strict vtunnel receiver |
 * | containerd kill -9, a task dies, restart | -containerd (own containerd) | ctr tasks ls      | strict vtunnel receiver |
 * | vtunnel peer down, back empty            | -docker → vtunnel            | docker ps         | a new, empty receiver   |
 * | vtunnel peer restarts empty, no changes  | -docker → vtunnel            | docker ps         | a new, empty receiver   |
 * | API server drops and answers 410         | -kubernetes → vtunnel        | the Services made | strict vtunnel receiver |
 * | host switch answers 500                  | -docker → -hostSwitchURL     | docker ps         | forwarder fake          |
 * | host switch restarts empty, no changes   | -docker → -hostSwitchURL     | docker ps         | forwarder fake, emptied |
 * | SIGTERM during a burst of 20 starts      | -docker → vtunnel            | (nothing)         | strict vtunnel receiver |
 * | SIGTERM twice, the withdrawal hanging    | -kubernetes → vtunnel        | (exit 0 at once)  | a peer that never closes |
 *
 * Each fault lasts `PORTSTREAM_FAULT_MS` (default 3000 ms; an engine's own start comes on top).
 * With `PORTSTREAM_FAULTS_LOG_DIR=DIR` each case's agent log (debug level) is kept in DIR.
 *
 * dockerd is the system one (other test files use it at the same time), so "the truth" and the
 * host end's view are both cut down to this file's host ports, 23000-23999: a container another
 * test runs meanwhile is the agent's business but not this file's. The containerd case runs its
 * own containerd (containerdEngine.ts), which it may kill; the system containerd is never touched.
 * Every container carries a label unique to this run, so the file's `after` hook removes only
 * this file's containers, also when a test failed half-way.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { after, type TestContext } from 'node:test';
import { portKey, type PortKey, type Protocol } from '../src/model.js';
import { vtunnelDefaults } from '../src/sinks/vtunnel.js';
import { startAgent, waitForLog, type AgentProcess } from './agentProcess.js';
import { containerdNeeds, ctrTruth, OwnContainerd, TestTasks, type TestContainer } from './containerdEngine.js';
import {
  alive,
  busyboxImage,
  childProcesses,
  docker,
  dockerNeeds,
  dockerPortKeys,
  dockerPsPortKeys,
  engineTest,
  ensureBusyboxImage,
  ensureDockerd,
  gateFor,
  killDockerd9,
  restartDockerd,
  sleep,
  sorted,
  TestContainers,
  waitFor,
} from './engines.js';
import { FakeApiServer, makeTestPki, type FakeServiceSpec } from './fakeApiServer.js';
import { startFake, type Fake } from './fakeForwarder.js';
import { startReceiver, type Receiver } from './vtunnelReceiver.js';

/** The target: the forwarded set equals the truth within this long after the fault ends. */
const convergeLimitMs = 5_000;
/** How long past the fault's end the test keeps looking, so a slow convergence is measured, not just failed. */
const observeMs = 40_000;
/** Once equal, it must stay equal this long (a late re-send or a flap would show here). */
const holdMs = 750;
/**
 * How long each fault lasts at least (an engine stays dead, the peer stays away, the API server
 * keeps breaking, the host switch keeps answering 500). `PORTSTREAM_FAULT_MS` changes it.
 */
const faultMs = Number(process.env['PORTSTREAM_FAULT_MS'] ?? 3_000);

/**
 * This file's host ports; the views and the truth are compared within them. Below Linux's
 * ephemeral range (32768-60999), so no outgoing connection can hold one as its source port.
 */
const firstPort = 23000;
const lastPort = 23999;
const ports = {
  dockerd: { receiver: 23900, plain: 23001, always: 23002, alwaysUdp: 23003 },
  containerd: { receiver: 23901, keepA: 23101, keepB: 23102, keepBUdp: 23103, victim: 23104 },
  peer: { receiver: 23902, keep: 23201, gone: 23202, goneUdp: 23203, added: 23204, addedUdp: 23205 },
  kubernetes: { receiver: 23903, apiServer: 23906, k8sApiPort: 23399 },
  hostSwitch: { forwarder: 23904, keep: 23401, gone: 23402, goneUdp: 23403, added: 23404, addedUdp: 23405 },
  sigterm: { receiver: 23905, burst: 23500 },
  sigtermTwice: { peer: 23907, k8sApiPort: 23398 },
} as const;

const runLabel = `portstream-faults=${randomBytes(6).toString('hex')}`;

function ourPort(key: string): boolean {
  const port = Number(key.slice(key.lastIndexOf(':') + 1));
  return port >= firstPort && port <= lastPort;
}

function ours(keys: Iterable<PortKey>): PortKey[] {
  return sorted([...keys].filter(ourPort));
}

/** The receiver's view (`proto/HostIp:HostPort`, IPv6 unbracketed) as port keys. */
function viewKeys(receiver: Receiver): PortKey[] {
  return [...receiver.view.keys()].map((k) => {
    const slash = k.indexOf('/');
    const colon = k.lastIndexOf(':');
    return portKey({ protocol: k.slice(0, slash) as Protocol, hostIp: k.slice(slash + 1, colon), hostPort: Number(k.slice(colon + 1)) });
  });
}

/**
 * A receiver on `port` again: a restarting peer may find its port still held for a moment (an
 * ephemeral range that someone configured lower, a connection still closing); retry briefly.
 */
async function listenAgain(port: number): Promise<Receiver> {
  const deadline = performance.now() + 2_000;
  for (;;) {
    try {
      return await startReceiver(port);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EADDRINUSE' || performance.now() > deadline) throw error;
      await sleep(10);
    }
  }
}

/** The flags every vtunnel case shares: the receiver on loopback, no iptables backend. */
function vtunnelFlags(receiverPort: number): string[] {
  return ['-privilegedService', '-iptables=false', '-procnet=false', '-vtunnelAddr', `127.0.0.1:${String(receiverPort)}`, '-connectInterface', 'lo'];
}

// ---------------------------------------------------------------------------------------------
// Convergence

interface Sides {
  /** What the host end holds (sorted). */
  readonly view: readonly string[];
  /** What it should hold (sorted). */
  readonly truth: readonly string[];
}

interface Convergence {
  /** From the fault's end to the first look at which the view equalled the (settled) truth. */
  readonly ms: number;
  /** From the fault's end until the truth itself had settled (an engine restarting its containers). */
  readonly truthSettledMs: number;
}

function same(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function difference(sides: Sides): string {
  const view = new Set(sides.view);
  const truth = new Set(sides.truth);
  const missing = sides.truth.filter((k) => !view.has(k));
  const leaked = sides.view.filter((k) => !truth.has(k));
  return `missing: [${missing.join(' ')}], leaked: [${leaked.join(' ')}]; view: [${sides.view.join(' ')}], truth: [${sides.truth.join(' ')}]`;
}

/**
 * Looks at both sides every 25 ms from `faultEnded` (a `performance.now()`) until the view has
 * equalled the truth for `holdMs`, with the truth `settled` (when the engine itself still changes
 * after the fault, e.g. dockerd restarting `--restart=always` containers). Reports the time, then
 * asserts that it is within `convergeLimitMs`; keeps looking up to `observeMs` to measure a slow one.
 */
async function convergence(
  t: TestContext,
  what: string,
  faultEnded: number,
  look: () => Promise<Sides> | Sides,
  context: () => string,
  settled: (truth: readonly string[]) => boolean = () => true,
): Promise<Convergence> {
  let equalSince: number | undefined;
  let truthSettledAt: number | undefined;
  let last: Sides;
  for (;;) {
    const at = performance.now();
    last = await look();
    const isSettled = settled(last.truth);
    if (isSettled) truthSettledAt ??= at;
    if (isSettled && same(last.view, last.truth)) {
      equalSince ??= at;
      if (at - equalSince >= holdMs) break;
    } else {
      equalSince = undefined;
    }
    if (at - faultEnded > observeMs) {
      assert.fail(
        `${what}: the view did not equal the truth within ${String(observeMs)} ms of the fault's end` +
          `${truthSettledAt === undefined ? ' (the truth never settled)' : ''}: ${difference(last)}\n${context()}`,
      );
    }
    await sleep(25);
  }
  const ms = Math.round(equalSince - faultEnded);
  const truthSettledMs = Math.round((truthSettledAt ?? faultEnded) - faultEnded);
  t.diagnostic(`${what}: the forwarded set equalled the truth ${String(ms)} ms after the fault ended (the truth settled after ${String(truthSettledMs)} ms)`);
  assert.ok(ms <= convergeLimitMs, `${what}: converged only ${String(ms)} ms after the fault ended (the target is ${String(convergeLimitMs)} ms)\n${context()}`);
  return { ms, truthSettledMs };
}

/** Waits for the first agreement before a fault (start-up), without the 5 s rule. */
async function initiallyEqual(what: string, look: () => Promise<Sides> | Sides, context: () => string, timeoutMs = 20_000): Promise<void> {
  let last: Sides = { view: [], truth: [] };
  await waitFor(
    async () => {
      last = await look();
      return last.truth.length > 0 && same(last.view, last.truth);
    },
    timeoutMs,
    () => `${what}: ${difference(last)}\n${context()}`,
  );
}

// ---------------------------------------------------------------------------------------------
// Engines and clean-up

let dockerUsed: Promise<void> | undefined;
function dockerReady(): Promise<void> {
  dockerUsed ??= (async () => {
    await ensureDockerd();
    await ensureBusyboxImage();
  })();
  return dockerUsed;
}

/** `docker run -d` with the test label and this run's own label; the ID goes into `containers`. */
function runContainer(containers: TestContainers, ...args: string[]): Promise<string> {
  return containers.run('--label', runLabel, ...args);
}

/** `docker rm -f` of one of ours now (removeAll later tolerates it being gone). */
async function removeContainer(id: string): Promise<void> {
  await docker('rm', '-f', id);
}

/** The truth from `docker ps`, within this file's ports. */
async function dockerTruth(): Promise<PortKey[]> {
  return ours(await dockerPsPortKeys());
}

const containerd = new OwnContainerd('portstream-faults-containerd');
let containerdUsed = false;

if (gateFor(dockerNeeds).status === 'ok') {
  after(async () => {
    if (dockerUsed === undefined) return;
    // Also when a test failed while dockerd was down: start it, then remove only this run's containers.
    await ensureDockerd();
    const ids = (await docker('ps', '-aq', '--filter', `label=${runLabel}`)).split('\n').filter((id) => id !== '');
    if (ids.length > 0) await docker('rm', '-f', ...ids);
  });
}
if (gateFor(containerdNeeds).status === 'ok') {
  after(async () => {
    if (!containerdUsed) return;
    await containerd.stop();
    assert.deepEqual(containerd.shims(), [], "no shim of this file's containerd is left");
  });
}

/**
 * An agent killed (SIGKILL) in an `after` hook if the test did not stop it. With
 * `PORTSTREAM_FAULTS_LOG_DIR` set, its stderr (debug level) is kept there, one file per case.
 */
function agentFor(t: TestContext, name: string, args: readonly string[]): AgentProcess {
  const agent = startAgent(args, { ...process.env, PORTSTREAM_LOG_LEVEL: 'debug' });
  t.after(async () => {
    await agent.kill();
    const dir = process.env['PORTSTREAM_FAULTS_LOG_DIR'];
    if (dir !== undefined && dir !== '') await writeFile(join(dir, `${name}.log`), agent.stderr());
  });
  return agent;
}

function assertStillRunning(agent: AgentProcess): void {
  assert.equal(agent.exitedYet(), false, `the agent must survive the fault\n${agent.tail()}`);
}

// ---------------------------------------------------------------------------------------------
// The cases

engineTest('dockerd kill -9 and restart: the vtunnel view equals docker ps (--restart=always back, the plain container gone)', { needs: dockerNeeds, timeout: 120_000 }, async (t) => {
  await dockerReady();
  const p = ports.dockerd;
  const containers = new TestContainers();
  t.after(() => containers.removeAll()); // starts dockerd again first if the test failed while it was down
  const receiver = await startReceiver(p.receiver);
  t.after(() => receiver.close());

  // httpd as pid 1 ignores SIGTERM: a short stop timeout keeps dockerd's restore (which stops
  // the containers it lost before it serves its API) from waiting 10 s for each.
  await runContainer(containers, '--stop-timeout', '1', '-p', `${String(p.plain)}:80`, busyboxImage, 'httpd', '-f', '-p', '80');
  const always = await runContainer(containers, '--stop-timeout', '1', '--restart=always', '-p', `${String(p.always)}:80`, '-p', `${String(p.alwaysUdp)}:53/udp`, busyboxImage, 'httpd', '-f', '-p', '80');
  const afterRestart = ours(await dockerPortKeys(always));
  const agent = agentFor(t, 'dockerd', ['-docker', ...vtunnelFlags(p.receiver)]);
  const look = async (): Promise<Sides> => ({ truth: await dockerTruth(), view: ours(viewKeys(receiver)) });
  await initiallyEqual('the start-up scan', look, () => agent.tail());

  await killDockerd9();
  const faultAt = performance.now();
  await waitForLog(agent, /lost the Docker engine/);
  await sleep(faultMs - (performance.now() - faultAt));
  const restartAt = performance.now();
  await restartDockerd();
  const faultEnded = performance.now();
  t.diagnostic(`dockerd was down for ${String(Math.round(faultEnded - faultAt))} ms (its start took ${String(Math.round(faultEnded - restartAt))} ms)`);

  // With live-restore off, the restarted dockerd stops the plain container and restarts the other.
  // The fault ends when `docker info` answers; the agent may be there first, because dockerd
  // accepts connections while it restores its containers and serves them once it is done.
  await convergence(t, 'dockerd kill -9', faultEnded, look, () => agent.tail(), (truth) => same(truth, afterRestart));
  assert.ok(afterRestart.some((k) => k.startsWith('udp/')), 'the --restart=always container has a udp port too');
  assertStillRunning(agent);
  assert.deepEqual(receiver.violations, []);
});

engineTest('containerd kill -9, a task killed while it is down, restart: the vtunnel view equals ctr tasks ls in two namespaces', { needs: containerdNeeds, timeout: 120_000 }, async (t) => {
  const p = ports.containerd;
  const nsA = 'portstream-test-faults-a';
  const nsB = 'portstream-test-faults-b';
  containerdUsed = true;
  await containerd.start();
  await containerd.sweep();
  await containerd.importBusybox(nsA);
  await containerd.importBusybox(nsB);
  const tasks = new TestTasks(containerd);
  t.after(() => tasks.removeAll());
  // Whatever happens, our containerd must run again for the clean-up.
  t.after(async () => {
    if (!containerd.running()) await containerd.start();
  });
  const receiver = await startReceiver(p.receiver);
  t.after(() => receiver.close());

  const label = (...mappings: { HostPort: number; Protocol: Protocol }[]): Record<string, string> => ({
    'nerdctl/ports': JSON.stringify(mappings.map((m) => ({ ...m, ContainerPort: 80, HostIP: '0.0.0.0' }))),
  });
  const made: TestContainer[] = [
    await tasks.run(nsA, 'keep-a', label({ HostPort: p.keepA, Protocol: 'tcp' }), [`tcp/0.0.0.0:${String(p.keepA)}`]),
    await tasks.run(nsB, 'keep-b', label({ HostPort: p.keepB, Protocol: 'tcp' }, { HostPort: p.keepBUdp, Protocol: 'udp' }), [
      `tcp/0.0.0.0:${String(p.keepB)}`,
      `udp/0.0.0.0:${String(p.keepBUdp)}`,
    ]),
  ];
  const victim = await tasks.run(nsB, 'victim', label({ HostPort: p.victim, Protocol: 'tcp' }), [`tcp/0.0.0.0:${String(p.victim)}`]);
  const survivors = sorted(made.flatMap((c) => c.keys));
  made.push(victim);

  const agent = agentFor(t, 'containerd', ['-containerd', '-containerdSock', containerd.socket, ...vtunnelFlags(p.receiver)]);
  // Only this containerd feeds the agent: the whole view is compared, not just our ports.
  const look = async (): Promise<Sides> => ({ truth: sorted(await ctrTruth(containerd, made)), view: sorted(viewKeys(receiver)) });
  await initiallyEqual('the start-up scan', look, () => agent.tail());

  const victimPid = (await containerd.tasksOf(nsB)).get(victim.id)?.pid;
  assert.ok(victimPid !== undefined && victimPid > 0, 'the victim task has a pid');
  await containerd.kill9();
  const faultAt = performance.now();
  await waitForLog(agent, /lost containerd/);
  // Its exit has nowhere to go while containerd is down: only the re-list can notice.
  process.kill(victimPid, 'SIGKILL');
  await waitFor(() => !alive(victimPid), 10_000, 'the victim process to die');
  await sleep(faultMs - (performance.now() - faultAt));
  await containerd.start();
  const faultEnded = performance.now();
  t.diagnostic(`containerd was down for ${String(Math.round(faultEnded - faultAt))} ms`);

  await convergence(t, 'containerd kill -9', faultEnded, look, () => agent.tail(), (truth) => same(truth, survivors));
  assertStillRunning(agent);
  assert.deepEqual(receiver.violations, []);
});

engineTest('the vtunnel peer down while containers come and go, then back EMPTY on the same port: its view equals docker ps', { needs: dockerNeeds, timeout: 120_000 }, async (t) => {
  await dockerReady();
  const p = ports.peer;
  const containers = new TestContainers();
  t.after(() => containers.removeAll());
  let receiver = await startReceiver(p.receiver);
  t.after(() => receiver.close());

  await runContainer(containers, '-p', `${String(p.keep)}:80`, busyboxImage, 'httpd', '-f', '-p', '80');
  const gone = await runContainer(containers, '-p', `${String(p.gone)}:80`, '-p', `${String(p.goneUdp)}:53/udp`, busyboxImage, 'sleep', '600');
  const agent = agentFor(t, 'peer', ['-docker', ...vtunnelFlags(p.receiver)]);
  const look = async (): Promise<Sides> => ({ truth: await dockerTruth(), view: ours(viewKeys(receiver)) });
  await initiallyEqual('the start-up scan', look, () => agent.tail());

  await receiver.close();
  const downAt = performance.now();
  await removeContainer(gone);
  await runContainer(containers, '-p', `${String(p.added)}:80`, '-p', `${String(p.addedUdp)}:53/udp`, busyboxImage, 'sleep', '600');
  // The changes must have met the closed port, or this tests nothing.
  await waitForLog(agent, /over the vtunnel .*ECONNREFUSED/);
  await sleep(faultMs - (performance.now() - downAt));
  receiver = await listenAgain(p.receiver);
  const faultEnded = performance.now();
  t.diagnostic(`the vtunnel peer was down for ${String(Math.round(faultEnded - downAt))} ms`);
  assert.equal(receiver.view.size, 0, 'the peer is back empty');

  const expected = sorted([
    `tcp/0.0.0.0:${String(p.keep)}`,
    `tcp/0.0.0.0:${String(p.added)}`,
    `udp/0.0.0.0:${String(p.addedUdp)}`,
  ]);
  const settled = (truth: readonly string[]): boolean =>
    expected.every((k) => truth.includes(k)) && !truth.some((k) => k.endsWith(`:${String(p.gone)}`));
  await convergence(t, 'vtunnel peer down and back empty', faultEnded, look, () => agent.tail(), settled);
  assert.deepEqual(receiver.violations, []);

  // Now it restarts empty while nothing changes here: no send fails, so only the agent's
  // periodic re-send can notice. The old agent never did.
  await receiver.close();
  receiver = await listenAgain(p.receiver);
  const quietRestart = performance.now();
  assert.equal(receiver.view.size, 0, 'the peer is back empty');
  await convergence(t, 'vtunnel peer restarted empty while nothing changed', quietRestart, look, () => agent.tail(), settled);
  assertStillRunning(agent);
  assert.deepEqual(receiver.violations, []);
});

engineTest('the Kubernetes API server drops connections and answers 410 while Services change: the vtunnel view equals the Services', { needs: ['openssl'], timeout: 120_000 }, async (t) => {
  const p = ports.kubernetes;
  const server = new FakeApiServer(await makeTestPki());
  server.port = p.apiServer;
  await server.start();
  const dir = await mkdtemp(join(tmpdir(), 'portstream-faults-kube-'));
  t.after(async () => {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });
  const kubeconfig = join(dir, 'k3s.yaml');
  await server.writeKubeconfig(kubeconfig);
  const receiver = await startReceiver(p.receiver);
  t.after(() => receiver.close());

  // The truth, kept by the test from what it asked for: NodePort → each nodePort, LoadBalancer → each port.
  const services = new Map<string, PortKey[]>();
  const keysOf = (spec: FakeServiceSpec): PortKey[] =>
    spec.type === 'NodePort' || spec.type === 'LoadBalancer'
      ? spec.ports.map((q) => portKey({ protocol: q.protocol === 'UDP' ? 'udp' : 'tcp', hostIp: '0.0.0.0', hostPort: (spec.type === 'NodePort' ? q.nodePort : q.port) ?? 0 }))
      : [];
  const create = (spec: FakeServiceSpec): void => {
    server.create(spec);
    services.set(spec.name, keysOf(spec));
  };
  const remove = (name: string): void => {
    server.delete('default', name);
    services.delete(name);
  };
  const truth = (): PortKey[] => sorted(new Set([`tcp/0.0.0.0:${String(p.k8sApiPort)}`, ...[...services.values()].flat()]));

  create({ name: 'web', type: 'NodePort', ports: [{ port: 80, nodePort: 23301 }] });
  create({ name: 'dns', type: 'LoadBalancer', ports: [{ name: 'tcp', protocol: 'TCP', port: 23302 }, { name: 'udp', protocol: 'UDP', port: 23302 }] });
  create({ name: 'internal', ports: [{ port: 8080 }] });

  const agent = agentFor(t, 'kubernetes', ['-kubernetes', '-kubeconfig', kubeconfig, '-k8sAPIPort', String(p.k8sApiPort), ...vtunnelFlags(p.receiver)]);
  const look = (): Sides => ({ truth: truth(), view: sorted(viewKeys(receiver)) });
  await initiallyEqual('the start-up list', look, () => agent.tail());
  await waitFor(() => server.openWatches === 1, 10_000, 'the watch');

  // The fault: every 250 ms the open connections are dropped or the watches expire (410), and a
  // list is followed by a change and a compaction, so the watch from its version answers 410.
  const { lists: listsBefore, gone: goneBefore } = server.stats;
  const changes: (() => void)[] = [
    () => { remove('web'); },
    () => { create({ name: 'game', type: 'NodePort', ports: [{ name: 'tcp', protocol: 'TCP', port: 7777, nodePort: 23303 }, { name: 'udp', protocol: 'UDP', port: 7777, nodePort: 23303 }] }); },
    () => { create({ name: 'brief', type: 'NodePort', ports: [{ port: 81, nodePort: 23304 }] }); },
    () => { remove('brief'); },
    () => { server.update('default', 'dns', { type: 'ClusterIP' }); services.set('dns', []); },
    () => { create({ name: 'lb', type: 'LoadBalancer', ports: [{ protocol: 'UDP', port: 23305 }] }); },
  ];
  const brokenAt = performance.now();
  for (let tick = 0; performance.now() - brokenAt < faultMs; tick++) {
    if (tick % 2 === 0) server.dropConnections();
    else server.expireWatches();
    server.afterNextList(() => {
      create({ name: `between-${String(tick)}`, type: 'NodePort', ports: [{ port: 82, nodePort: 23310 + (tick % 50) }] });
      server.compact();
    });
    changes[tick]?.();
    await sleep(250);
  }
  server.afterNextList(() => undefined);
  const faultEnded = performance.now();
  t.diagnostic(`the API server broke every connection for ${String(Math.round(faultEnded - brokenAt))} ms`);
  assert.ok(server.stats.gone > goneBefore, 'watches were answered with 410 Gone');
  assert.ok(server.stats.lists > listsBefore + 1, 'the agent re-listed during the fault');

  const { ms } = await convergence(t, 'API server drops and 410s', faultEnded, look, () => `${agent.tail()}\nrequests: ${server.stats.requests.slice(-20).join('\n')}`);
  assertStillRunning(agent);
  assert.deepEqual(receiver.violations, []);
  t.diagnostic(`kubernetes: ${String(server.stats.lists - listsBefore)} lists and ${String(server.stats.gone - goneBefore)} 410s during and after the fault; converged in ${String(ms)} ms`);
});

engineTest('the host switch answers 500 while containers come and go (udp too): its forwards equal docker ps after it recovers', { needs: dockerNeeds, timeout: 120_000 }, async (t) => {
  await dockerReady();
  const p = ports.hostSwitch;
  const containers = new TestContainers();
  t.after(() => containers.removeAll());
  // Host and VM are one machine here: docker-proxy already holds the published ports, so the fake
  // records its proxies rather than binding them as the forwarder would on the host.
  const fake: Fake = await startFake(t, p.forwarder, { bind: false });

  await runContainer(containers, '-p', `${String(p.keep)}:80`, busyboxImage, 'httpd', '-f', '-p', '80');
  const gone = await runContainer(containers, '-p', `${String(p.gone)}:80`, '-p', `${String(p.goneUdp)}:53/udp`, busyboxImage, 'sleep', '600');
  const agent = agentFor(t, 'hostswitch', ['-docker', '-hostSwitchURL', fake.url, '-iptables=false', '-procnet=false']);
  // What the forwarder should hold for each published IPv4 port (the API is IPv4 only; without
  // -adminInstall every host IP of a port becomes one 127.0.0.1 entry).
  const entriesOf = (keys: readonly PortKey[]): string[] =>
    sorted(new Set(keys.filter((k) => !k.includes('[')).map((k) => {
      const [protocol = '', rest = ''] = k.split('/');
      const port = rest.slice(rest.lastIndexOf(':') + 1);
      return `${protocol} 127.0.0.1:${port}->192.168.127.2:${port}`;
    })));
  const look = async (): Promise<Sides> => ({ truth: entriesOf(await dockerTruth()), view: fake.view().filter(ourPort) });
  await initiallyEqual('the start-up scan', look, () => agent.tail());

  fake.fault = { status: 500, message: 'injected fault: the forwarder is unwell' };
  const faultAt = performance.now();
  const requestsAtFault = fake.requests.length;
  await removeContainer(gone);
  await runContainer(containers, '-p', `${String(p.added)}:80`, '-p', `${String(p.addedUdp)}:53/udp`, busyboxImage, 'sleep', '600');
  // The changes must have met the fault, or this tests nothing.
  await waitFor(
    () => {
      const during = fake.requests.slice(requestsAtFault);
      return during.some((r) => r.includes('/unexpose') && r.includes(`:${String(p.goneUdp)}"`)) && during.some((r) => r.includes('/expose') && r.includes(`:${String(p.addedUdp)}"`));
    },
    10_000,
    () => `the unexpose of ${String(p.goneUdp)}/udp and the expose of ${String(p.addedUdp)}/udp to meet the fault: ${fake.requests.slice(requestsAtFault).join('\n')}\n${agent.tail()}`,
  );
  await sleep(faultMs - (performance.now() - faultAt));
  fake.fault = undefined;
  const requestsAtRecovery = fake.requests.length;
  const faultEnded = performance.now();
  t.diagnostic(`the host switch answered 500 for ${String(Math.round(faultEnded - faultAt))} ms`);

  const expected = entriesOf([`tcp/0.0.0.0:${String(p.keep)}`, `tcp/0.0.0.0:${String(p.added)}`, `udp/0.0.0.0:${String(p.addedUdp)}`]);
  await convergence(t, 'host switch 500', faultEnded, look, () => `${agent.tail()}\nforwarder: ${fake.view().join(', ')}`, (truth) => same(truth, expected));
  // The UDP forward of the removed container went with its protocol (without it, tcp is meant).
  assert.ok(
    fake.requests.slice(requestsAtRecovery).includes(`POST /services/forwarder/unexpose {"local":"127.0.0.1:${String(p.goneUdp)}","protocol":"udp"}`),
    `the udp unexpose after the recovery: ${fake.requests.slice(requestsAtRecovery).join('\n')}`,
  );

  // Now it loses every forward (restarts empty) while nothing changes here: no request fails, so
  // only the agent's periodic re-read of /all can notice.
  for (const proxy of fake.proxies.values()) proxy.close();
  fake.proxies.clear();
  const quietRestart = performance.now();
  await convergence(t, 'host switch restarted empty while nothing changed', quietRestart, look, () => `${agent.tail()}\nforwarder: ${fake.view().join(', ')}`, (truth) => same(truth, expected));
  assertStillRunning(agent);
});

engineTest('SIGTERM while a burst of 20 container starts is in flight: everything withdrawn from the receiver, exit 0, within the withdraw bound', { needs: dockerNeeds, timeout: 120_000 }, async (t) => {
  await dockerReady();
  const p = ports.sigterm;
  const burst = 20;
  const containers = new TestContainers();
  let runs: Promise<void>[] = [];
  t.after(async () => {
    await Promise.allSettled(runs); // so that every run's ID is in `containers` before the removal
    await containers.removeAll();
  });
  const receiver = await startReceiver(p.receiver);
  t.after(() => receiver.close());
  const agent = agentFor(t, 'sigterm', ['-docker', ...vtunnelFlags(p.receiver)]);
  await waitForLog(agent, /connected to the Docker engine/);
  // Let the start-up list reach the receiver (other tests' containers may be in it).
  await sleep(300);

  let returned = 0;
  runs = Array.from({ length: burst }, (_, i) =>
    runContainer(containers, '-p', `${String(p.burst + i)}:80`, busyboxImage, 'sleep', '600').then(() => {
      returned += 1;
    }),
  );
  const burstKeys = (): PortKey[] => ours(viewKeys(receiver)).filter((k) => Number(k.slice(k.lastIndexOf(':') + 1)) >= p.burst);
  await waitFor(() => burstKeys().length > 0, 20_000, () => `the first port of the burst to be published\n${agent.tail()}`, 2);
  const publishedAtSigterm = burstKeys().length;
  const returnedAtSigterm = returned;
  const sigtermAt = performance.now();
  agent.child.kill('SIGTERM');
  const exit = await agent.exited;
  const exitMs = Math.round(performance.now() - sigtermAt);
  t.diagnostic(`SIGTERM with ${String(returnedAtSigterm)} of ${String(burst)} docker runs returned and ${String(publishedAtSigterm)} burst ports published; exit ${String(exit.code)} after ${String(exitMs)} ms`);

  assert.ok(returnedAtSigterm < burst, 'the SIGTERM came while the burst was in flight');
  assert.deepEqual(exit, { code: 0, signal: null }, agent.tail());
  assert.ok(exitMs <= vtunnelDefaults.withdrawTimeoutMs, `the agent exited ${String(exitMs)} ms after SIGTERM (bound ${String(vtunnelDefaults.withdrawTimeoutMs)} ms)`);
  assert.deepEqual(sorted(viewKeys(receiver)), [], `SIGTERM must withdraw everything\n${agent.tail()}`);
  assert.match(agent.stderr(), /withdrew \d+ forwards \(vtunnel\)/);
  await Promise.allSettled(runs);
  await sleep(300);
  assert.deepEqual(sorted(viewKeys(receiver)), [], 'nothing arrives after the exit');
  assert.deepEqual(receiver.violations, []);
});

engineTest('SIGTERM twice while the withdrawal hangs: the sources (the rule monitor too) stop at the first, and the second exits 0 at once', { needs: ['root', 'iptables', 'nft'], timeout: 60_000 }, async (t) => {
  const p = ports.sigtermTwice;
  // A vtunnel peer that takes each message and never closes: every send, the withdrawal's too, hangs.
  const peerSockets = new Set<net.Socket>();
  let messages = 0;
  const peer = net.createServer({ allowHalfOpen: true }, (socket) => {
    peerSockets.add(socket);
    socket.on('error', () => undefined);
    socket.once('data', () => (messages += 1));
  });
  await new Promise<void>((resolve) => peer.listen(p.peer, '127.0.0.1', resolve));
  t.after(async () => {
    for (const socket of peerSockets) socket.destroy();
    await new Promise((resolve) => peer.close(resolve));
  });
  // The API port is forwarded from the start, kubeconfig or not: something to withdraw.
  const agent = agentFor(t, 'sigterm-twice', [
    '-kubernetes',
    '-kubeconfig',
    '/nonexistent/portstream-test/k3s.yaml',
    '-k8sAPIPort',
    String(p.k8sApiPort),
    '-privilegedService',
    '-procnet=false',
    '-vtunnelAddr',
    `127.0.0.1:${String(p.peer)}`,
    '-connectInterface',
    'lo',
  ]);
  await waitForLog(agent, /watching rule changes with (nft monitor|xtables-monitor)/);
  const monitors = childProcesses(agent.pid).filter((c) => c.comm === 'nft' || c.comm === 'xtables-monitor');
  assert.equal(monitors.length, 1, `the agent runs one rule monitor: ${JSON.stringify(childProcesses(agent.pid))}`);
  await waitFor(() => messages >= 1, 10_000, () => `the API port's add to reach the peer\n${agent.tail()}`);

  agent.child.kill('SIGTERM');
  await waitForLog(agent, /stopping: withdrawing every forward/);
  // The sources end at once (only the sinks' withdrawal goes on), so no monitor outlives a forced exit.
  const monitor = monitors[0]!;
  await waitFor(() => !alive(monitor.pid), 3_000, `the rule monitor (${monitor.comm}, pid ${String(monitor.pid)}) to end at the first SIGTERM`);
  assert.equal(agent.exitedYet(), false, 'the withdrawal still hangs');
  const secondAt = performance.now();
  agent.child.kill('SIGTERM');
  const exit = await agent.exited;
  const exitMs = Math.round(performance.now() - secondAt);
  assert.deepEqual(exit, { code: 0, signal: null }, agent.tail());
  assert.ok(exitMs < vtunnelDefaults.withdrawTimeoutMs, `exited ${String(exitMs)} ms after the second SIGTERM, not after the withdraw bound`);
  assert.match(agent.stderr(), /asked again to stop; exiting without waiting for the withdrawal/);
});
