/**
 * Event-to-sink latency of the containerd stream: from the moment the stream receives a
 * containerd event to the moment a vtunnel peer has the resulting PortMapping message.
 *
 * - synthetic: an in-process containerd (events on demand, lookups answered on the next tick),
 *   so the figure is the agent's own overhead;
 * - real: a containerd of the benchmark's own (its own socket, root and state, as the integration
 *   tests use; started and stopped here), `ctr run -d` with a `nerdctl/ports` label for a start,
 *   `ctr tasks kill` for an exit. The start figure includes the `Containers.Get` round trip.
 */
import { performance } from 'node:perf_hooks';
import { Subject, defer, delay, of, tap } from 'rxjs';
import { CONTAINERD_EVENTS_OPEN, containerdEvents, type ContainerdClient, type ContainerdEvent } from '../streams/containerd.js';
import { grpcContainerdClient } from '../streams/containerdClient.js';
import type { Received } from './receiver.js';
import { runVtunnelAgent, sleep, until } from './harness.js';
import { percentile, report, round } from './stats.js';
import { gateFor } from '../test/engines.js';
import { containerdNeeds, ctrImage, OwnContainerd } from '../test/containerdEngine.js';

/** The first message at or after index `from` that carries `hostPort` (an add, or a removal). */
function messageFor(messages: readonly Received[], hostPort: number, remove: boolean, from = 0): Received | undefined {
  return messages.slice(from).find((m) => m.remove === remove && m.hostPorts.includes(hostPort));
}

function figures(name: string, samples: readonly number[], note: string): void {
  report({ name: `${name}.p50`, value: round(percentile(samples, 50)), unit: 'ms', samples: samples.length, target: '<= 5 ms', note });
  report({ name: `${name}.p99`, value: round(percentile(samples, 99)), unit: 'ms', samples: samples.length });
}

/** An in-process containerd: events on demand, `Containers.Get` answered on the next tick. */
function scriptedContainerd(): { client: ContainerdClient; start: (id: string, hostPort: number) => void; exit: (id: string) => void } {
  const events = new Subject<typeof CONTAINERD_EVENTS_OPEN | ContainerdEvent>();
  const ports = new Map<string, number>();
  const client: ContainerdClient = {
    events: () =>
      defer(() => {
        queueMicrotask(() => {
          events.next(CONTAINERD_EVENTS_OPEN);
        });
        return events;
      }),
    namespaces: () => of(['bench']),
    tasks: () => of([]),
    container: (_ns, id) =>
      of({ id, labels: { 'nerdctl/ports': JSON.stringify([{ HostPort: ports.get(id), ContainerPort: 80, Protocol: 'tcp' }]) } }).pipe(delay(0)),
    networkConfig: () => of(undefined),
  };
  return {
    client,
    start: (id, hostPort) => {
      ports.set(id, hostPort);
      events.next({ namespace: 'bench', topic: '/tasks/start', event: { container_id: id } });
    },
    exit: (id) => {
      events.next({ namespace: 'bench', topic: '/tasks/exit', event: { container_id: id, id } });
    },
  };
}

async function benchSynthetic(quick: boolean): Promise<void> {
  const engine = scriptedContainerd();
  const agent = await runVtunnelAgent('containerd', containerdEvents(engine.client, { backoff: { initialMs: 50, maxMs: 500 } }));
  const starts: number[] = [];
  const exits: number[] = [];
  const n = quick ? 50 : 200;
  try {
    for (let i = 0; i < n; i++) {
      const hostPort = 21_000 + i;
      const before = agent.messages.length;
      let t0 = performance.now();
      engine.start(`lone${String(i)}`, hostPort);
      await until(() => messageFor(agent.messages, hostPort, false, before) !== undefined, 2000);
      const added = messageFor(agent.messages, hostPort, false, before);
      if (added) starts.push(added.at - t0);
      await sleep(60);
      t0 = performance.now();
      engine.exit(`lone${String(i)}`);
      await until(() => messageFor(agent.messages, hostPort, true, before) !== undefined, 2000);
      const removed = messageFor(agent.messages, hostPort, true, before);
      if (removed) exits.push(removed.at - t0);
      await sleep(60);
    }
  } finally {
    await agent.stop();
  }
  figures('containerd.synthetic.start_to_sink', starts, 'in-process containerd; includes the TCP write to the vtunnel peer');
  figures('containerd.synthetic.exit_to_sink', exits, 'in-process containerd');
}

async function benchReal(quick: boolean): Promise<void> {
  const gate = gateFor(containerdNeeds);
  if (gate.status !== 'ok') {
    process.stderr.write(`bench: skipping the real containerd figures: ${gate.reason}\n`);
    return;
  }
  const containerd = new OwnContainerd('portstream-bench-containerd');
  const ns = 'portstream-bench';
  try {
    await containerd.start();
    await containerd.sweep();
    await containerd.importBusybox(ns);
    const seenAt = new Map<string, number>();
    const real = grpcContainerdClient(containerd.socket);
    const client: ContainerdClient = {
      ...real,
      events: () =>
        real.events().pipe(
          tap((e) => {
            if (e === CONTAINERD_EVENTS_OPEN || e.namespace !== ns) return;
            if (e.topic === '/tasks/start') seenAt.set(`start ${e.event.container_id}`, performance.now());
            if (e.topic === '/tasks/exit' && e.event.id === e.event.container_id) seenAt.set(`exit ${e.event.container_id}`, performance.now());
          }),
        ),
    };
    const agent = await runVtunnelAgent('containerd', containerdEvents(client, { backoff: { initialMs: 50, maxMs: 500 } }));
    const starts: number[] = [];
    const exits: number[] = [];
    try {
      const n = quick ? 10 : 30;
      for (let i = 0; i < n; i++) {
        const id = `bench-${String(i)}`;
        const hostPort = 19_100 + i;
        const before = agent.messages.length;
        const label = JSON.stringify([{ HostPort: hostPort, ContainerPort: 80, Protocol: 'tcp', HostIP: '0.0.0.0' }]);
        await containerd.ctr(ns, 'run', '-d', '--label', `nerdctl/ports=${label}`, ctrImage, id, 'sleep', '600');
        await until(() => messageFor(agent.messages, hostPort, false, before) !== undefined, 5000);
        const added = messageFor(agent.messages, hostPort, false, before);
        const started = seenAt.get(`start ${id}`);
        if (added && started !== undefined) starts.push(added.at - started);
        await sleep(60);
        await containerd.ctr(ns, 'tasks', 'kill', '-s', 'SIGKILL', id);
        await until(() => messageFor(agent.messages, hostPort, true, before) !== undefined, 5000);
        const removed = messageFor(agent.messages, hostPort, true, before);
        const exited = seenAt.get(`exit ${id}`);
        if (removed && exited !== undefined) exits.push(removed.at - exited);
        await containerd.removeTask(ns, id);
        await containerd.ctr(ns, 'containers', 'delete', id);
        await sleep(60);
      }
    } finally {
      await agent.stop();
      real.close();
    }
    figures('containerd.real.start_to_sink', starts, 'agent overhead: /tasks/start received → vtunnel peer has the message (includes Containers.Get)');
    figures('containerd.real.exit_to_sink', exits, 'agent overhead: /tasks/exit received → vtunnel peer has the removal');
  } finally {
    await containerd.stop();
  }
}

/** Prints the containerd figures through `report` (bench/run.ts prints the summary). */
export async function benchContainerd(quick: boolean): Promise<void> {
  await benchSynthetic(quick);
  await benchReal(quick);
}
