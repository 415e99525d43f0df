/**
 * `portstream | head -c 1`: the real agent, with no arguments (auto-detect: the table on stdout,
 * iptables rules to placeholder listeners), its stdout a pipe that `head` closes after one byte.
 * The table must stop on EPIPE while the agent keeps forwarding, and a SIGTERM still ends it with 0.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { engineTest, waitFor } from './engines.js';
import { startAgent, waitForLog } from './agentProcess.js';
import { nat, NatChains, ownListeningKeys, sweepLeftovers } from './iptablesHarness.js';

const ports = [28391, 28392, 28393];
const ours = (port: number): boolean => ports.includes(port);

engineTest('portstream | head -c 1: the table stops on EPIPE, the agent keeps forwarding', { needs: ['root', 'iptables'], timeout: 60_000 }, async (t) => {
  await sweepLeftovers();
  const chains = new NatChains();
  const head = spawn('head', ['-c', '1'], { stdio: ['pipe', 'pipe', 'inherit'] });
  let headOut = '';
  head.stdout.setEncoding('utf8').on('data', (chunk: string) => (headOut += chunk));
  const headExited = new Promise<void>((resolve) => head.once('exit', () => { resolve(); }));
  const agent = startAgent([], process.env, head.stdin);
  head.stdin.destroy(); // only the agent holds the pipe's write end now, as in a shell pipeline
  t.after(async () => {
    await agent.kill();
    head.kill('SIGKILL');
    await chains.removeAll();
  });
  await waitForLog(agent, /portstream agent running/);
  const chain = await chains.chain();
  const rule = async (port: number): Promise<void> => {
    await nat('ipv4', '-A', chain, '-p', 'tcp', '-m', 'tcp', '--dport', String(port), '-j', 'DNAT', '--to-destination', '10.213.0.2:80');
  };
  const listening = (port: number): boolean => agent.exitedYet() ? assert.fail(`the agent exited\n${agent.tail()}`) : ownListeningKeys((p) => p === port, agent.pid).has(`tcp/0.0.0.0:${String(port)}`);

  await rule(28391);
  await waitFor(() => listening(28391), 15_000, () => `a placeholder on 28391\n${agent.tail()}`);
  await headExited;
  assert.equal(headOut.length, 1, 'head read one byte of the table');

  // the next table write meets the closed pipe
  await rule(28392);
  await waitFor(() => listening(28392), 15_000, () => `a placeholder on 28392\n${agent.tail()}`);
  await waitForLog(agent, /the table's output is gone \(.*EPIPE.*\)/);
  // and forwarding goes on after the table stopped
  await rule(28393);
  await waitFor(() => listening(28393), 15_000, () => `a placeholder on 28393 after the table stopped\n${agent.tail()}`);
  assert.deepEqual([...ownListeningKeys(ours, agent.pid)].sort(), ports.map((p) => `tcp/0.0.0.0:${String(p)}`));

  agent.child.kill('SIGTERM');
  const { code } = await agent.exited;
  assert.equal(code, 0, agent.tail());
  assert.equal(agent.stderr().match(/the table's output is gone/g)?.length, 1, 'said once');
});
