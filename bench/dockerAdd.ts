/**
 * The Docker add path, end to end, as the issue measures it against the Go agent: from the
 * engine's own timestamp of a container's start event (`timeNano`) to the vtunnel peer having the
 * whole PortMapping message (its newline, where a host side acts on it). The real agent process
 * (`-docker -privilegedService`) runs against the real dockerd, once compiled (dist/, as the
 * package's bin runs it) and once under tsx (as `npm start` does). Both clocks are this
 * machine's wall clock.
 *
 * The peer is a process of its own, as the real vtunnel peer is (receiverMain.ts). And in the same
 * run, `floorAgent.ts` does the least any Node agent could do on this path, so that the figures
 * can be read against what this machine allows on the day: at a container's start, dockerd,
 * containerd, runc and two docker-proxy processes all want the two CPUs, and every process on the
 * path waits its turn.
 */
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { once } from 'node:events';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import Docker from 'dockerode';
import { busyboxImage, dockerAnswers, ensureBusyboxImage, removeTestContainers, testLabel } from '../test/engines.js';
import { sleep, until } from './harness.js';
import { startReceiverProcess, type Receiver } from './receiver.js';
import { percentile, report, round } from './stats.js';

const root = fileURLToPath(new URL('..', import.meta.url));

/** The label that tells the floor agent a container's host port (the real agent inspects). */
const hostPortLabel = 'portstream.bench.host-port';

interface Mode {
  readonly name: 'compiled' | 'tsx' | 'floor';
  /** node's arguments, given the peer's port. */
  readonly argv: (peerPort: number) => readonly string[];
}

const agentFlags = (peerPort: number): string[] => ['-docker', '-iptables=false', '-privilegedService', '-vtunnelAddr', `127.0.0.1:${String(peerPort)}`, '-connectInterface', 'lo'];

const modes: readonly Mode[] = [
  { name: 'floor', argv: (port) => ['--import', 'tsx', `${root}bench/floorAgent.ts`, String(port), hostPortLabel] },
  { name: 'compiled', argv: (port) => [`${root}dist/src/main.js`, ...agentFlags(port)] },
  { name: 'tsx', argv: (port) => ['--import', 'tsx', `${root}src/main.ts`, ...agentFlags(port)] },
];

export async function benchDockerAdd(quick: boolean): Promise<void> {
  if (!(await dockerAnswers())) {
    process.stderr.write('bench: no Docker engine answers; skipping the Docker add-path figures\n');
    return;
  }
  await ensureBusyboxImage();
  // dist/ as this checkout's sources are now, not as some earlier build left it
  await promisify(execFile)(process.execPath, [`${root}node_modules/typescript/bin/tsc`, '-p', `${root}tsconfig.build.json`], { timeout: 300_000 });
  const p50s = new Map<Mode['name'], number>();
  for (const mode of modes) p50s.set(mode.name, await benchMode(mode, quick ? 15 : 120));
  const floor = p50s.get('floor') ?? Number.NaN;
  for (const name of ['compiled', 'tsx'] as const) {
    report({
      name: `docker.add.${name}.beyond_floor.p50`,
      value: round((p50s.get(name) ?? Number.NaN) - floor),
      unit: 'ms',
      note: "the agent's own part of the median: its p50 less the floor agent's, same run",
    });
  }
}

/** Resolves once `receiver` has had no message for `ms` (or after `maxMs` in all). */
async function quietFor(receiver: Receiver, ms: number, maxMs: number): Promise<void> {
  const deadline = performance.now() + maxMs;
  let seen = -1;
  let since = performance.now();
  while (performance.now() < deadline) {
    if (receiver.messages.length !== seen) {
      seen = receiver.messages.length;
      since = performance.now();
    } else if (performance.now() - since >= ms) {
      return;
    }
    await sleep(50);
  }
}

