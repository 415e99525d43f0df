/**
 * The host-network source (`-procnet`), side by side with Rancher Desktop's design (read
 * /proc/net every 3 s, publish what two reads in a row agree on):
 * - the cost of one scan at 100 / 1k / 10k sockets, NETLINK_SOCK_DIAG and /proc/net;
 * - idle CPU with 1,000 sockets in the namespace;
 * - detection latency from listen() (in another process) until the vtunnel peer has the port,
 *   with the stability interval at 0 (the interval excluded) and at its default;
 * - how many transient listeners each stability interval would publish during a test run and
 *   `docker compose up`-like churn, which is how the default interval was chosen.
 * Runs in a process of its own (procnetMain.ts); the sockets live in bench/procnetSockets.ts.
 */
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { pino } from 'pino';
import { asyncScheduler, type Observable, type SchedulerAction, type SchedulerLike, type Subscription } from 'rxjs';
import type { SourceEvent } from '../src/model.js';
import { procnetDefaults, procnetEvents, type ProcnetOptions, type SocketTable } from '../streams/procnet.js';
import { nodeSocketTable, ownSocketInodes } from '../streams/procnetClient.js';
import { publishable, type ForwardPolicy } from '../streams/procnetPolicy.js';
import { runVtunnelAgent, sleep, until } from './harness.js';
import { busyboxImage, dockerAnswers, ensureBusyboxImage, testLabel } from '../test/engines.js';
import { percentile, report, round } from './stats.js';
import { runIsolatedIn } from './isolated.js';

const log = pino({ level: 'warn' }, pino.destination(2));
const policy: ForwardPolicy = { exclude: [], reachable: () => false };
const readers = { sock_diag: () => nodeSocketTable(log, { reader: 'sock_diag' }), proc_net: () => nodeSocketTable(log, { reader: 'proc' }) };
/** Rancher Desktop's scanner: /proc/net every 3 s; a port counts once two reads agree (3 s standing). */
const rancher = { reader: 'proc_net', scanMs: 3000, stableMs: 3000 } as const;

interface Holder {
  ask<T>(message: object, answer: string): Promise<T>;
  stop(): void;
}

async function socketHolder(): Promise<Holder> {
  const child: ChildProcess = fork(new URL('./procnetSockets.ts', import.meta.url).pathname, [], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const waiting = new Map<string, ((m: unknown) => void)[]>();
  child.on('message', (m: { type: string }) => waiting.get(m.type)?.shift()?.(m));
  const ask = <T>(message: object, answer: string): Promise<T> =>
    new Promise<T>((resolve) => {
      waiting.set(answer, [...(waiting.get(answer) ?? []), resolve as (m: unknown) => void]);
      if (Object.keys(message).length > 0) child.send(message);
    });
  await ask({}, 'ready');
  return { ask, stop: () => child.kill() };
}

/** Median ms of `fn` over `runs`. */
function median(fn: () => void, runs: number): number {
  const samples: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    fn();
    samples.push(performance.now() - t0);
  }
  return percentile(samples, 50);
}

async function benchScanCost(holder: Holder, quick: boolean): Promise<void> {
  let open = 0;
  for (const n of [100, 1000, 10_000]) {
    await holder.ask({ type: 'open', count: n - open }, 'opened');
    open = n;
    for (const [name, make] of Object.entries(readers)) {
      const table = make();
      const count = table.read().decode().length;
      const runs = quick ? 10 : n >= 10_000 ? 30 : 100;
      const full = median(() => publishable(table.read().decode(), new Set(), policy), runs);
      const unchanged = median(() => table.read(), runs);
      report({ name: `procnet.scan.${name}.${String(n)}`, value: round(full), unit: 'ms', sockets: count, note: 'read + decode + policy: a scan in which something changed' });
      report({ name: `procnet.scan_unchanged.${name}.${String(n)}`, value: round(unchanged), unit: 'ms', sockets: count, note: 'read only: an unchanged scan compares the raw table and stops' });
    }
  }
  await holder.ask({ type: 'closeAll' }, 'closedAll');
}

/**
 * The scheduler the source runs on, counting the CPU time of everything it runs (each scan, from
 * the timer to the last operator): the scan's own cost, apart from the process's idle and from
 * what else this shared machine runs.
 */
