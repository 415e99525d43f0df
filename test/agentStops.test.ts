/**
 * Each way an agent built with `createAgent` can be stopped withdraws what it published from a
 * real vtunnel peer (a TCP server on loopback that checks every message against the wire format):
 * an AbortSignal, a `stop$` value, and unsubscribing; and the host receiver stops on its signal.
 * See docs/library.md "Stopping".
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { NEVER, startWith, Subject, type Observable, type Subscription } from 'rxjs';
import { pino } from 'pino';
import { createAgent, type AgentOptions } from '../src/agent.js';
import { upsert, type SourceEvent } from '../src/model.js';
import type { SinkReport } from '../src/sinks/sink.js';
import { vtunnelSink } from '../src/sinks/vtunnel.js';
import { connectAddrsOf } from '../src/wire/connectAddrs.js';
import { fwd } from '../marbles/helpers.js';
import { startReceiver, type Receiver } from './vtunnelReceiver.js';
import { startHostReceiver } from '../src/host/receiver.js';
import net from 'node:net';

async function waitFor(what: string, condition: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** An agent with one source feeding the vtunnel sink at `receiver`, stopped as `stop` says. */
function runAgent(receiver: Receiver, source: Observable<SourceEvent>, stop: Observable<unknown> | AgentOptions) {
  const reports: SinkReport[] = [];
  let completed = false;
  const sink = vtunnelSink({
    address: `127.0.0.1:${String(receiver.port)}`,
    connectAddrs: connectAddrsOf('lo'),
    sendTimeoutMs: 1_000,
    withdrawTimeoutMs: 2_000,
    resyncMs: 0,
    logger: pino({ level: 'silent' }),
  });
  const subscription: Subscription = createAgent({ sources: { mine: source }, routes: [{ sink, sources: ['mine'] }] }, stop).subscribe({
    next: (r) => reports.push(r),
    complete: () => (completed = true),
  });
  return { reports, completed: () => completed, subscription };
}

const web = fwd(18080, { containerPort: 80, source: 'mine', owner: 'c1' });
const dns = fwd(18053, { protocol: 'udp', containerPort: 53, source: 'mine', owner: 'c1' });

async function published(receiver: Receiver): Promise<void> {
  await waitFor('both forwards on the peer', () => receiver.view.size === 2);
  assert.deepEqual([...receiver.view.keys()].sort(), ['tcp/0.0.0.0:18080', 'udp/0.0.0.0:18053']);
}

test('stopping with an AbortSignal withdraws everything, reports it, and completes', async () => {
  const receiver = await startReceiver();
  const controller = new AbortController();
  const agent = runAgent(receiver, new Subject<SourceEvent>().pipe(startWith(upsert('c1', [web, dns]))), { signal: controller.signal });
  try {
    await published(receiver);
    controller.abort();
    await waitFor('the agent to complete', agent.completed);
    assert.equal(receiver.view.size, 0, 'nothing left on the peer');
    assert.equal(agent.reports.at(-1)?.type, 'withdrawn');
    assert.deepEqual(receiver.violations, []);
  } finally {
    agent.subscription.unsubscribe();
    await receiver.close();
  }
});

test('stopping with stop$ withdraws everything, reports it, and completes', async () => {
  const receiver = await startReceiver();
  const stop$ = new Subject<void>();
  const agent = runAgent(receiver, new Subject<SourceEvent>().pipe(startWith(upsert('c1', [web, dns]))), stop$);
  try {
    await published(receiver);
    stop$.next();
    await waitFor('the agent to complete', agent.completed);
    assert.equal(receiver.view.size, 0, 'nothing left on the peer');
    assert.equal(agent.reports.at(-1)?.type, 'withdrawn');
    assert.deepEqual(receiver.violations, []);
  } finally {
    agent.subscription.unsubscribe();
    await receiver.close();
  }
});

test('unsubscribing withdraws everything too, though no report can arrive', async () => {
  const receiver = await startReceiver();
  const agent = runAgent(receiver, new Subject<SourceEvent>().pipe(startWith(upsert('c1', [web, dns]))), NEVER);
  try {
    await published(receiver);
    const reportsBefore = agent.reports.length;
    agent.subscription.unsubscribe();
    await waitFor('the peer to be told', () => receiver.view.size === 0);
    assert.equal(agent.reports.length, reportsBefore, 'nothing is reported after unsubscribing');
    assert.deepEqual(receiver.violations, []);
  } finally {
    await receiver.close();
  }
});

test('startHostReceiver: aborting its signal closes it and frees its port; an aborted signal rejects the start', async () => {
  const controller = new AbortController();
  const host = await startHostReceiver({ listen: { host: '127.0.0.1', port: 0 }, signal: controller.signal, logger: pino({ level: 'silent' }) });
  controller.abort();
  await host.done;
  const refused = await new Promise<boolean>((resolve) => {
    const socket = net.connect(host.port, '127.0.0.1');
    socket.once('connect', () => { socket.destroy(); resolve(false); });
    socket.once('error', () => { resolve(true); });
  });
  assert.equal(refused, true, 'nothing listens on the port after the abort');
  const reason = new Error('not today');
  await assert.rejects(startHostReceiver({ listen: { host: '127.0.0.1', port: 0 }, signal: AbortSignal.abort(reason) }), reason);
});
