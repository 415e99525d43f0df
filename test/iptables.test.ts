/**
 * The iptables backend and the placeholder listener sink against the real thing: CNI portmap-style
 * chains in the nat table (made by the test, always removed again, Docker's own chains untouched),
 * the real `nft monitor`, and listeners checked through /proc/net/{tcp,tcp6,udp,udp6}.
 *
 * The chains are not hooked into PREROUTING or OUTPUT, so no traffic is ever rewritten: the rules
 * exist only to be read, and a test connection reaches the placeholder itself.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { connect } from 'node:net';
import { after, before } from 'node:test';
import { Subject } from 'rxjs';
import { createAgent } from '../src/agent.js';
import type { SinkReport } from '../src/sinks/sink.js';
import { listenerSink } from '../src/sinks/listeners.js';
import { iptablesEvents, type IptablesStreamOptions } from '../streams/iptables.js';
import { nodeIptablesClient } from '../streams/iptablesClient.js';
import { recordingLogger } from '../marbles/helpers.js';
import { childProcesses, engineTest, gateFor, run, waitFor, type Need } from './engines.js';
import { listeningKeys, nat, NatChains, ownChainsLeft, ownListeningKeys, sweepLeftovers } from './iptablesHarness.js';

const needs: readonly Need[] = ['root', 'iptables'];
const opts = { needs, timeout: 60_000 };
const ours = (port: number) => (p: number): boolean => p === port;

before(async () => {
  if (gateFor(needs).status !== 'ok') return;
  const swept = await sweepLeftovers();
  if (swept.length > 0) process.stderr.write(`removed chains left by an earlier run: ${swept.join(', ')}\n`);
});

after(async () => {
  if (gateFor(needs).status !== 'ok') return;
  // every test removes its own chains in t.after; this checks that nothing was left anyway
  const left = await ownChainsLeft();
  assert.deepEqual(left, [], 'the tests left chains behind');
});

interface RunningAgent {
  readonly reports: SinkReport[];
  readonly lines: () => { level: number; msg: string }[];
  /** Withdraws (the sink closes every placeholder) and resolves once the agent completed. */
  stop(): Promise<void>;
}

/** The agent in this process: the real iptables stream into the real listener sink. */
function startAgent(streamOptions: IptablesStreamOptions = {}): RunningAgent {
  const { log, lines } = recordingLogger();
  const stop$ = new Subject<void>();
  const reports: SinkReport[] = [];
  let done!: () => void;
  const finished = new Promise<void>((resolve) => (done = resolve));
  const events = iptablesEvents(nodeIptablesClient(), { logger: log, ...streamOptions });
  const subscription = createAgent(
    { sources: { iptables: events }, routes: [{ sink: listenerSink({ logger: log, retryMs: 200 }), sources: ['iptables'] }] },
    stop$,
  ).subscribe({
    next: (r) => reports.push(r),
    error: (error: unknown) => {
      reports.push({ sink: 'test', type: 'failed', error: String(error), retryInMs: 0 });
      done();
    },
    complete: done,
  });
  let stopped = false;
  return {
    reports,
    lines,
    stop: async () => {
      if (stopped) return;
      stopped = true;
      stop$.next();
      await Promise.race([finished, new Promise((resolve) => setTimeout(resolve, 5000))]);
      subscription.unsubscribe();
    },
  };
}

/** A chain set and an agent for one test, both undone in t.after even when the test fails. */
function setUp(t: { after: (fn: () => Promise<void>) => void }, streamOptions?: IptablesStreamOptions): { chains: NatChains; agent: RunningAgent } {
  const chains = new NatChains();
  const agent = startAgent(streamOptions);
  t.after(async () => {
    await agent.stop();
    await chains.removeAll();
  });
  return { chains, agent };
}

const sorted = (keys: Iterable<string>): string[] => [...keys].sort();

async function waitForOwn(port: number, expected: string[], what: string, timeoutMs = 5000): Promise<void> {
  await waitFor(
    () => sorted(ownListeningKeys(ours(port))).join(' ') === sorted(expected).join(' '),
    timeoutMs,
    () => `${what}: expected the agent to hold [${expected.join(' ')}], /proc says it holds [${sorted(ownListeningKeys(ours(port))).join(' ')}]`,
  );
}

