/**
 * The iptables backend with the listener sink, against real iptables (nf_tables) and real sockets:
 * - detection latency from a rule change (the `iptables -A` command returned) until the
 *   placeholder accepts connections, event-driven (nft monitor) and, in the same run, the original
 *   agent's design (re-read every 3 s), side by side, with the ratio;
 * - scale: 2000 rules (1000 ports × tcp and udp) added in one `iptables-restore --noflush`
 *   transaction until all 2000 placeholders exist (/proc/net), and removed in one until all are gone;
 * - the agent's RSS at 2000 placeholders and its idle CPU.
 * The agent runs in a process of its own (bench/iptablesAgent.ts), so its figures are its own.
 * Ports 28000–28999; every rule and chain it makes is removed again, also when it fails.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { connect } from 'node:net';
import { performance } from 'node:perf_hooks';
import { findBinary } from '../test/engines.js';
import { listeningKeys, nat, NatChains, ownListeningKeys, restore, sweepLeftovers } from '../test/iptablesHarness.js';
import { percentile, report, round } from './stats.js';
import { sleep, until } from './harness.js';

const agentScript = new URL('./iptablesAgent.ts', import.meta.url).pathname;

interface Stats {
  readonly rss: number;
  readonly heapUsed: number;
  readonly heapTotal: number;
  readonly cpuMicros: number;
  readonly reads: number;
}

interface AgentProcess {
  readonly child: ChildProcess;
  readonly mode: () => string | undefined;
  stats(): Promise<Stats>;
  stop(): Promise<void>;
}

async function startAgent(args: readonly string[]): Promise<AgentProcess> {
  const child = fork(agentScript, [...args], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  let mode: string | undefined;
  const waiting: ((m: Stats) => void)[] = [];
  const ready = new Promise<void>((resolve, reject) => {
    child.on('message', (m: { type: string; mode?: string } & Partial<Stats>) => {
      if (m.type === 'ready') resolve();
      if (m.type === 'mode') mode = m.mode;
      if (m.type === 'stats') waiting.shift()?.({ rss: m.rss ?? 0, heapUsed: m.heapUsed ?? 0, heapTotal: m.heapTotal ?? 0, cpuMicros: m.cpuMicros ?? 0, reads: m.reads ?? 0 });
    });
    child.once('exit', (code) => {
      reject(new Error(`the agent exited (${String(code)}) before it was ready`));
    });
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => { resolve(); }));
  await ready;
  return {
    child,
    mode: () => mode,
    stats: () =>
      new Promise((resolve) => {
        waiting.push(resolve);
        child.send('stats');
      }),
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.send('stop');
      const timeout = new Promise<'timeout'>((resolve) => setTimeout(() => { resolve('timeout'); }, 5000));
      if ((await Promise.race([exited, timeout])) === 'timeout') {
        child.kill('SIGKILL');
        await exited;
      }
    },
  };
}


/** Whether something accepts a TCP connection on 127.0.0.1:port (a placeholder accepts, then resets). */
function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => {
      socket.destroy();
      resolve(false);
    });
  });
}

/** Latency samples: add a rule, time until its placeholder accepts; remove it, wait until it is gone. */
async function detectionLatency(chain: string, samples: number, firstPort: number, pauseMs: number, spreadMs: number): Promise<{ ms: number[]; missed: number }> {
  const ms: number[] = [];
  let missed = 0;
  for (let i = 0; i < samples; i++) {
    const port = firstPort + i;
    const rule = ['-p', 'tcp', '-m', 'tcp', '--dport', String(port), '-j', 'DNAT', '--to-destination', '10.213.0.2:80'];
    // a random pause, so that a polling agent is met at every phase of its period
    await sleep(pauseMs + Math.random() * spreadMs);
    await nat('ipv4', '-A', chain, ...rule);
    const took = await until(() => accepts(port), 10_000);
    if (took === undefined) missed++;
    else ms.push(took);
    await nat('ipv4', '-D', chain, ...rule);
    await until(async () => !(await accepts(port)), 10_000, 5);
  }
  return { ms, missed };
}

