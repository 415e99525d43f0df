/**
 * The artifacts a VM distribution ships (docs/install.md), side by side in one run with what
 * `npm start` runs (`node dist/src/main.js`) and with `npm start` as it was (tsx):
 * - cold start: from exec until the vtunnel peer has the first message, with 20 running
 *   containers (docker mode, `-privilegedService`), min / median / max over the rounds;
 * - RSS idle after start and idle CPU (/proc/PID/stat over a window, after a settle);
 * - RSS with 2,000 placeholders (listener mode, 2,000 DNAT rules from one iptables-restore);
 * - the single executable's size, and an idle empty `node` as the floor every variant sits on.
 * It builds the artifacts first (`npm run package`, `npm run build`).
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { promisify } from 'node:util';
import { buildArtifacts, bundle, repoRoot, sea } from '../test/distArtifacts.js';
import { busyboxImage, dockerAnswers, ensureBusyboxImage, findBinary, TestContainers } from '../test/engines.js';
import { NatChains, ownListeningKeys, restore } from '../test/iptablesHarness.js';
import { sleep, until } from './harness.js';
import { startReceiver } from './receiver.js';
import { percentile, report, round } from './stats.js';

interface Variant {
  readonly name: string;
  readonly command: string;
  readonly args: readonly string[];
}

const variants: readonly Variant[] = [
  { name: 'sea', command: sea, args: [] },
  { name: 'bundle', command: process.execPath, args: [bundle] },
  { name: 'npm_start', command: process.execPath, args: [`${repoRoot}dist/src/main.js`] },
  { name: 'tsx', command: process.execPath, args: ['--import', 'tsx', `${repoRoot}src/main.ts`] },
];

/** The bench's environment without NODE_OPTIONS (which would reach every variant differently). */
const env = (): NodeJS.ProcessEnv => {
  const copy: NodeJS.ProcessEnv = { ...process.env, PORTSTREAM_LOG_LEVEL: 'warn' };
  delete copy['NODE_OPTIONS'];
  return copy;
};

function launch(variant: Variant, flags: readonly string[]): ChildProcess {
  return spawn(variant.command, [...variant.args, ...flags], { cwd: repoRoot, env: env(), stdio: 'ignore' });
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  await Promise.race([exited, sleep(10_000)]);
  child.kill('SIGKILL');
}

function status(pid: number, field: 'VmRSS' | 'VmHWM' | 'RssAnon' | 'RssFile'): number {
  const kb = new RegExp(`${field}:\\s+(\\d+)`).exec(readFileSync(`/proc/${String(pid)}/status`, 'utf8'))?.[1];
  return Number(kb ?? Number.NaN) / 1024;
}