function measuringScheduler(): { scheduler: SchedulerLike; usedMicros: () => number } {
  let used = 0;
  const scheduler: SchedulerLike = {
    now: () => asyncScheduler.now(),
    schedule<T>(work: (this: SchedulerAction<T>, state?: T) => void, delay?: number, state?: T): Subscription {
      return asyncScheduler.schedule(function (this: SchedulerAction<T>, s?: T) {
        const before = process.cpuUsage();
        work.call(this, s);
        const d = process.cpuUsage(before);
        used += d.user + d.system;
      }, delay, state);
    },
  };
  return { scheduler, usedMicros: () => used };
}

/** % of a core: the scans' own CPU, and the whole process's, over `ms` once settled. */
async function idleCpu(table: SocketTable, opts: Partial<ProcnetOptions>, ms: number): Promise<{ scan: number; process: number }> {
  const measuring = measuringScheduler();
  const subscription = procnetEvents(table, { policy, logger: log, scheduler: measuring.scheduler, ...opts }).subscribe();
  await sleep(Math.max(4000, (opts.stableMs ?? procnetDefaults.stableMs) + 2 * (opts.scanMs ?? procnetDefaults.scanMs)));
  const scanBefore = measuring.usedMicros();
  const before = process.cpuUsage();
  const t0 = performance.now();
  await sleep(ms);
  const used = process.cpuUsage(before);
  const wall = performance.now() - t0;
  subscription.unsubscribe();
  return { scan: ((measuring.usedMicros() - scanBefore) / 1000 / wall) * 100, process: ((used.user + used.system) / 1000 / wall) * 100 };
}

/** The same process with no source at all, for the process figure's floor. */
async function idleProcess(ms: number): Promise<number> {
  const before = process.cpuUsage();
  const t0 = performance.now();
  await sleep(ms);
  const used = process.cpuUsage(before);
  return ((used.user + used.system) / 1000 / (performance.now() - t0)) * 100;
}

async function benchIdle(holder: Holder, quick: boolean): Promise<void> {
  await holder.ask({ type: 'open', count: 1000 }, 'opened');
  const ms = quick ? 5000 : 10_000;
  const rounds = quick ? 1 : 3;
  const withoutTrigger = (t: SocketTable): SocketTable => ({ name: t.name, read: () => t.read(), ownInodes: (c) => t.ownInodes(c) });
  const configs: [string, () => SocketTable, Partial<ProcnetOptions>, string][] = [
    ['portstream', readers.sock_diag, {}, 'NETLINK_SOCK_DIAG, sockstat trigger'],
    ['sock_diag_every_scan', () => withoutTrigger(readers.sock_diag()), {}, 'NETLINK_SOCK_DIAG read every scan, no trigger'],
    ['proc_net_every_scan', () => withoutTrigger(readers.proc_net()), {}, '/proc/net read every scan, no trigger'],
    ['rancher_desktop', () => withoutTrigger(readers.proc_net()), { scanMs: rancher.scanMs, stableMs: rancher.stableMs }, '/proc/net every 3 s'],
  ];
  const results = new Map<string, { scan: number[]; process: number[] }>(configs.map(([name]) => [name, { scan: [], process: [] }]));
  const floor: number[] = [];
  // interleaved rounds: this machine's background load drifts over minutes
  for (let r = 0; r < rounds; r++) {
    floor.push(await idleProcess(ms));
    for (const [name, make, opts] of configs) {
      const cpu = await idleCpu(make(), opts, ms);
      results.get(name)?.scan.push(cpu.scan);
      results.get(name)?.process.push(cpu.process);
    }
  }
  report({ name: 'procnet.idle_cpu.process_floor', value: round(percentile(floor, 50), 3), unit: '% of a core', note: 'this process with no source: timers, GC, the machine' });
  for (const [name, , opts, what] of configs) {
    const { scan, process: whole } = results.get(name) ?? { scan: [], process: [] };
    const scanMs = opts.scanMs ?? procnetDefaults.scanMs;
    const extra = { sockets: 1000, scanMs, rounds, note: `${what}; median of ${String(rounds)} × ${String(ms / 1000)} s` };
    report({ name: `procnet.idle_cpu.${name}`, value: round(percentile(scan, 50), 3), unit: '% of a core', ...extra, ...(name === 'portstream' && { target: '<= 0.3 %' }) });
    report({ name: `procnet.idle_cpu_process.${name}`, value: round(percentile(whole, 50), 3), unit: '% of a core', ...extra });
  }
  await holder.ask({ type: 'closeAll' }, 'closedAll');
}