engineTest('a TCP rule gets a placeholder on 0.0.0.0 (only); removing the rule closes it', opts, async (t) => {
  const { chains, agent } = setUp(t);
  const chain = await chains.chain();
  assert.deepEqual(sorted(listeningKeys(ours(28301))), [], 'nothing listens on 28301 before the test');
  await nat('ipv4', '-A', chain, '-p', 'tcp', '-m', 'tcp', '--dport', '28301', '-j', 'DNAT', '--to-destination', '10.213.0.2:80');
  await waitForOwn(28301, ['tcp/0.0.0.0:28301'], 'the placeholder for the rule');
  assert.deepEqual(sorted(listeningKeys(ours(28301))), ['tcp/0.0.0.0:28301'], 'no UDP, no IPv6, no other address');

  await nat('ipv4', '-D', chain, '-p', 'tcp', '-m', 'tcp', '--dport', '28301', '-j', 'DNAT', '--to-destination', '10.213.0.2:80');
  await waitForOwn(28301, [], 'the placeholder to close after the rule went');
  assert.deepEqual(sorted(listeningKeys(ours(28301))), []);
  const writes = agent.reports.flatMap((r) => (r.type === 'wrote' ? [`+${r.added.map((f) => f.hostPort).join(',')} -${r.removed.map((f) => f.hostPort).join(',')}`] : []));
  assert.deepEqual(writes, ['+28301 -', '+ -28301']);
});

engineTest('a -d 127.0.0.1 rule listens on 127.0.0.1 only', opts, async (t) => {
  const { chains } = setUp(t);
  const chain = await chains.chain();
  await nat('ipv4', '-A', chain, '-d', '127.0.0.1/32', '-p', 'tcp', '-m', 'tcp', '--dport', '28302', '-j', 'DNAT', '--to-destination', '10.213.0.2:443');
  await waitForOwn(28302, ['tcp/127.0.0.1:28302'], 'the loopback placeholder');
  assert.deepEqual(sorted(listeningKeys(ours(28302))), ['tcp/127.0.0.1:28302']);
});

engineTest('a UDP rule gets a bound UDP socket, and a multiport rule one placeholder per port', opts, async (t) => {
  const { chains } = setUp(t);
  const chain = await chains.chain();
  await nat('ipv4', '-A', chain, '-p', 'udp', '-m', 'udp', '--dport', '28303', '-j', 'DNAT', '--to-destination', '10.213.0.2:53');
  await nat('ipv4', '-A', chain, '-p', 'tcp', '-m', 'multiport', '--dports', '28310,28311:28312', '-j', 'DNAT', '--to-destination', '10.213.0.2');
  await waitForOwn(28303, ['udp/0.0.0.0:28303'], 'the UDP placeholder');
  const range = (p: number): boolean => p >= 28310 && p <= 28312;
  await waitFor(() => ownListeningKeys(range).size === 3, 5000, () => `three placeholders for the multiport rule; /proc: [${sorted(ownListeningKeys(range)).join(' ')}]`);
  assert.deepEqual(sorted(ownListeningKeys(range)), ['tcp/0.0.0.0:28310', 'tcp/0.0.0.0:28311', 'tcp/0.0.0.0:28312']);
  assert.deepEqual(sorted(listeningKeys(ours(28303))), ['udp/0.0.0.0:28303'], 'no TCP socket on the UDP port');
});

engineTest('ip6tables rules: [::] placeholders beside 0.0.0.0 ones on the same port, ::1 for -d ::1/128', opts, async (t) => {
  const { chains } = setUp(t);
  const v4 = await chains.chain('ipv4');
  const v6 = await chains.chain('ipv6');
  await nat('ipv4', '-A', v4, '-p', 'tcp', '-m', 'tcp', '--dport', '28304', '-j', 'DNAT', '--to-destination', '10.213.0.2:80');
  await nat('ipv6', '-A', v6, '-p', 'tcp', '-m', 'tcp', '--dport', '28304', '-j', 'DNAT', '--to-destination', '[fd00:213::2]:80');
  await nat('ipv6', '-A', v6, '-d', '::1/128', '-p', 'udp', '-m', 'udp', '--dport', '28305', '-j', 'DNAT', '--to-destination', 'fd00:213::2');
  await waitForOwn(28304, ['tcp/0.0.0.0:28304', 'tcp/[::]:28304'], 'both families on 28304');
  await waitForOwn(28305, ['udp/[::1]:28305'], 'the ::1 UDP placeholder');
});