/** Runs `n` measured starts (after one more, reported apart) and gives back their median. */
async function benchMode(mode: Mode, n: number): Promise<number> {
  await removeTestContainers();
  const docker = new Docker();
  const receiver = await startReceiverProcess();
  // PORTSTREAM_BENCH_CPU_PROF=DIR: profile the agent (node --cpu-prof) to see what is on the path
  const profile = process.env['PORTSTREAM_BENCH_CPU_PROF'];
  const node = profile === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${profile}`, '--cpu-prof-interval=100'];
  const agent = spawn(process.execPath, [...node, ...mode.argv(receiver.port)], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, PORTSTREAM_LOG_LEVEL: 'info' },
  });
  let stderr = '';
  agent.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const started = new Map<string, number>(); // container ID -> timeNano / 1e6
  const delivered: number[] = []; // how late the event reaches a client at all: no agent can do better
  const events = (await docker.getEvents({ filters: { type: ['container'], event: ['start'], label: [testLabel] } })) as NodeJS.ReadableStream & { destroy(): void };
  events.setEncoding('utf8');
  let buffered = '';
  events.on('data', (chunk: string) => {
    const now = performance.timeOrigin + performance.now();
    buffered += chunk;
    for (let at = buffered.indexOf('\n'); at >= 0; at = buffered.indexOf('\n')) {
      const event = JSON.parse(buffered.slice(0, at)) as { id: string; timeNano: number };
      buffered = buffered.slice(at + 1);
      started.set(event.id, event.timeNano / 1e6);
      delivered.push(now - event.timeNano / 1e6);
    }
  });
  try {
    const up = await until(() => stderr.includes('connected to the Docker engine'), 20_000, 10);
    if (up === undefined) throw new Error(`the agent did not connect to dockerd:\n${stderr}`);
    // Past start-up work: the first list, JIT of the cold paths, and the host-network source's
    // first publications (this machine's own listeners, the peer's among them), each of which
    // opens a coalescing window that a start arriving inside it would wait out.
    await quietFor(receiver, 1000, 15_000);
    const latencies: number[] = [];
    const closes: number[] = []; // to the agent's end of stream instead, which follows the line
    let first: number | undefined;
    // One more than measured: the first start after start-up is reported on its own (below).
    for (let i = 0; i <= n; i++) {
      const hostPort = 19_200 + i;
      const container = await docker.createContainer({
        Image: busyboxImage,
        Cmd: ['sleep', '600'],
        Labels: { [testLabel.split('=')[0]!]: testLabel.split('=')[1] ?? '', [hostPortLabel]: String(hostPort) },
        ExposedPorts: { '80/tcp': {} },
        HostConfig: { PortBindings: { '80/tcp': [{ HostPort: String(hostPort) }] } },
      });
      await container.start();
      const got = await until(() => receiver.messages.some((m) => !m.remove && m.hostPorts.includes(hostPort)) && started.has(container.id), 5000);
      const message = receiver.messages.find((m) => !m.remove && m.hostPorts.includes(hostPort));
      const at = started.get(container.id);
      if (got !== undefined && message && at !== undefined) {
        if (i === 0) first = message.wallMs - at;
        else {
          latencies.push(message.wallMs - at);
          closes.push(message.closedWallMs - at);
        }
      }
      await sleep(120); // past the coalescing window, so each start is a lone change
    }
    return reportMode(mode, { latencies, closes, first, delivered });
  } finally {
    events.destroy();
    agent.kill('SIGTERM');
    await once(agent, 'exit');
    await removeTestContainers();
    await receiver.close();
  }
}

/** What one mode's run measured, in ms. */
interface Samples {
  readonly latencies: readonly number[];
  readonly closes: readonly number[];
  readonly first: number | undefined;
  readonly delivered: readonly number[];
}

/** Reports one mode's figures and gives back its median. */
function reportMode(mode: Mode, { latencies, closes, first, delivered }: Samples): number {
  const floor = mode.name === 'floor';
  const note = floor
    ? 'the same path for a Node process that only forwards each start event as a message (floorAgent.ts): what this machine allows today'
    : `timeNano of the start event → the vtunnel peer has the message; real dockerd, agent process ${mode.name === 'compiled' ? 'from dist/' : 'under tsx'}`;
  const p50 = percentile(latencies, 50);
  report({ name: `docker.add.${mode.name}.p50`, value: round(p50), unit: 'ms', samples: latencies.length, ...(!floor && { target: '<= 2 ms' }), note });
  report({ name: `docker.add.${mode.name}.p99`, value: round(percentile(latencies, 99)), unit: 'ms', samples: latencies.length, ...(!floor && { target: '<= 5 ms' }) });
  report({ name: `docker.add.${mode.name}.max`, value: round(Math.max(...latencies)), unit: 'ms', samples: latencies.length });
  report({
    name: `docker.add.${mode.name}.closed.p99`,
    value: round(percentile(closes, 99)),
    unit: 'ms',
    samples: closes.length,
    note: "the same, to the agent's end of stream: its FIN goes out a turn of its event loop after the line",
  });
  if (first !== undefined && !floor) {
    report({
      name: `docker.add.${mode.name}.first`,
      value: round(first),
      unit: 'ms',
      note: 'the first start after the agent connected, not in the figures above: no container was running to learn from at connect, so nothing is known yet of how this engine expands host addresses; it waits for its inspect, and its path runs for the first time',
    });
  }
  report({
    name: `docker.add.${mode.name}.event_delivery.p50`,
    value: round(percentile(delivered, 50)),
    unit: 'ms',
    samples: delivered.length,
    note: "timeNano → the start event reaches this bench's own event stream: the engine's part, which no agent can cut (it grows with the machine's load)",
  });
  return p50;
}