/** listen() in the holder → the vtunnel peer has the port, per sample (ms). */
async function detection(holder: Holder, events: Observable<SourceEvent>, firstPort: number, samples: number, concurrent: boolean): Promise<number[]> {
  const agent = await runVtunnelAgent('procnet', events);
  const latencies: number[] = [];
  const one = async (port: number, delayMs: number): Promise<void> => {
    await sleep(delayMs);
    const { at } = await holder.ask<{ at: number }>({ type: 'listen', port }, 'listening');
    await until(() => agent.messages.some((m) => !m.remove && m.hostPorts.includes(port)), 15_000, 5);
    const got = agent.messages.find((m) => !m.remove && m.hostPorts.includes(port));
    if (got) latencies.push(performance.timeOrigin + got.at - at);
  };
  try {
    if (concurrent) {
      await Promise.all(Array.from({ length: samples }, (_, i) => one(firstPort + i, Math.random() * 6000)));
    } else {
      for (let i = 0; i < samples; i++) await one(firstPort + i, 50 + Math.random() * 150);
    }
  } finally {
    await holder.ask({ type: 'closeAll' }, 'closedAll');
    await agent.stop();
  }
  return latencies;
}

async function benchDetection(holder: Holder, quick: boolean): Promise<void> {
  const n = quick ? 10 : 40;
  const runs = [
    ['portstream.interval_excluded', events(readers.sock_diag(), { stableMs: 0 }), false, '<= 300 ms'],
    ['portstream.with_interval', events(readers.sock_diag(), {}), false, undefined],
    ['rancher_desktop', events(readers.proc_net(), { scanMs: rancher.scanMs, stableMs: rancher.stableMs }), true, undefined],
  ] as const;
  let port = 46_000;
  for (const [name, source, concurrent, target] of runs) {
    const samples = await detection(holder, source, port, concurrent ? Math.min(n, 12) : n, concurrent);
    port += 100;
    report({ name: `procnet.detect.${name}.p50`, value: round(percentile(samples, 50), 1), unit: 'ms', samples: samples.length, ...(target !== undefined && { target }) });
    report({ name: `procnet.detect.${name}.p99`, value: round(percentile(samples, 99), 1), unit: 'ms', samples: samples.length });
  }
}

function events(table: SocketTable, opts: Partial<ProcnetOptions>): Observable<SourceEvent> {
  return procnetEvents(table, { policy, logger: log, ...opts });
}

/** Every listener seen while `workload` runs: sampled every 10 ms, with how long each lived. */
async function lifetimes(workload: () => Promise<(() => Promise<void>) | undefined>): Promise<{ transient: number[]; standing: number }> {
  const table = readers.sock_diag();
  const own = ownSocketInodes();
  const seen = new Map<string, { first: number; last: number }>();
  const state = { running: true };
  const sampler = (async () => {
    while (state.running) {
      const now = performance.now();
      const sockets = table.read().decode();
      const mine = own(new Set(sockets.map((s) => s.inode)));
      for (const s of sockets) {
        if (mine.has(s.inode)) continue;
        const key = `${s.protocol}/${s.ip}:${String(s.port)}#${String(s.inode)}`;
        const entry = seen.get(key);
        if (entry) entry.last = now;
        else seen.set(key, { first: now, last: now });
      }
      await sleep(10);
    }
  })();
  const before = new Set(table.read().decode().map((s) => `${s.protocol}/${s.ip}:${String(s.port)}#${String(s.inode)}`));
  const cleanup = await workload();
  await sleep(200);
  state.running = false;
  await sampler;
  const after = new Set(table.read().decode().map((s) => `${s.protocol}/${s.ip}:${String(s.port)}#${String(s.inode)}`));
  await cleanup?.();
  const transient = [...seen].filter(([key]) => !before.has(key) && !after.has(key)).map(([, e]) => e.last - e.first);
  return { transient, standing: [...seen.keys()].filter((key) => !before.has(key) && after.has(key)).length };
}

function run(command: string, args: readonly string[]): Promise<void> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { stdio: 'ignore', cwd: new URL('..', import.meta.url).pathname });
    child.once('exit', () => {
      resolve();
    });
    child.once('error', () => {
      resolve();
    });
  });
}