export async function benchIptables(quick: boolean): Promise<void> {
  if (process.getuid?.() !== 0 || findBinary('iptables-restore') === undefined) {
    process.stderr.write('bench: iptables figures need root and iptables (apt-get install -y iptables nftables); skipping them\n');
    return;
  }
  await sweepLeftovers();
  const chains = new NatChains();
  let agent: AgentProcess | undefined;
  try {
    // ---- detection latency, event-driven, then the 3 s polling baseline in the same run
    const chain = await chains.chain('ipv4');
    agent = await startAgent([]);
    await until(() => agent?.mode() !== undefined, 3000, 20);
    const mode = agent.mode() ?? 'unknown';
    const eventSamples = quick ? 20 : 100;
    // lone changes: spaced so that the agent's coalescing windows (which widen while changes keep
    // coming, up to 1 s in the agent) have closed before the next one
    const events = await detectionLatency(chain, eventSamples, 28900, 300, 200);
    await agent.stop();

    agent = await startAgent(['--poll', '3000']);
    const pollSamples = quick ? 6 : 20;
    const polled = await detectionLatency(chain, pollSamples, 28950, 0, 3000);
    await agent.stop();
    agent = undefined;

    const e50 = percentile(events.ms, 50);
    const p50 = percentile(polled.ms, 50);
    report({ name: 'iptables.detect.event.p50', value: round(e50), unit: 'ms', samples: events.ms.length, missed: events.missed, mode, target: '<= 100 ms', note: 'rule added (iptables -A returned) → the placeholder accepts a connection' });
    report({ name: 'iptables.detect.event.p99', value: round(percentile(events.ms, 99)), unit: 'ms', samples: events.ms.length });
    report({ name: 'iptables.detect.poll3s.p50', value: round(p50), unit: 'ms', samples: polled.ms.length, missed: polled.missed, note: 'baseline: the original design, re-reading every 3 s (without its 1 s probe per port)' });
    report({ name: 'iptables.detect.poll3s.p99', value: round(percentile(polled.ms, 99)), unit: 'ms', samples: polled.ms.length });
    report({ name: 'iptables.detect.speedup', value: round(p50 / e50, 1), unit: 'x', note: 'poll3s p50 / event p50, same run' });

    // ---- scale: 2000 placeholders from one restore, and back
    agent = await startAgent([]);
    const inRange = (p: number): boolean => p >= 28000 && p <= 28999;
    const before = await agent.stats();
    // 100 chains (one per "container") of 10 ports each, a TCP and a UDP rule per port
    const rules = Array.from({ length: 100 }, (_, c) =>
      Array.from({ length: 10 }, (_, k) => 28000 + c * 10 + k).flatMap((port) => [
        `-p tcp -m tcp --dport ${String(port)} -j DNAT --to-destination 10.213.${String(c)}.2:${String(port)}`,
        `-p udp -m udp --dport ${String(port)} -j DNAT --to-destination 10.213.${String(c)}.2:${String(port)}`,
      ]),
    );
    const { text } = await chains.batch('ipv4', rules);
    const t0 = performance.now();
    await restore('ipv4', text);
    const restoreMs = performance.now() - t0;
    const added = await until(() => listeningKeys(inRange).size >= 2000, 30_000, 10);
    const addMs = added === undefined ? undefined : restoreMs + added;
    const own = agent.child.pid === undefined ? 0 : ownListeningKeys(inRange, agent.child.pid).size;
    const afterAdd = await agent.stats();
    report({ name: 'iptables.scale2000.add', value: round(addMs ?? Number.NaN), unit: 'ms', listeners: own, complete: added !== undefined, target: '<= 2000 ms', note: 'from the start of one iptables-restore --noflush of 2000 rules in 100 chains until /proc/net shows 2000 placeholders of the agent' });
    report({ name: 'iptables.scale2000.restore_command', value: round(restoreMs), unit: 'ms', note: 'iptables-restore itself, included above' });
    report({ name: 'iptables.scale2000.reads', value: afterAdd.reads - before.reads, unit: 'reads', note: 'iptables-save runs the burst cost (about 2100 nft monitor lines)' });

    // idle: let it settle, then CPU over a few seconds; RSS at 2000 placeholders
    await sleep(1000);
    const idleMs = quick ? 3000 : 10_000;
    const c0 = await agent.stats();
    const w0 = performance.now();
    await sleep(idleMs);
    const c1 = await agent.stats();
    const cpuPercent = ((c1.cpuMicros - c0.cpuMicros) / 1000 / (performance.now() - w0)) * 100;
    report({ name: 'iptables.agent.rss_2000', value: round(c1.rss / 1e6, 1), unit: 'MB', target: '<= 150 MB', rss_before: round(before.rss / 1e6, 1), heap_used: round(c1.heapUsed / 1e6, 1), heap_total: round(c1.heapTotal / 1e6, 1), note: 'agent process (node --import tsx, as npm start runs it) holding 2000 placeholders' });
    report({ name: 'iptables.agent.idle_cpu', value: round(cpuPercent, 2), unit: '% of a core', window_ms: idleMs, target: '<= 1 %', note: 'process.cpuUsage of the agent with 2000 placeholders and no rule changing (a 30 s safety re-read of the 2000 rules may fall in the window)' });

    const removal = await chains.removeText();
    const t1 = performance.now();
    for (const [family, removeText] of removal) await restore(family, removeText);
    const gone = await until(() => listeningKeys(inRange).size === 0, 30_000, 10);
    report({ name: 'iptables.scale2000.remove', value: round(gone === undefined ? Number.NaN : performance.now() - t1), unit: 'ms', complete: gone !== undefined, target: '<= 2000 ms', note: 'from the start of one iptables-restore that deletes the 100 chains until no placeholder is left' });
  } finally {
    await agent?.stop();
    await chains.removeAll();
  }
}
