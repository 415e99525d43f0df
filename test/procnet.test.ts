/**
 * The host-network source against the real kernel: listeners made by other processes (a Node
 * server, a `--network host` busybox httpd) reach a strict vtunnel peer through the real
 * pipeline (procnet → mergeDeltas → vtunnel sink) and are withdrawn when they stop; a listener
 * that lives under the stability interval never does; docker-proxy's listening addresses give
 * the same keys as the Docker source. Other helpers' listeners may be on this machine too, so
 * every check looks at this file's ports only (47130-47169).
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { after, before } from 'node:test';
import { pino } from 'pino';
import { Subject } from 'rxjs';
import { createAgent } from '../src/agent.js';
import { portKey, type PortKey } from '../src/model.js';
import { vtunnelSink } from '../src/sinks/vtunnel.js';
import { connectAddrsOf } from '../src/wire/connectAddrs.js';
import { procnetEvents, procnetDefaults } from '../streams/procnet.js';
import { nodeSocketTable, ownSocketInodes } from '../streams/procnetClient.js';
import { defaultProcnetExclude, parsePortList, procnetExclusions, publishable, type ForwardPolicy, type PortRange } from '../streams/procnetPolicy.js';
import { portsFromInspect, type InspectPorts } from '../streams/dockerPorts.js';
import { busyboxImage, docker, dockerNeeds, engineTest, ensureBusyboxImage, ensureDockerd, sleep, TestContainers, waitFor } from './engines.js';
import { startReceiver, type Receiver } from './vtunnelReceiver.js';

const log = pino({ level: process.env['PORTSTREAM_LOG_LEVEL'] ?? 'warn' }, pino.destination(2));
const policy: ForwardPolicy = {
  exclude: procnetExclusions((parsePortList(defaultProcnetExclude) as { ranges: PortRange[] }).ranges, 6443),
  reachable: (ip) => connectAddrsOf('lo').some((a) => a.addr.split('/')[0] === ip),
};
const ports = { node: 47130, udp: 47131, httpd: 47140, docker: 47150, brief: 47160 } as const;

interface Running {
  readonly receiver: Receiver;
  stop(): Promise<void>;
}

/** The agent's pipeline in this process: the real socket table, a strict vtunnel peer on loopback. */
async function runAgent(): Promise<Running> {
  const receiver = await startReceiver();
  const stop$ = new Subject<void>();
  let done!: () => void;
  const finished = new Promise<void>((resolve) => (done = resolve));
  const table = nodeSocketTable(log);
  createAgent(
    {
      sources: { procnet: procnetEvents(table, { policy, logger: log }) },
      routes: [
        {
          sink: vtunnelSink({ address: `127.0.0.1:${String(receiver.port)}`, connectAddrs: () => connectAddrsOf('lo'), resyncMs: 0, logger: log }),
          sources: ['procnet'],
        },
      ],
    },
    stop$,
  ).subscribe({ complete: done, error: done });
  return {
    receiver,
    stop: async () => {
      stop$.next();
      await finished;
      await receiver.close();
    },
  };
}

/** A Node process listening on TCP 0.0.0.0:tcp (and UDP 0.0.0.0:udp), for `lifeMs` or until killed. */
async function listener(tcp: number, opts: { udp?: number; lifeMs?: number } = {}): Promise<ChildProcess> {
  const script = `
    const net = require('node:net'), dgram = require('node:dgram');
    const s = net.createServer().listen(${String(tcp)}, '0.0.0.0', () => {
      ${opts.udp === undefined ? '' : `dgram.createSocket('udp4').bind(${String(opts.udp)}, '0.0.0.0');`}
      process.stdout.write('ready\\n');
    });
    ${opts.lifeMs === undefined ? 'setInterval(() => {}, 1000);' : `setTimeout(() => process.exit(0), ${String(opts.lifeMs)});`}`;
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    child.stdout.once('data', () => {
      resolve();
    });
    child.once('exit', (code) => {
      reject(new Error(`the listener exited (${String(code)}) before it listened`));
    });
  });
  return child;
}

const has = (r: Receiver, key: string): boolean => r.view.has(key);
const mentions = (r: Receiver, port: number): boolean => r.lines.some((l) => l.includes(`"HostPort":"${String(port)}"`));

