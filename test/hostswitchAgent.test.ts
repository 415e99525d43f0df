/**
 * The real agent process (agentProcess.ts) with the host-switch sink, against the forwarder
 * stand-in (fakeForwarder.ts) answering a duplicate expose as forwarders before v0.8.2 do: with
 * the bind error, not `proxy already running`. The forward the agent wants is already on the
 * host (an earlier run left it); a SIGTERM comes 100 ms after the agent's start-up read of the
 * host's list. Nothing the agent owned may be left on the host, nothing of others' touched, and
 * nothing exposed twice. Runs the agent: hold /tmp/portstream-engines.lock.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startAgent } from './agentProcess.js';
import { sleep, waitFor } from './engines.js';
import { freePort, startFake } from './fakeForwarder.js';

const runs = 3;

test(`SIGTERM 100 ms after start-up with the wanted forward already listed (pre-0.8.2 forwarder): withdrawn, others untouched (${String(runs)} runs)`, { timeout: 120_000 }, async (t) => {
  for (let run = 1; run <= runs; run++) {
    const fake = await startFake(t, 0, { bind: false, duplicate: 'pre-0.8.2' });
    const [api, earlier, hosts] = [await freePort(), await freePort(), await freePort()];
    const tap = (p: number): string => `192.168.127.2:${String(p)}`;
    // The agent forwards the Kubernetes API port from its start (kubeconfig or not): ours, left by an earlier run.
    await fake.preload(`127.0.0.1:${String(api)}`, tap(api), 'tcp');
    // Not wanted by this agent: an earlier run's port it no longer has, and one of the host's own.
    await fake.preload(`127.0.0.1:${String(earlier)}`, tap(earlier), 'tcp');
    await fake.preload(`127.0.0.1:${String(hosts)}`, `10.0.0.9:${String(hosts)}`, 'udp');
    const others = fake.view().filter((v) => !v.startsWith(`tcp 127.0.0.1:${String(api)}->`));

    const agent = startAgent(['-kubernetes', '-kubeconfig', '/nonexistent/portstream-test/k3s.yaml', '-k8sAPIPort', String(api), '-hostSwitchURL', fake.url, '-iptables=false', '-procnet=false']);
    t.after(() => agent.kill());
    await waitFor(() => fake.requests.includes('GET /services/forwarder/all'), 20_000, () => `the agent's start-up read\n${agent.tail()}`, 2);
    await sleep(100);
    agent.child.kill('SIGTERM');
    const exit = await agent.exited;

    assert.deepEqual(exit, { code: 0, signal: null }, agent.tail());
    assert.deepEqual(fake.view(), others, `run ${String(run)}: only others' forwards are left\n${fake.requests.join('\n')}\n${agent.tail()}`);
    assert.deepEqual(
      fake.requests.filter((r) => r.startsWith('POST')),
      [`POST /services/forwarder/unexpose {"local":"127.0.0.1:${String(api)}","protocol":"tcp"}`],
      `run ${String(run)}: adopted from the list (never exposed again), then unexposed`,
    );
    assert.doesNotMatch(agent.stderr(), /address already in use/);
    await fake.close();
  }
});
