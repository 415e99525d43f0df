/**
 * What the status endpoint costs (docs/status.md): the event-to-sink latency of the same agent
 * with and without it, and the time one scrape of /metrics and of /forwards takes while the
 * agent holds 10,000 forwards.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { defer, delay, map, of, Subject } from 'rxjs';
import { createAgent } from '../src/agent.js';
import { upsert, type Forward, type SourceEvent } from '../src/model.js';
import type { Sink, SinkReport } from '../src/sinks/sink.js';
import { vtunnelSink } from '../src/sinks/vtunnel.js';
import { startStatusEndpoint, type StatusEndpoint } from '../src/status/endpoint.js';
import { reduceStatus, type AgentStatus } from '../src/status/state.js';
import { statusMetrics } from '../src/status/metrics.js';
import { serveStatus } from '../src/status/server.js';
import { statusTracker } from '../src/status/tracker.js';
import { dockerEvents, EVENTS_OPEN, type DockerClient, type DockerContainerInspect, type DockerEvent } from '../streams/docker.js';
import { sleep, until } from './harness.js';
import { startReceiver } from './receiver.js';
import { percentile, report, round } from './stats.js';

/** An in-process engine: events on demand, inspect answered on the next tick. */
function scriptedDocker(): { client: DockerClient; start: (id: string, hostPort: number) => void } {
  const events = new Subject<typeof EVENTS_OPEN | DockerEvent>();
  const ports = new Map<string, number>();
  const client: DockerClient = {
    events: () =>
      defer(() => {
        queueMicrotask(() => { events.next(EVENTS_OPEN); });
        return events;
      }),
    listContainers: () => of([]),
    inspect: (id) =>
      of<DockerContainerInspect>({ Id: id, State: { Running: true }, NetworkSettings: { Ports: { '80/tcp': [{ HostIp: '0.0.0.0', HostPort: String(ports.get(id)) }] } } }).pipe(delay(0)),
  };
  return { client, start: (id, hostPort) => { ports.set(id, hostPort); events.next({ Type: 'container', Action: 'start', Actor: { ID: id } }); } };
}

interface BenchAgent {
  start(id: string, hostPort: number): void;
  arrived(hostPort: number): number | undefined;
  stop(): Promise<void>;
}

/** docker (scripted) → vtunnel (a stamping peer), with the status endpoint on a unix socket or not. */
async function benchAgent(endpoint: StatusEndpoint | undefined): Promise<BenchAgent> {
  const receiver = await startReceiver();
  const engine = scriptedDocker();
  const stop$ = new Subject<void>();
  const events = dockerEvents(engine.client, { backoff: { initialMs: 50, maxMs: 500 }, ...(endpoint && { connection: endpoint.tracker.connection('docker') }) });
  let done!: () => void;
  const finished = new Promise<void>((resolve) => (done = resolve));
  createAgent(
    {
      sources: { docker: events },
      routes: [{ sink: vtunnelSink({ address: `127.0.0.1:${String(receiver.port)}`, connectAddrs: [], resyncMs: 0 }), sources: ['docker'], name: 'vtunnel' }],
      ...(endpoint && { observer: endpoint.tracker.observer }),
    },
    stop$,
  ).subscribe({ complete: done });
  await sleep(200);
  return {
    start: engine.start,
    arrived: (hostPort) => receiver.messages.find((m) => m.hostPorts.includes(hostPort))?.at,
    stop: async () => {
      stop$.next();
      await finished;
      await receiver.close();
    },
  };
}

/**
 * Lone events to two agents in turn, one with the endpoint and one without: p50 of each.
 * Interleaving them event by event puts both under the same machine noise.
 */