const children: ChildProcess[] = [];
const containers = new TestContainers();
let agent: Running | undefined;
before(async () => {
  agent = await runAgent();
});
after(async () => {
  for (const child of children) child.kill('SIGKILL');
  await containers.removeAll();
  await agent?.stop();
});

engineTest('a plain Node listener (TCP and UDP) is forwarded to the vtunnel peer, and withdrawn when it stops', { needs: [], timeout: 30_000 }, async () => {
  const r = agent!.receiver;
  const child = await listener(ports.node, { udp: ports.udp });
  children.push(child);
  await waitFor(() => has(r, `tcp/0.0.0.0:${String(ports.node)}`) && has(r, `udp/0.0.0.0:${String(ports.udp)}`), 10_000, () => `the listener on the peer: ${[...r.view.keys()].join(' ')}`);
  assert.ok(!mentions(r, r.port), "the agent's own sockets (the peer in this process) are never forwarded");
  child.kill('SIGTERM');
  await waitFor(() => !has(r, `tcp/0.0.0.0:${String(ports.node)}`) && !has(r, `udp/0.0.0.0:${String(ports.udp)}`), 10_000, 'the withdrawal');
  assert.deepEqual(r.violations, []);
});

engineTest('a --network host busybox httpd is forwarded, and withdrawn when the container goes', { needs: dockerNeeds, timeout: 120_000 }, async () => {
  await ensureDockerd();
  await ensureBusyboxImage();
  const r = agent!.receiver;
  const id = await containers.run('--network', 'host', busyboxImage, 'httpd', '-f', '-p', String(ports.httpd));
  // busybox listens on [::] (dual-stack) where IPv6 exists, else on 0.0.0.0: either key will do
  const keys = [`tcp/0.0.0.0:${String(ports.httpd)}`, `tcp/:::${String(ports.httpd)}`];
  await waitFor(() => keys.some((k) => has(r, k)), 15_000, () => `httpd on the peer: ${[...r.view.keys()].join(' ')}`);
  await docker('rm', '-f', id);
  await waitFor(() => !keys.some((k) => has(r, k)), 10_000, 'the withdrawal of httpd');
  assert.deepEqual(r.violations, []);
});

engineTest('a listener that lives under the stability interval is seen by the scan but never published', { needs: [], timeout: 30_000 }, async () => {
  const r = agent!.receiver;
  const table = nodeSocketTable(log);
  const lifeMs = Math.round(procnetDefaults.stableMs * 0.6);
  const child = await listener(ports.brief, { lifeMs });
  children.push(child);
  // the test can fail: the scanner must see the socket while it lives
  let seen = false;
  await waitFor(() => (seen = table.read().decode().some((s) => s.port === ports.brief)), lifeMs, 'the scanner to see the brief listener', 10);
  await new Promise<void>((resolve) => child.once('exit', () => { resolve(); }));
  await sleep(procnetDefaults.stableMs * 2);
  assert.ok(seen);
  assert.ok(!mentions(r, ports.brief), `the brief listener reached the peer: ${r.lines.join('')}`);
});

engineTest("docker-proxy's listening addresses and the Docker source's hostIp give the same keys", { needs: dockerNeeds, timeout: 120_000 }, async () => {
  await ensureDockerd();
  await ensureBusyboxImage();
  const id = await containers.run('-p', `${String(ports.docker)}:80`, busyboxImage, 'httpd', '-f', '-p', '80');
  const inspect = JSON.parse(await docker('inspect', id)) as { NetworkSettings: { Ports: InspectPorts } }[];
  const fromDocker = new Set(portsFromInspect(id, inspect[0]?.NetworkSettings.Ports).forwards.map(portKey));
  const table = nodeSocketTable(log);
  const own = ownSocketInodes();
  let fromProcnet = new Set<PortKey>();
  await waitFor(() => {
    const sockets = table.read().decode();
    const { forwards } = publishable(sockets, own(new Set(sockets.map((s) => s.inode))), policy);
    fromProcnet = new Set([...forwards.values()].filter((f) => f.hostPort === ports.docker).map(portKey));
    return fromProcnet.size >= fromDocker.size;
  }, 10_000, 'docker-proxy to listen');
  assert.ok(fromDocker.size > 0);
  assert.deepEqual([...fromProcnet].sort(), [...fromDocker].sort());
});