engineTest('a placeholder resets a connection at once and reads nothing', opts, async (t) => {
  const { chains } = setUp(t);
  const chain = await chains.chain();
  await nat('ipv4', '-A', chain, '-p', 'tcp', '-m', 'tcp', '--dport', '28306', '-j', 'DNAT', '--to-destination', '10.213.0.2:80');
  await waitForOwn(28306, ['tcp/0.0.0.0:28306'], 'the placeholder');
  const outcome = await new Promise<{ error?: string; data: number; closedAfterMs: number }>((resolve) => {
    const started = Date.now();
    let data = 0;
    let error: string | undefined;
    const socket = connect({ host: '127.0.0.1', port: 28306 });
    socket.on('connect', () => {
      socket.write('GET / HTTP/1.0\r\n\r\n');
    });
    socket.on('data', (chunk: Buffer) => (data += chunk.length));
    socket.on('error', (e: NodeJS.ErrnoException) => (error = e.code));
    socket.on('close', () => {
      resolve({ ...(error !== undefined && { error }), data, closedAfterMs: Date.now() - started });
    });
    socket.setTimeout(3000, () => socket.destroy(new Error('no reset within 3 s')));
  });
  assert.equal(outcome.error, 'ECONNRESET', 'the connection is reset, not closed politely or left open');
  assert.equal(outcome.data, 0, 'the placeholder sends nothing');
  assert.ok(outcome.closedAfterMs < 1000, `reset at once (after ${String(outcome.closedAfterMs)} ms)`);
  assert.deepEqual(sorted(ownListeningKeys(ours(28306))), ['tcp/0.0.0.0:28306'], 'the placeholder keeps listening');
});