export async function benchTransients(quick: boolean): Promise<void> {
  const workloads: [string, () => Promise<(() => Promise<void>) | undefined>][] = [
    // this repository's own socket-heavy tests that need no engine: servers, peers, fake API servers
    [
      'test_run',
      async () => {
        await run(process.execPath, ['--import', 'tsx', '--test', 'test/vtunnel.test.ts', 'test/hostswitch.test.ts', 'test/kubernetes.test.ts']);
        return undefined;
      },
    ],
    ['compose_up_like', () => composeLike(quick)],
  ];
  const intervals = [0, 100, 250, 500, 1000, 2000, 3000];
  for (const [name, workload] of workloads) {
    const { transient, standing } = await lifetimes(workload);
    for (const interval of intervals) {
      report({
        name: `procnet.transients.${name}.published_at_${String(interval)}ms`,
        value: transient.filter((life) => life >= interval).length,
        unit: 'listeners',
        transients: transient.length,
        standing,
        note: 'listeners that came and went during the workload and would still have been published',
      });
    }
    report({ name: `procnet.transients.${name}.lifetime.p50`, value: round(percentile(transient, 50), 1), unit: 'ms', samples: transient.length });
    report({ name: `procnet.transients.${name}.lifetime.max`, value: round(Math.max(0, ...transient), 1), unit: 'ms', samples: transient.length });
  }
}

/**
 * What `docker compose up` of a small stack does to the namespace: a host-network service and
 * two published ports (docker-proxy) that stay, and per round an init container that serves for
 * a moment and exits and a probe that listens briefly. The services that stay are removed only
 * after the measurement (they are not transients). Skipped without Docker.
 */
async function composeLike(quick: boolean): Promise<() => Promise<void>> {
  const names = ['ps-bench-db', 'ps-bench-web', 'ps-bench-api'];
  const cleanup = async (): Promise<void> => {
    await run('docker', ['rm', '-f', ...names]);
  };
  if (!(await dockerAnswers())) return cleanup;
  await ensureBusyboxImage();
  const detached = (name: string, ...args: string[]): Promise<void> => run('docker', ['run', '-d', '--label', testLabel, '--name', name, ...args]);
  const once = (...args: string[]): Promise<void> => run('docker', ['run', '--rm', '--label', testLabel, '--network', 'host', busyboxImage, ...args]);
  await Promise.all([
    detached(names[0]!, '--network', 'host', busyboxImage, 'httpd', '-f', '-p', '45101'),
    detached(names[1]!, '-p', '45104:80', busyboxImage, 'httpd', '-f', '-p', '80'),
    detached(names[2]!, '-p', '45105:80', busyboxImage, 'httpd', '-f', '-p', '80'),
  ]);
  for (let r = 0; r < (quick ? 1 : 5); r++) {
    await Promise.all([once('sh', '-c', 'httpd -p 45102; sleep 0.4'), once('sh', '-c', 'nc -l -p 45103 & sleep 0.8')]);
  }
  await sleep(1000);
  return cleanup;
}

/** Scan cost, idle CPU and detection, in the network namespace this process runs in. */
export async function benchProcnetHere(quick: boolean): Promise<void> {
  const holder = await socketHolder();
  try {
    // idle first: the 10k-socket scans leave garbage whose collection would land in its ticks
    await benchIdle(holder, quick);
    await benchDetection(holder, quick);
    await benchScanCost(holder, quick);
  } finally {
    holder.stop();
  }
}

/**
 * The whole host-network bench. Scan cost, idle CPU and detection run in a network namespace of
 * their own (made here, removed after), so that what other work on this machine opens and closes
 * neither wakes the source nor counts as its sockets; the transient listeners are counted in the
 * machine's own namespace, where the workloads run.
 */
export async function benchProcnet(quick: boolean): Promise<void> {
  const ns = `psbench-procnet-${String(process.pid)}`;
  const ip = (...args: string[]): Promise<number | null> =>
    new Promise((resolve) => {
      const child = spawn('ip', args, { stdio: 'ignore' });
      child.once('exit', resolve);
      child.once('error', () => {
        resolve(-1);
      });
    });
  if ((await ip('netns', 'add', ns)) !== 0) {
    process.stderr.write('bench: cannot make a network namespace (root and `ip` needed); skipping the host-network figures\n');
    return;
  }
  try {
    await ip('-n', ns, 'link', 'set', 'lo', 'up');
    await runIsolatedIn(['ip', 'netns', 'exec', ns], new URL('./procnetMain.ts', import.meta.url), quick ? ['--quick'] : []);
  } finally {
    await ip('netns', 'del', ns);
  }
  await benchTransients(quick);
}
