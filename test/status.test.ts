/**
 * The status endpoint (`-statusAddr`, docs/status.md) of the REAL agent process (agentProcess.ts)
 * watching the real dockerd and publishing to a strict vtunnel peer (vtunnelReceiver.ts):
 * `/forwards` and `/metrics` follow containers coming and going, a refusing peer shows as failed
 * with its error until it answers, `/healthz` turns 503 while dockerd is down and 200 once it is
 * back, `portstream status` reads it all over a unix socket, and a non-loopback address is
 * refused at start-up. Host ports 25100-25199 are this file's. Run it under the engines lock.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, type TestContext } from 'node:test';
import { startAgent, waitForLog, type AgentProcess } from './agentProcess.js';
import {
  busyboxImage,
  dockerNeeds,
  engineTest,
  ensureBusyboxImage,
  ensureDockerd,
  killDockerd9,
  restartDockerd,
  TestContainers,
  waitFor,
} from './engines.js';
import { startReceiver } from './vtunnelReceiver.js';
import type { ForwardView, HealthView } from '../src/status/views.js';

const main = new URL('../src/main.ts', import.meta.url).pathname;
const ports = { receiver: 25190, refusing: 25191, statusTcp: 25192, web: 25101, late: 25102, again: 25103 } as const;

const dir = await mkdtemp(join(tmpdir(), 'portstream-status-'));
after(() => rm(dir, { recursive: true, force: true }));

type Target = { readonly socketPath: string } | { readonly host: string; readonly port: number };

function get(target: Target, path: string): Promise<{ status: number; type: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ ...target, path, timeout: 5_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => {
        resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), body });
      });
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${path}: no answer within 5 s`)));
    req.on('error', reject);
    req.end();
  });
}

const forwardsOf = async (target: Target): Promise<ForwardView[]> => JSON.parse((await get(target, '/forwards')).body) as ForwardView[];
const health = async (target: Target): Promise<{ status: number; body: HealthView }> => {
  const res = await get(target, '/healthz');
  return { status: res.status, body: JSON.parse(res.body) as HealthView };
};
const onPort = (forwards: readonly ForwardView[], port: number): ForwardView[] => forwards.filter((f) => f.hostPort === port && f.protocol === 'tcp');

/** The value of one sample line of the Prometheus text, e.g. `portstream_source_forwards{source="docker"}`. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(series + ' '));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

function agentWith(t: TestContext, args: readonly string[]): AgentProcess {
  const agent = startAgent(args);
  t.after(async () => {
    if (!agent.exitedYet()) agent.child.kill('SIGTERM');
    await Promise.race([agent.exited, new Promise((r) => setTimeout(r, 10_000))]);
    await agent.kill();
  });
  return agent;
}

function vtunnelFlags(port: number): string[] {
  return ['-docker', '-privilegedService', '-iptables=false', '-procnet=false', '-vtunnelAddr', `127.0.0.1:${String(port)}`, '-connectInterface', 'lo'];
}

async function ready(): Promise<void> {
  await ensureDockerd();
  await ensureBusyboxImage();
}

function runStatusCommand(args: readonly string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', main, 'status', ...args], { timeout: 30_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? Number((error as { code?: unknown }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

engineTest('status: /forwards and /metrics follow a container coming and going; portstream status reads the unix socket', { needs: dockerNeeds, timeout: 120_000 }, async (t) => {
  await ready();
  const containers = new TestContainers();
  t.after(() => containers.removeAll());
  const receiver = await startReceiver(ports.receiver);
  t.after(() => receiver.close());
  const socketPath = join(dir, 'a.sock');
  const target = { socketPath };
  const agent = agentWith(t, [...vtunnelFlags(ports.receiver), '-statusAddr', socketPath]);
  await waitForLog(agent, /status endpoint listening/);
  await waitFor(async () => (await health(target)).status === 200, 20_000, () => `the agent to be healthy\n${agent.tail()}`);

  const id = await containers.run('-p', `${String(ports.web)}:80`, busyboxImage, 'httpd', '-f', '-p', '80');
  await waitFor(async () => onPort(await forwardsOf(target), ports.web).some((f) => f.sinks['vtunnel']?.state === 'applied'), 20_000, () => `port ${String(ports.web)} applied\n${agent.tail()}`);
  const [entry] = onPort(await forwardsOf(target), ports.web);
  assert.ok(entry);
  assert.deepEqual(entry.sources, ['docker']);
  assert.equal(entry.owner, id);
  assert.equal(entry.containerPort, 80);
  assert.ok(receiver.view.has(`tcp/${entry.hostIp}:${String(ports.web)}`), 'the peer has what /forwards calls applied');

  const onWeb = (await forwardsOf(target)).filter((f) => f.hostPort === ports.web).length; // IPv4 and IPv6 bindings
  const metrics = await get(target, '/metrics');
  assert.equal(metrics.status, 200);
  assert.match(metrics.type, /^text\/plain/);
  const counted = sample(metrics.body, 'portstream_source_forwards{source="docker"}') ?? 0;
  assert.ok(counted >= 1, `docker's forwards in /metrics: ${String(counted)}`);
  assert.ok((sample(metrics.body, 'portstream_sink_writes_total{sink="vtunnel"}') ?? 0) >= 1);
  assert.ok((sample(metrics.body, 'portstream_source_events_total{source="docker"}') ?? 0) >= 1);
  assert.ok((sample(metrics.body, 'portstream_event_to_sink_seconds_count{sink="vtunnel"}') ?? 0) >= 1, 'the latency histogram has observations');
  assert.match(metrics.body, /^nodejs_eventloop_lag_seconds \d/m);
  assert.match(metrics.body, /^process_resident_memory_bytes \d/m);

  const shown = await runStatusCommand(['-statusAddr', socketPath]);
  assert.equal(shown.code, 0, shown.stderr);
  assert.match(shown.stdout, new RegExp(`^tcp\\s+\\S+\\s+${String(ports.web)}\\s+80\\s+docker\\s+${id.slice(0, 12)}$`, 'm'));
  assert.match(shown.stdout, /^healthy$/m);

  await containers.removeAll();
  await waitFor(async () => onPort(await forwardsOf(target), ports.web).length === 0, 20_000, () => `port ${String(ports.web)} gone from /forwards\n${agent.tail()}`);
  const later = await get(target, '/metrics');
  assert.equal(sample(later.body, 'portstream_source_forwards{source="docker"}'), counted - onWeb);
  assert.equal([...receiver.view.keys()].filter((k) => k.endsWith(`:${String(ports.web)}`)).length, 0);

  agent.child.kill('SIGTERM');
  assert.deepEqual(await agent.exited, { code: 0, signal: null });
  assert.equal(existsSync(socketPath), false, 'the socket is removed at shutdown');
  const gone = await runStatusCommand(['-statusAddr', socketPath]);
  assert.equal(gone.code, 1);
  assert.equal(gone.stderr.trim().split('\n').length, 1, gone.stderr);
  assert.match(gone.stderr, /^portstream status: no agent answers on .*a\.sock/);
  assert.deepEqual(receiver.violations, []);
});


engineTest('status: a refusing vtunnel peer shows as failed with its error, then applied once it answers (over 127.0.0.1:PORT)', { needs: dockerNeeds, timeout: 120_000 }, async (t) => {
  await ready();
  const containers = new TestContainers();
  t.after(() => containers.removeAll());
  const target = { host: '127.0.0.1', port: ports.statusTcp };
  const agent = agentWith(t, [...vtunnelFlags(ports.refusing), '-statusAddr', `127.0.0.1:${String(ports.statusTcp)}`]);
  await waitForLog(agent, /status endpoint listening/);
  await containers.run('-p', `${String(ports.late)}:80`, busyboxImage, 'httpd', '-f', '-p', '80');

  // Nothing listens on the peer's port: every write is refused.
  await waitFor(async () => onPort(await forwardsOf(target), ports.late).some((f) => f.sinks['vtunnel']?.state === 'failed'), 20_000, () => `port ${String(ports.late)} failed\n${agent.tail()}`);
  const [failed] = onPort(await forwardsOf(target), ports.late);
  const state = failed?.sinks['vtunnel'];
  assert.match(state?.error ?? '', /ECONNREFUSED/);
  assert.ok(Math.abs(Date.parse(state?.since ?? '') - Date.now()) < 60_000, `failed since ${String(state?.since)}`);
  const sick = await health(target);
  assert.equal(sick.status, 503);
  assert.equal(sick.body.ok, false);
  assert.ok(sick.body.problems.some((p) => /^sink vtunnel: not in sync .*ECONNREFUSED/.test(p)), sick.body.problems.join('\n'));
  assert.equal(sick.body.sinks['vtunnel']?.inSync, false);
  const metrics = (await get(target, '/metrics')).body;
  assert.ok((sample(metrics, 'portstream_sink_failures_total{sink="vtunnel"}') ?? 0) >= 1);
  assert.ok((sample(metrics, 'portstream_sink_forwards{sink="vtunnel",state="failed"}') ?? 0) >= 1);

  // The peer comes up: the sink's retry re-sends everything, and the forward is applied.
  const receiver = await startReceiver(ports.refusing);
  t.after(() => receiver.close());
  await waitFor(async () => (await health(target)).status === 200, 30_000, () => `healthy again\n${agent.tail()}`);
  const [applied] = onPort(await forwardsOf(target), ports.late);
  assert.ok(applied);
  assert.equal(applied.sinks['vtunnel']?.state, 'applied');
  assert.ok(receiver.view.has(`tcp/${applied.hostIp}:${String(ports.late)}`));
  assert.equal(sample((await get(target, '/metrics')).body, 'portstream_sink_forwards{sink="vtunnel",state="failed"}'), 0);
  assert.deepEqual(receiver.violations, []);
});

engineTest('status: /healthz is 503 naming docker while dockerd is down, 200 once it is back; a stale socket is replaced', { needs: dockerNeeds, timeout: 180_000 }, async (t) => {
  await ready();
  t.after(() => ensureDockerd()); // dockerd up again even if the test failed while it was down
  const receiver = await startReceiver(ports.receiver);
  t.after(() => receiver.close());
  const socketPath = join(dir, 'stale.sock');
  await leaveStaleSocket(socketPath);
  const target = { socketPath };
  const agent = agentWith(t, [...vtunnelFlags(ports.receiver), '-statusAddr', socketPath]);
  await waitForLog(agent, /replacing the stale status socket/);
  await waitFor(async () => (await health(target)).status === 200, 20_000, () => `the agent to be healthy\n${agent.tail()}`);

  await killDockerd9();
  await waitFor(async () => (await health(target)).status === 503, 20_000, () => `/healthz to be 503\n${agent.tail()}`);
  const down = (await health(target)).body;
  assert.equal(down.sources['docker']?.connected, false);
  assert.ok(down.problems.some((p) => /^source docker: not connected since \S+: .+/.test(p)), down.problems.join('\n'));
  const metrics = (await get(target, '/metrics')).body;
  assert.equal(sample(metrics, 'portstream_source_connected{source="docker"}'), 0);
  assert.ok((sample(metrics, 'portstream_source_reconnects_total{source="docker"}') ?? 0) >= 1);

  await restartDockerd();
  await waitFor(async () => (await health(target)).status === 200, 30_000, () => `/healthz to be 200 again\n${agent.tail()}`);
  const up = (await health(target)).body;
  assert.equal(up.sources['docker']?.connected, true);
  assert.deepEqual(up.problems, []);
  assert.deepEqual(receiver.violations, []);
});

/** A unix socket file that nothing listens on, as an agent killed with SIGKILL leaves behind. */
async function leaveStaleSocket(path: string): Promise<void> {
  // A process that dies listening leaves its socket file; nothing answers on it any more.
  const child = spawn(process.execPath, ['-e', 'require("net").createServer().listen(process.argv[1], () => console.log("up"))', path], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve) => child.stdout.once('data', () => { resolve(); }));
  child.kill('SIGKILL');
  await new Promise((resolve) => child.once('exit', resolve));
  assert.ok(existsSync(path));
}

engineTest('status: a -statusAddr that is not loopback or a unix socket path stops the agent at start-up with exit 2', { needs: ['root'], timeout: 60_000 }, async (t) => {
  for (const value of ['0.0.0.0:9000', '192.168.1.10:9000', 'localhost:9000', 'status.sock']) {
    const agent = agentWith(t, ['-iptables=false', '-statusAddr', value]);
    const exit = await agent.exited;
    assert.deepEqual(exit, { code: 2, signal: null }, agent.tail());
    const first = agent.stderr().split('\n')[0] ?? '';
    assert.match(first, new RegExp(`^portstream: invalid value "${value.replaceAll('.', '\\.')}" for flag -statusAddr: `));
  }
});