engineTest('a port something else already listens on is not an error, and is taken when it frees up', opts, async (t) => {
  // another process holds 0.0.0.0:28307 (TCP) first
  const other = spawn(process.execPath, ['-e', "require('net').createServer().listen(28307, '0.0.0.0', () => console.log('up'))"], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.after(() => {
    other.kill('SIGKILL');
    return Promise.resolve();
  });
  await new Promise<void>((resolve, reject) => {
    other.stdout.once('data', () => {
      resolve();
    });
    other.once('exit', (code) => {
      reject(new Error(`the other listener exited (${String(code)})`));
    });
  });
  assert.ok(other.pid !== undefined);
  assert.deepEqual(sorted(ownListeningKeys(ours(28307), other.pid)), ['tcp/0.0.0.0:28307'], 'the other process listens');

  const { chains, agent } = setUp(t);
  const chain = await chains.chain();
  await nat('ipv4', '-A', chain, '-p', 'tcp', '-m', 'tcp', '--dport', '28307', '-j', 'DNAT', '--to-destination', '10.213.0.2:80');
  await waitFor(() => agent.lines().some((l) => l.msg.startsWith('tcp/0.0.0.0:28307 is in use already')), 5000, 'the agent to note that 28307 is in use');
  assert.deepEqual(sorted(ownListeningKeys(ours(28307))), [], 'the agent holds nothing on 28307 while the other process does');
  assert.deepEqual(agent.reports.filter((r) => r.type === 'failed'), [], 'in use is not a failure');
  assert.deepEqual(agent.lines().filter((l) => l.level >= 40), [], 'nor a warning');

  other.kill('SIGKILL');
  // the sink tries again every 200 ms (± jitter) in this test
  await waitForOwn(28307, ['tcp/0.0.0.0:28307'], 'the agent to take 28307 once it is free', 3000);
});

engineTest('stopping the agent closes every placeholder and reports the withdrawal', opts, async (t) => {
  const { chains, agent } = setUp(t);
  const chain = await chains.chain();
  await nat('ipv4', '-A', chain, '-p', 'tcp', '-m', 'tcp', '--dport', '28308', '-j', 'DNAT', '--to-destination', '10.213.0.2:80');
  await nat('ipv4', '-A', chain, '-p', 'udp', '-m', 'udp', '--dport', '28308', '-j', 'DNAT', '--to-destination', '10.213.0.2:80');
  await waitForOwn(28308, ['tcp/0.0.0.0:28308', 'udp/0.0.0.0:28308'], 'both placeholders');
  await agent.stop();
  assert.deepEqual(sorted(listeningKeys(ours(28308))), [], 'closed at once on withdrawal');
  assert.deepEqual(agent.reports.at(-1), { sink: 'listeners', type: 'withdrawn', count: 2 });
});

engineTest('nft monitor is the trigger here, and says so', { needs: [...needs, 'nft'], timeout: 60_000 }, async (t) => {
  const { chains, agent } = setUp(t);
  await waitFor(() => agent.lines().some((l) => l.msg === 'watching rule changes with nft monitor'), 5000, 'the mode line');
  const chain = await chains.chain();
  const before = Date.now();
  await nat('ipv4', '-A', chain, '-p', 'tcp', '-m', 'tcp', '--dport', '28309', '-j', 'DNAT', '--to-destination', '10.213.0.2:80');
  await waitForOwn(28309, ['tcp/0.0.0.0:28309'], 'the placeholder');
  // far sooner than any poll or the 30 s safety re-read could manage
  assert.ok(Date.now() - before < 1500, `seen ${String(Date.now() - before)} ms after the command returned`);
});

/** The pids of this process's children named `name`. */
function childrenNamed(name: string): number[] {
  return childProcesses().filter((c) => c.comm === name).map((c) => c.pid);
}

engineTest('a monitor process that dies is restarted, and changes are seen again', { needs: [...needs, 'nft'], timeout: 60_000 }, async (t) => {
  const { chains, agent } = setUp(t);
  await waitFor(() => agent.lines().some((l) => l.msg === 'watching rule changes with nft monitor'), 5000, 'the mode line');
  const [first, ...others] = childrenNamed('nft');
  assert.ok(first !== undefined && others.length === 0, `one nft monitor runs (found ${String(childrenNamed('nft').length)})`);
  process.kill(first, 'SIGKILL');
  await waitFor(() => agent.lines().some((l) => l.level === 40 && l.msg.startsWith('the rule monitor stopped')), 5000, 'the agent to notice');
  await waitFor(() => childrenNamed('nft').some((pid) => pid !== first), 5000, 'a new nft monitor');
  await waitFor(() => agent.lines().filter((l) => l.msg === 'watching rule changes with nft monitor').length === 2, 5000, 'the new monitor to settle');

  const chain = await chains.chain();
  const before = Date.now();
  await nat('ipv4', '-A', chain, '-p', 'tcp', '-m', 'tcp', '--dport', '28314', '-j', 'DNAT', '--to-destination', '10.213.0.2:80');
  await waitForOwn(28314, ['tcp/0.0.0.0:28314'], 'the placeholder after the restart');
  assert.ok(Date.now() - before < 1500, `seen ${String(Date.now() - before)} ms after the command returned`);
});

engineTest('a rule made with nft in the nat table leaves iptables-save unable to show it: nothing is withdrawn, and it is read again once that rule goes', { needs: [...needs, 'nft'], timeout: 60_000 }, async (t) => {
  const { chains, agent } = setUp(t);
  await waitFor(() => agent.lines().some((l) => l.msg === 'watching rule changes with nft monitor'), 5000, 'the mode line');
  const chain = await chains.chain();
  await nat('ipv4', '-A', chain, '-p', 'tcp', '-m', 'tcp', '--dport', '28316', '-j', 'DNAT', '--to-destination', '10.213.0.2:80');
  await waitForOwn(28316, ['tcp/0.0.0.0:28316'], 'the placeholder');

  // A chain of nft's own in `ip nat`, never hooked, with a rule iptables-nft cannot translate.
  const native = `pst_native_${String(process.pid)}`;
  let nativeThere = true;
  const dropNative = async (): Promise<void> => {
    if (!nativeThere) return;
    nativeThere = false;
    await run('nft', ['delete', 'chain', 'ip', 'nat', native]);
  };
  t.after(dropNative);
  await run('nft', ['add', 'chain', 'ip', 'nat', native]);
  await run('nft', ['add', 'rule', 'ip', 'nat', native, 'ip', 'daddr', '10.213.250.1', 'tcp', 'dport', '9', 'ct', 'state', 'new', 'counter']);
  await waitFor(() => agent.lines().some((l) => l.level === 40 && /rules made with nft that iptables-save cannot show/.test(l.msg)), 5000, 'the agent to find the table unreadable');
  assert.deepEqual(sorted(ownListeningKeys(ours(28316))), ['tcp/0.0.0.0:28316'], 'an unreadable table withdraws nothing');

  await dropNative();
  await nat('ipv4', '-D', chain, '-p', 'tcp', '-m', 'tcp', '--dport', '28316', '-j', 'DNAT', '--to-destination', '10.213.0.2:80');
  await waitForOwn(28316, [], 'the placeholder to close once the table can be read again');
});

engineTest('without a monitor the stream polls, logs that, and still finds the rule', opts, async (t) => {
  const { chains, agent } = setUp(t, { monitors: [], pollMs: 300 });
  const chain = await chains.chain();
  await nat('ipv4', '-A', chain, '-p', 'tcp', '-m', 'tcp', '--dport', '28313', '-j', 'DNAT', '--to-destination', '10.213.0.2:80');
  await waitForOwn(28313, ['tcp/0.0.0.0:28313'], 'the placeholder found by polling');
  assert.ok(agent.lines().some((l) => l.msg === 'no rule monitor configured; polling the rules every 300 ms'));
});
