/**
 * The agent as a user runs it: `node src/main.ts FLAGS` as a child process, against the real
 * dockerd, publishing over the vtunnel wire to a strict receiver; SIGTERM withdraws everything.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { test } from 'node:test';
import { concat, defer, ignoreElements, lastValueFrom, of, Subject, throwError, timer, type Observable } from 'rxjs';
import { busyboxImage, dockerNeeds, engineTest, ensureBusyboxImage, ensureDockerd, sleep, TestContainers, waitFor } from './engines.js';
import { startReceiver } from './vtunnelReceiver.js';
import { createAgent } from '../src/agent.js';
import { snapshot, type SourceEvent } from '../src/model.js';
import { vtunnelSink } from '../src/sinks/vtunnel.js';
import { dockerEvents } from '../streams/docker.js';
import { dockerodeClient } from '../streams/dockerClient.js';
import { fwd, recordingLogger } from '../marbles/helpers.js';

const main = new URL('../src/main.ts', import.meta.url).pathname;

interface Agent {
  readonly child: ChildProcess;
  readonly stderr: () => string;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function startAgent(...args: string[]): Agent {
  const child = spawn(process.execPath, ['--import', 'tsx', main, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  child.stdout.resume();
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => {
      resolve({ code, signal });
    });
  });
  return { child, stderr: () => stderr, exited };
}

test('an unknown flag: one line naming it, usage, exit 2', async () => {
  const agent = startAgent('-nosuchflag');
  const { code } = await agent.exited;
  assert.equal(code, 2);
  assert.match(agent.stderr(), /^portstream: flag provided but not defined: -nosuchflag\nUsage of portstream:\n/);
});

test('a bad value: one line naming the flag and why, exit 2', async () => {
  const agent = startAgent('-kubernetes', '-k8sServiceListenerAddr', '10.0.0.1');
  const { code } = await agent.exited;
  assert.equal(code, 2);
  assert.match(agent.stderr(), /^portstream: invalid value "10\.0\.0\.1" for flag -k8sServiceListenerAddr: must be 0\.0\.0\.0 or 127\.0\.0\.1\n/);
});

engineTest(
  'docker → vtunnel: start-up scan, run, rm, and SIGTERM withdraws everything and exits 0',
  { needs: dockerNeeds, timeout: 90_000 },
  async (t) => {
    await ensureDockerd();
    await ensureBusyboxImage();
    const containers = new TestContainers();
    const receiver = await startReceiver();
    t.after(async () => {
      await containers.removeAll();
      await receiver.close();
    });
    await containers.run('-p', '18700:80', busyboxImage, 'httpd', '-f', '-p', '80');
    const agent = startAgent('-docker', '-privilegedService', '-iptables=false', '-procnet=false', '-vtunnelAddr', `127.0.0.1:${String(receiver.port)}`, '-connectInterface', 'lo');
    t.after(() => {
      agent.child.kill('SIGKILL');
    });

    await waitFor(() => receiver.view.has('tcp/0.0.0.0:18700'), 15_000, 'the start-up scan to publish 18700').catch((err: unknown) => {
      throw new Error(`${String(err)}\nreceiver: ${JSON.stringify(receiver.lines)}\nagent stderr:\n${agent.stderr()}`);
    });
    await containers.run('-p', '127.0.0.1:18701:80', '-p', '18702:53/udp', busyboxImage, 'sleep', '600');
    await waitFor(() => receiver.view.has('tcp/127.0.0.1:18701') && receiver.view.has('udp/0.0.0.0:18702'), 15_000, 'the new container to be published');
    assert.equal(receiver.view.get('tcp/127.0.0.1:18701'), '80/tcp');
    assert.equal(receiver.view.get('udp/0.0.0.0:18702'), '53/udp');

    await containers.removeAll();
    await waitFor(() => ![...receiver.view.keys()].some((k) => /:1870[012]$/.test(k)), 15_000, 'removals to reach the host');

    await containers.run('-p', '18703:80', busyboxImage, 'sleep', '600');
    await waitFor(() => receiver.view.has('tcp/0.0.0.0:18703'), 15_000, 'the last container to be published');
    agent.child.kill('SIGTERM');
    const { code } = await agent.exited;
    assert.equal(code, 0, agent.stderr());
    assert.deepEqual([...receiver.view.keys()], [], 'SIGTERM must withdraw every forward');
    assert.deepEqual(receiver.violations, []);
  },
);

engineTest(
  'createAgent, real docker stream and real vtunnel sink: a source that keeps failing is resubscribed without withdrawing its port, and docker keeps forwarding',
  { needs: dockerNeeds, timeout: 90_000 },
  async (t) => {
    await ensureDockerd();
    await ensureBusyboxImage();
    const containers = new TestContainers();
    const receiver = await startReceiver();
    const stop = new Subject<void>();
    t.after(async () => {
      stop.next();
      await containers.removeAll();
      await receiver.close();
    });
    // Each subscription lists port 18810, then its stream fails 100 ms later.
    let subscriptions = 0;
    const flaky: Observable<SourceEvent> = defer(() => {
      subscriptions++;
      return concat(of(snapshot([['job', [fwd(18810, { source: 'flaky', owner: 'job' })]]])), timer(100).pipe(ignoreElements()), throwError(() => new Error('the flaky backend hung up')));
    });
    const { log, lines } = recordingLogger();
    const reports = createAgent(
      {
        sources: { flaky, docker: dockerEvents(dockerodeClient()) },
        routes: [{ sink: vtunnelSink({ address: `127.0.0.1:${String(receiver.port)}`, connectAddrs: [], resyncMs: 0 }), sources: ['flaky', 'docker'], name: 'vtunnel' }],
        backoff: { initialMs: 100, maxMs: 200 },
        logger: log,
      },
      stop,
    );
    const done = lastValueFrom(reports, { defaultValue: undefined });

    await waitFor(() => receiver.view.has('tcp/0.0.0.0:18810'), 10_000, 'the flaky source to publish 18810');
    await waitFor(() => subscriptions >= 3, 10_000, 'the flaky source to fail and be resubscribed twice');
    await containers.run('-p', '18811:80', busyboxImage, 'httpd', '-f', '-p', '80');
    await waitFor(() => receiver.view.has('tcp/0.0.0.0:18811'), 15_000, 'docker to keep forwarding while the other source fails');
    await sleep(300);
    assert.ok(receiver.view.has('tcp/0.0.0.0:18810'), 'the flaky source still publishes 18810');
    assert.ok(!receiver.lines.some((l) => l.includes('"remove":true')), `nothing was withdrawn while the source failed: ${JSON.stringify(receiver.lines)}`);
    assert.ok(lines().some((l) => l.msg.startsWith('source flaky: its stream failed') && l.msg.includes('the flaky backend hung up')), JSON.stringify(lines()));

    stop.next();
    await done;
    assert.deepEqual([...receiver.view.keys()], [], 'a stop still withdraws everything');
    assert.deepEqual(receiver.violations, []);
  },
);