async function benchOverhead(quick: boolean, dir: string): Promise<void> {
  const endpoint = await startStatusEndpoint({ kind: 'unix', path: join(dir, 'overhead.sock') });
  const agents = { off: await benchAgent(undefined), on: await benchAgent(endpoint) };
  const latencies: Record<'off' | 'on', number[]> = { off: [], on: [] };
  const n = quick ? 40 : 150;
  for (let i = 0; i < n; i++) {
    for (const which of i % 2 === 0 ? (['off', 'on'] as const) : (['on', 'off'] as const)) {
      const hostPort = 20_000 + i;
      const t0 = performance.now();
      agents[which].start(`lone${String(i)}`, hostPort);
      await until(() => agents[which].arrived(hostPort) !== undefined, 2000);
      const at = agents[which].arrived(hostPort);
      if (at !== undefined) latencies[which].push(at - t0);
      await sleep(60); // past the coalescing window (50 ms), so every event is a lone one
    }
  }
  const off = percentile(latencies.off, 50);
  const on = percentile(latencies.on, 50);
  report({ name: 'status.event_to_sink.off.p50', value: round(off), unit: 'ms', samples: latencies.off.length, note: 'scripted docker → vtunnel peer, no status endpoint' });
  report({ name: 'status.event_to_sink.on.p50', value: round(on), unit: 'ms', samples: latencies.on.length, note: 'the same with -statusAddr on (tracker, metrics, server)' });
  report({ name: 'status.event_to_sink.overhead.p50', value: round(on - off), unit: 'ms', target: '<= 0.2 ms', note: 'on − off, the two agents interleaved event by event; the TCP write makes this one noisy' });
  await agents.off.stop();
  await agents.on.stop();
  await benchOverheadInProcess(quick, endpoint);
  await endpoint.close();
}

/** A sink that applies each delta at once and says so, as the table sink does. */
const instantSink: Sink = (deltas$) => deltas$.pipe(map((d): SinkReport => ({ sink: 'instant', type: 'wrote', added: d.added, removed: d.removed })));

/**
 * The same overhead without the network: a source event's whole synchronous path through the
 * agent to a sink that applies it at once (and, with the endpoint on, the observer's taps and the
 * status fold of all four steps), timed to the microsecond, the two agents interleaved.
 */
async function benchOverheadInProcess(quick: boolean, endpoint: StatusEndpoint): Promise<void> {
  const make = (observed: boolean): { events: Subject<SourceEvent>; applied: () => number } => {
    const events = new Subject<SourceEvent>();
    let applied = 0;
    createAgent(
      { sources: { docker: events }, routes: [{ sink: instantSink, sources: ['docker'], name: 'instant' }], ...(observed && { observer: endpoint.tracker.observer }) },
      new Subject<void>(),
    ).subscribe(() => (applied += 1));
    return { events, applied: () => applied };
  };
  const agents = { off: make(false), on: make(true) };
  const samples: Record<'off' | 'on', number[]> = { off: [], on: [] };
  const n = quick ? 50 : 200;
  for (let i = 0; i < n; i++) {
    for (const which of i % 2 === 0 ? (['off', 'on'] as const) : (['on', 'off'] as const)) {
      const agent = agents[which];
      const before = agent.applied();
      const f: Forward = { protocol: 'tcp', hostIp: '0.0.0.0', hostPort: 20_000 + i, source: 'docker', owner: `c${String(i)}` };
      const t0 = performance.now();
      agent.events.next(upsert(f.owner, [f]));
      const t1 = performance.now();
      if (agent.applied() > before) samples[which].push(t1 - t0);
    }
    await sleep(60); // past the coalescing window (50 ms), so every event is a lone one
  }
  const off = percentile(samples.off, 50);
  const on = percentile(samples.on, 50);
  report({ name: 'status.event_to_sink.in_process.off.p50', value: round(off, 4), unit: 'ms', samples: samples.off.length, note: 'event → a sink that applies at once, no endpoint' });
  report({ name: 'status.event_to_sink.in_process.on.p50', value: round(on, 4), unit: 'ms', samples: samples.on.length, note: 'the same observed by the endpoint: its taps queue the inputs, folded right after' });
  report({ name: 'status.event_to_sink.in_process.overhead.p50', value: round(on - off, 4), unit: 'ms', target: '<= 0.2 ms', note: 'on − off' });
  for (const agent of Object.values(agents)) agent.events.complete();
}