/** CPU of `pid` over `ms`, in % of a core (utime + stime, 100 Hz ticks). */
async function idleCpu(pid: number, ms: number): Promise<number> {
  const ticks = (): number => {
    const fields = readFileSync(`/proc/${String(pid)}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
    return Number(fields[11]) + Number(fields[12]);
  };
  const before = ticks();
  await sleep(ms);
  return (ticks() - before) * 10 / ms * 100;
}

/**
 * VmRSS of `pid` as it stands: sampled every second for `windowMs` after `settleMs`, median and
 * max. The settle outlasts V8's memory reducer, which shrinks the heap about 8 s after a burst of
 * allocation ends; the window holds the periodic work (re-sends, safety re-reads) of a long run.
 */
async function settledRss(pid: number, settleMs: number, windowMs: number): Promise<{ median: number; max: number; early: number }> {
  const early = status(pid, 'VmRSS');
  await sleep(settleMs);
  const samples: number[] = [];
  for (let at = 0; at <= windowMs; at += 1000) {
    samples.push(status(pid, 'VmRSS'));
    if (at < windowMs) await sleep(1000);
  }
  return { median: percentile(samples, 50), max: Math.max(...samples), early };
}

const spread = (samples: readonly number[]): { min: number; max: number; samples: number } => ({
  min: round(Math.min(...samples), 1),
  max: round(Math.max(...samples), 1),
  samples: samples.length,
});

async function coldStarts(rounds: number, settleMs: number, windowMs: number, idleMs: number): Promise<void> {
  const containers = new TestContainers();
  try {
    await ensureBusyboxImage();
    await Promise.all(Array.from({ length: 20 }, () => containers.run('-p', '127.0.0.1::80', busyboxImage, 'sleep', '3600')));
    const starts = new Map<string, number[]>(variants.map((v) => [v.name, []]));
    // Rounds interleave the variants, so a slow moment of the machine is shared among them; the
    // first round warms the page cache and is not counted.
    for (let round_ = 0; round_ <= rounds; round_++) {
      for (const variant of variants) {
        const receiver = await startReceiver();
        const t0 = performance.now();
        const agent = launch(variant, ['-docker', '-privilegedService', '-iptables=false', '-vtunnelAddr', `127.0.0.1:${String(receiver.port)}`]);
        await until(() => receiver.messages.length > 0, 30_000, 1);
        const first = receiver.messages[0];
        if (round_ > 0 && first !== undefined) starts.get(variant.name)?.push(first.at - t0);
        await stop(agent);
        await receiver.close();
      }
    }
    for (const variant of variants) {
      const samples = starts.get(variant.name) ?? [];
      report({ name: `dist.${variant.name}.cold_start`, value: round(percentile(samples, 50), 1), unit: 'ms', ...spread(samples), target: '<= 150 ms', note: 'exec → the vtunnel peer has the first message, 20 running containers, median' });
    }
    // One long run each: RSS after start-up has settled, then the CPU of an idle agent.
    for (const variant of variants) {
      const receiver = await startReceiver();
      const agent = launch(variant, ['-docker', '-privilegedService', '-iptables=false', '-vtunnelAddr', `127.0.0.1:${String(receiver.port)}`]);
      await until(() => receiver.messages.length > 0, 30_000, 5);
      const pid = agent.pid ?? 0;
      const rss = await settledRss(pid, settleMs, windowMs);
      const peak = status(pid, 'VmHWM');
      const cpu = await idleCpu(pid, idleMs);
      report({ name: `dist.${variant.name}.rss_idle`, value: round(rss.median, 1), unit: 'MB', max_mb: round(rss.max, 1), peak_mb: round(peak, 1), anon_mb: round(status(pid, 'RssAnon'), 1), file_mb: round(status(pid, 'RssFile'), 1), target: '<= 55 MB', note: `VmRSS, median of a sample a second over ${String(windowMs / 1000)} s from ${String(settleMs / 1000)} s after the first message; docker mode, 20 containers forwarded` });
      report({ name: `dist.${variant.name}.idle_cpu`, value: round(cpu, 3), unit: '% of a core', over_ms: idleMs, target: '<= 0.3 %', note: 'utime+stime from /proc over the window, nothing changing (includes the vtunnel re-send every 3 s)' });
      await stop(agent);
      await receiver.close();
    }
  } finally {
    await containers.removeAll();
  }
}

async function placeholders2000(settleMs: number, windowMs: number): Promise<void> {
  if (process.getuid?.() !== 0 || findBinary('iptables-restore') === undefined) {
    process.stderr.write('bench: not root or no iptables-restore; skipping the 2,000-placeholder RSS\n');
    return;
  }
  const inRange = (p: number): boolean => p >= 29000 && p <= 29999;
  for (const variant of variants) {
    const chains = new NatChains();
    const agent = launch(variant, ['-iptables=true', '-k8sServiceListenerAddr', '127.0.0.1']);
    try {
      await sleep(1500);
      const rules = Array.from({ length: 100 }, (_, c) =>
        Array.from({ length: 10 }, (_, k) => 29000 + c * 10 + k).flatMap((port) => [
          `-p tcp -m tcp --dport ${String(port)} -j DNAT --to-destination 10.213.${String(c)}.2:${String(port)}`,
          `-p udp -m udp --dport ${String(port)} -j DNAT --to-destination 10.213.${String(c)}.2:${String(port)}`,
        ]),
      );
      await restore('ipv4', (await chains.batch('ipv4', rules)).text);
      const pid = agent.pid ?? 0;
      const done = await until(() => ownListeningKeys(inRange, pid).size >= 2000, 30_000, 20);
      const rss = await settledRss(pid, settleMs, windowMs);
      report({ name: `dist.${variant.name}.rss_2000`, value: round(rss.median, 1), unit: 'MB', max_mb: round(rss.max, 1), right_after_mb: round(rss.early, 1), peak_mb: round(status(pid, 'VmHWM'), 1), anon_mb: round(status(pid, 'RssAnon'), 1), complete: done !== undefined, target: '<= 75 MB', note: `listener mode, 2,000 placeholders (1,000 ports, tcp and udp); VmRSS, median of a sample a second over ${String(windowMs / 1000)} s from ${String(settleMs / 1000)} s after the last appeared` });
    } finally {
      await stop(agent);
      await chains.removeAll();
    }
  }
}

/** The floor: an idle, empty node process measured the same way, and how long one takes to run. */
async function emptyNode(settleMs: number): Promise<void> {
  const runs: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    await promisify(execFile)(process.execPath, ['-e', '0'], { env: env() });
    runs.push(performance.now() - t0);
  }
  report({ name: 'dist.node_empty.run', value: round(percentile(runs, 50), 1), unit: 'ms', ...spread(runs), note: '`node -e 0`, exec to exit: how loaded the machine is (about 40 ms when quiet), beside the cold starts' });
  const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore', env: env() });
  await sleep(settleMs);
  report({ name: 'dist.node_empty.rss_idle', value: round(status(child.pid ?? 0, 'VmRSS'), 1), unit: 'MB', anon_mb: round(status(child.pid ?? 0, 'RssAnon'), 1), note: `an empty node ${process.version} process, idle: the floor under every variant but the executable's own` });
  await stop(child);
}

export async function benchDistribution(quick: boolean): Promise<void> {
  await buildArtifacts();
  await promisify(execFile)('npm', ['run', 'build'], { cwd: repoRoot, timeout: 300_000 });
  report({ name: 'dist.sea.size', value: round(statSync(sea).size / 2 ** 20, 1), unit: 'MiB', note: 'dist/portstream: Node 20 (symbols stripped) + the bundle as a SEA blob with its code cache + the addon' });
  report({ name: 'dist.bundle.size', value: round(statSync(bundle).size / 2 ** 20, 2), unit: 'MiB', note: 'dist/portstream.mjs, the Kubernetes client inside it compressed' });
  // Past V8's memory reducer (about 8 s after a burst), then a window with a safety re-read (30 s) in it.
  const settleMs = 12_000;
  const windowMs = quick ? 5_000 : 35_000;
  await emptyNode(3_000);
  if (await dockerAnswers()) await coldStarts(quick ? 2 : 5, settleMs, windowMs, quick ? 10_000 : 30_000);
  else process.stderr.write('bench: no Docker engine answers; skipping the cold start and idle figures of the artifacts\n');
  await placeholders2000(settleMs, windowMs);
}