const forwardsOf = (n: number): Forward[] =>
  Array.from({ length: n }, (_, i) => ({ protocol: i % 2 === 0 ? 'tcp' : 'udp', hostIp: `10.0.${String(i >> 15)}.1`, hostPort: 1 + (i % 32768), source: 'docker', owner: `c${String(i)}` }));

function get(socketPath: string, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path }, (res) => {
      let bytes = 0;
      res.on('data', (c: Buffer) => (bytes += c.length));
      res.on('end', () => { resolve(bytes); });
    });
    req.on('error', reject);
    req.end();
  });
}

/** One scrape of each endpoint with 10,000 forwards applied to two sinks, and one folded event. */
async function benchScrape(quick: boolean, dir: string): Promise<void> {
  const n = 10_000;
  const tracker = statusTracker();
  const forwards = forwardsOf(n);
  tracker.observer.start(['docker'], ['vtunnel', 'table']);
  tracker.connection('docker').connected();
  tracker.observer.claims('docker', { added: forwards, removed: [] });
  for (const sink of ['vtunnel', 'table']) {
    tracker.observer.routed(sink, { added: forwards, removed: [] });
    tracker.observer.report(sink, { sink, type: 'wrote', added: forwards, removed: [] });
  }
  const metrics = statusMetrics(tracker);
  const socketPath = join(dir, 'scrape.sock');
  const server = await serveStatus({ kind: 'unix', path: socketPath }, tracker, metrics);
  const runs = quick ? 10 : 40;
  for (const path of ['/metrics', '/forwards', '/healthz']) {
    const samples: number[] = [];
    let bytes = 0;
    for (let i = 0; i < runs; i++) {
      const t0 = performance.now();
      bytes = await get(socketPath, path);
      samples.push(performance.now() - t0);
    }
    report({
      name: `status.scrape${path.replace('/', '.')}.${String(n)}`,
      value: round(percentile(samples, 50)),
      unit: 'ms',
      forwards: n,
      bytes,
      p99: round(percentile(samples, 99)),
      ...(path === '/metrics' && { target: '<= 50 ms' }),
    });
  }
  await server.close();
  metrics.close();
  tracker.close();
  benchFold(n, forwards);
}

/** What the fold costs one container start and its write when the agent holds n forwards. */
function benchFold(n: number, forwards: readonly Forward[]): void {
  let status: AgentStatus = reduceStatus(reduceStatus(reduceStatus({ forwards: new Map(), sources: {}, sinks: {} }, { type: 'claims', at: 0, source: 'docker', delta: { added: forwards, removed: [] } }).status, { type: 'routed', at: 0, sink: 'vtunnel', delta: { added: forwards, removed: [] } }).status, { type: 'report', at: 0, sink: 'vtunnel', report: { sink: 'vtunnel', type: 'wrote', added: forwards, removed: [] } }).status;
  const samples: number[] = [];
  for (let i = 0; i < 200; i++) {
    const f: Forward = { protocol: 'tcp', hostIp: '10.255.0.1', hostPort: 1 + i, source: 'docker', owner: 'newcomer' };
    const t0 = performance.now();
    status = reduceStatus(status, { type: 'claims', at: i, source: 'docker', delta: { added: [f], removed: [] } }).status;
    status = reduceStatus(status, { type: 'routed', at: i, sink: 'vtunnel', delta: { added: [f], removed: [] } }).status;
    status = reduceStatus(status, { type: 'report', at: i, sink: 'vtunnel', report: { sink: 'vtunnel', type: 'wrote', added: [f], removed: [] } }).status;
    samples.push(performance.now() - t0);
  }
  report({ name: `status.fold.event.${String(n)}`, value: round(percentile(samples, 50), 4), unit: 'ms', forwards: n, p99: round(percentile(samples, 99), 4), note: 'claims + routed + wrote of one new forward' });
}

export async function benchStatus(quick: boolean): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'portstream-bench-status-'));
  try {
    await benchOverhead(quick, dir);
    await benchScrape(quick, dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
