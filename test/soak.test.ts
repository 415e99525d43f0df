/**
 * A bounded soak (issue 7): nothing grows while containers and rules come and go.
 *
 * 1. The REAL agent (`node --expose-gc --import tsx src/main.ts -docker -privilegedService
 *    -iptables=false -vtunnelAddr 127.0.0.1:PORT -connectInterface lo`, plus a test-only preload,
 *    soakProbe.ts, that answers SIGUSR2 with its memory after a full GC) against the real dockerd
 *    and the strict vtunnel receiver. After a warm-up, the agent's open file descriptors, sockets,
 *    listening sockets, RSS and heap are sampled (the baseline); then `PORTSTREAM_SOAK_CYCLES`
 *    containers (default 40, ~10 s; **1000 is the full soak**) are started with a published port
 *    and removed, `parallel` at a time, each one seen published and then withdrawn by the
 *    receiver. After settling: file descriptors within +2 of the baseline, listening sockets not
 *    above it, heap (used, after GC) within +5 MB; the receiver holds none of this test's ports and
 *    nothing that `docker ps` does not show, and saw no violation of the wire contract. RSS is
 *    reported, not asserted (the allocator and JIT code do not give memory back on cue).
 *
 * 2. The same in listener mode (`src/main.ts -iptables`), where the agent itself holds a socket
 *    per port: as many CNI-style DNAT rules, added and removed `parallel` at a time in one
 *    iptables-restore each, every placeholder seen open and then closed in /proc; the same
 *    margins, and no chain of the test left.
 *
 * 3. The pipeline alone, in this process (toPortSet → diffPortSets → mergeDeltas' ref-counting
 *    → coalesceDeltas, two sources whose ports collide), fed 100,000 synthetic start and stop
 *    events in virtual time: the published set always equals the truth, ends empty, and the heap
 *    after GC at the end is within +4 MB of the heap after the first 10,000 events.
 *
 * The measured figures are printed with `t.diagnostic`. The views are compared with the truth
 * only on this file's host ports (24000-24199, below Linux's ephemeral range, so no outgoing
 * connection can hold one), and containers carry a label unique to this run as well as the test
 * label.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { test, type TestContext } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Subject, VirtualTimeScheduler } from 'rxjs';
import { coalesceDeltas } from '../operators/coalesceDeltas.js';
import { diffPortSets } from '../operators/diffPortSets.js';
import { mergeDeltas } from '../operators/mergeDeltas.js';
import { toPortSet } from '../operators/toPortSet.js';
import { portKey, remove, upsert, type Forward, type PortDelta, type PortKey, type SourceEvent } from '../src/model.js';
import {
  alive,
  busyboxImage,
  docker,
  dockerNeeds,
  dockerPsPortKeys,
  engineTest,
  ensureBusyboxImage,
  ensureDockerd,
  sleep,
  sorted,
  TestContainers,
  waitFor,
} from './engines.js';
import { NatChains, ownChainsLeft, ownListeningKeys, restore } from './iptablesHarness.js';
import { startReceiver } from './vtunnelReceiver.js';

/** How many containers to start and remove; 1000 is the full soak. */
const cycles = Number(process.env['PORTSTREAM_SOAK_CYCLES'] ?? 40);
/** Containers started (and removed) at once in one round. */
const parallel = 8;
/** This file's host ports: each round of containers uses firstPort .. firstPort + parallel - 1. */
const firstPort = 24000;
/** And each round of DNAT rules rulePort .. rulePort + parallel - 1. */
const rulePort = 24100;
/** The margins the end state must be within. */
const fdMargin = 2;
const heapMarginBytes = 5 * 2 ** 20;

const main = new URL('../src/main.ts', import.meta.url).pathname;
const probe = new URL('./soakProbe.ts', import.meta.url).pathname;
const mb = (bytes: number): string => `${(bytes / 2 ** 20).toFixed(1)} MB`;

interface Sample {
  /** Open file descriptors. */
  readonly fds: number;
  /** Of those, sockets. */
  readonly sockets: number;
  /** Of those, TCP sockets in LISTEN and bound UDP sockets. */
  readonly listeners: number;
  readonly rssBytes: number;
  /** heapUsed after a full GC, from the preload. */
  readonly heapUsed: number;
}

/** Socket inodes of listening TCP (state 0A) and all UDP sockets in the agent's network namespace. */
function listeningInodes(pid: number): Set<string> {
  const inodes = new Set<string>();
  for (const [table, listenOnly] of [['tcp', true], ['tcp6', true], ['udp', false], ['udp6', false]] as const) {
    let text: string;
    try {
      text = readFileSync(`/proc/${String(pid)}/net/${table}`, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const fields = line.trim().split(/\s+/);
      if (fields.length < 10) continue;
      if (listenOnly && fields[3] !== '0A') continue;
      inodes.add(fields[9]!);
    }
  }
  return inodes;
}

function fdCounts(pid: number): { fds: number; sockets: number; listeners: number } {
  const dir = `/proc/${String(pid)}/fd`;
  const listening = listeningInodes(pid);
  let fds = 0;
  let sockets = 0;
  let listeners = 0;
  for (const fd of readdirSync(dir)) {
    let link: string;
    try {
      link = readlinkSync(join(dir, fd));
    } catch {
      continue; // closed while we looked
    }
    fds++;
    const socket = /^socket:\[(\d+)\]$/.exec(link);
    if (socket) {
      sockets++;
      if (listening.has(socket[1]!)) listeners++;
    }
  }
  return { fds, sockets, listeners };
}

/** What each open file descriptor is, for a failure message. */
function fdLinks(pid: number): string[] {
  const dir = `/proc/${String(pid)}/fd`;
  return readdirSync(dir).map((fd) => {
    try {
      return `${fd}→${readlinkSync(join(dir, fd))}`;
    } catch {
      return `${fd}→?`;
    }
  });
}

function rssBytes(pid: number): number {
  const kb = /VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${String(pid)}/status`, 'utf8'))?.[1];
  if (kb === undefined) throw new Error(`no VmRSS for pid ${String(pid)}`);
  return Number(kb) * 1024;
}

const describeSample = (s: Sample): string =>
  `fds ${String(s.fds)} (sockets ${String(s.sockets)}, listeners ${String(s.listeners)}), RSS ${mb(s.rssBytes)}, heapUsed after GC ${mb(s.heapUsed)}`;

/** The real agent as a child process with the memory probe preloaded; killed in `t.after` if still running. */
interface ProbedAgent {
  readonly pid: number;
  /** Its file descriptors, listeners, RSS and heap after GC, now. */
  sample(): Promise<Sample>;
  /** The end of its stderr, for failure messages. */
  tail(): string;
  /** Fails the test if the agent has exited. */
  assertRunning(): void;
  /** SIGTERM, then how it exited. */
  stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

async function startProbedAgent(t: TestContext, args: readonly string[]): Promise<ProbedAgent> {
  const dir = await mkdtemp(join(tmpdir(), 'portstream-soak-'));
  const probeFile = join(dir, 'memory.json');
  const child = spawn(process.execPath, ['--expose-gc', '--import', 'tsx', '--import', probe, main, ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, PORTSTREAM_SOAK_PROBE: probeFile },
  });
  assert.ok(child.pid !== undefined, 'the agent did not start');
  const pid = child.pid;
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
    if (stderr.length > 2 * 2 ** 20) stderr = stderr.slice(-(2 ** 20));
  });
  let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  const exited = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      exit = { code, signal };
      resolve();
    });
  });
  const tail = (): string => `--- agent stderr (tail) ---\n${stderr.trimEnd().split('\n').slice(-20).join('\n')}`;
  t.after(async () => {
    if (exit === undefined && alive(pid)) child.kill('SIGKILL');
    await exited;
    await rm(dir, { recursive: true, force: true });
  });

  let probed = 0;
  const heapUsed = async (): Promise<number> => {
    const want = probed + 1;
    child.kill('SIGUSR2');
    let usage: { sequence: number; gc: boolean; heapUsed: number } | undefined;
    await waitFor(
      () => {
        if (exit !== undefined) throw new Error(`the agent exited (${JSON.stringify(exit)})`);
        if (!existsSync(probeFile)) return false;
        usage = JSON.parse(readFileSync(probeFile, 'utf8')) as { sequence: number; gc: boolean; heapUsed: number };
        return usage.sequence >= want;
      },
      10_000,
      () => `the agent's memory probe (SIGUSR2 → ${probeFile})\n${tail()}`,
    );
    probed = usage!.sequence;
    assert.ok(usage!.gc, 'the agent runs without --expose-gc: heapUsed would not be after GC');
    return usage!.heapUsed;
  };
  return {
    pid,
    sample: async () => ({ ...fdCounts(pid), rssBytes: rssBytes(pid), heapUsed: await heapUsed() }),
    tail,
    assertRunning: () => {
      if (exit !== undefined) assert.fail(`the agent exited during the soak (${JSON.stringify(exit)})\n${tail()}`);
    },
    stop: async () => {
      child.kill('SIGTERM');
      await exited;
      return exit!;
    },
  };
}

/**
 * Warms `agent` up with two rounds, samples the baseline, runs `cycles` cycles `parallel` at a
 * time (`round(count)` starts `count` things, sees them published, removes them, sees them
 * withdrawn), lets it settle, and holds the end sample to the baseline within the margins.
 */
async function soak(t: TestContext, what: string, agent: ProbedAgent, round: (count: number) => Promise<void>): Promise<void> {
  const warmUpRounds = 2;
  for (let i = 0; i < warmUpRounds; i++) await round(parallel);
  // dockerode's keep-alive sockets to the engine close after 5 s idle: let them, then measure
  await sleep(6_000);
  const baseline = await agent.sample();
  t.diagnostic(`baseline (after warm-up of ${String(warmUpRounds * parallel)} ${what}): ${describeSample(baseline)}`);

  const started = performance.now();
  let done = 0;
  while (done < cycles) {
    const count = Math.min(parallel, cycles - done);
    await round(count);
    done += count;
    agent.assertRunning();
  }
  t.diagnostic(`${String(cycles)} ${what} added and removed (${String(parallel)} at a time) in ${((performance.now() - started) / 1000).toFixed(1)} s`);

  // settle: keep-alive sockets close (5 s), the heap is collected; sample until the figures are
  // back at the baseline (a real leak never gets there) or 15 s have passed, then hold them to
  // their margins
  const settleStart = performance.now();
  let end = await agent.sample();
  const settled = (x: Sample): boolean => x.fds <= baseline.fds && x.listeners <= baseline.listeners && x.heapUsed <= baseline.heapUsed + heapMarginBytes;
  while (!settled(end) && performance.now() - settleStart < 15_000) {
    await sleep(1_000);
    end = await agent.sample();
  }
  t.diagnostic(`end (after settling ${((performance.now() - settleStart) / 1000).toFixed(1)} s): ${describeSample(end)}`);
  t.diagnostic(
    `change: fds ${end.fds - baseline.fds >= 0 ? '+' : ''}${String(end.fds - baseline.fds)} (margin +${String(fdMargin)}), listeners ${String(end.listeners - baseline.listeners)}, ` +
      `RSS ${end.rssBytes >= baseline.rssBytes ? '+' : ''}${mb(end.rssBytes - baseline.rssBytes)} (reported only), heapUsed ${end.heapUsed >= baseline.heapUsed ? '+' : ''}${mb(end.heapUsed - baseline.heapUsed)} (margin +${mb(heapMarginBytes)})`,
  );
  assert.ok(end.fds <= baseline.fds + fdMargin, `file descriptors grew: ${String(baseline.fds)} → ${String(end.fds)}: ${fdLinks(agent.pid).join(' ')}`);
  assert.ok(end.listeners <= baseline.listeners, `listening sockets grew: ${String(baseline.listeners)} → ${String(end.listeners)}`);
  assert.ok(end.heapUsed <= baseline.heapUsed + heapMarginBytes, `heap grew: ${mb(baseline.heapUsed)} → ${mb(end.heapUsed)}`);
}

engineTest(
  `soak: the real agent through ${String(cycles)} docker run -p / rm -f cycles; fds, listeners and heap return to baseline`,
  { needs: dockerNeeds, timeout: 180_000 + cycles * 3_000 },
  async (t) => {
    await ensureDockerd();
    await ensureBusyboxImage();
    const runLabel = `portstream-soak=${randomBytes(6).toString('hex')}`;
    const containers = new TestContainers();
    const receiver = await startReceiver();
    t.after(async () => {
      await containers.removeAll();
      // and whatever a failed round left: a docker run that failed still created its container
      const left = (await docker('ps', '-aq', '--filter', `label=${runLabel}`)).split('\n').filter((id) => id !== '');
      if (left.length > 0) await docker('rm', '-f', ...left);
      await receiver.close();
    });
    const agent = await startProbedAgent(t, ['-docker', '-privilegedService', '-iptables=false', '-procnet=false', '-vtunnelAddr', `127.0.0.1:${String(receiver.port)}`, '-connectInterface', 'lo']);

    const mine = (key: string): boolean => {
      const port = Number(/:(\d+)$/.exec(key)?.[1]);
      return port >= firstPort && port < firstPort + 100;
    };
    const view = (): string => JSON.stringify(sorted(receiver.view.keys()));

    await soak(t, 'containers', agent, async (count) => {
      const ports = Array.from({ length: count }, (_, i) => firstPort + i);
      // every run settles before a failure is reported, so none is still starting during clean-up
      const runs = await Promise.allSettled(ports.map((port) => containers.run('--label', runLabel, '-p', `${String(port)}:80`, busyboxImage, 'sleep', '3600')));
      for (const run of runs) if (run.status === 'rejected') throw run.reason;
      await waitFor(
        () => ports.every((port) => receiver.view.has(`tcp/0.0.0.0:${String(port)}`)),
        20_000,
        () => `ports ${ports.join(', ')} to be published; the receiver holds ${view()}\n${agent.tail()}`,
      );
      await containers.removeAll();
      await waitFor(
        () => ![...receiver.view.keys()].some(mine),
        20_000,
        () => `ports ${ports.join(', ')} to be withdrawn; the receiver holds ${view()}\n${agent.tail()}`,
      );
    });

    t.diagnostic(`receiver: ${String(receiver.lines.length)} messages, ${String(receiver.violations.length)} violations`);
    assert.deepEqual(receiver.violations, [], 'the receiver saw messages off the wire contract');
    assert.deepEqual(sorted([...receiver.view.keys()].filter(mine)), [], 'ports of this test are still forwarded after their containers are gone');
    // nothing leaked on other ports either: whatever the receiver holds, a running container publishes
    await waitFor(
      async () => {
        const truth = await dockerPsPortKeys();
        return [...receiver.view.keys()].every((key) => truth.has(key.replace(/^(tcp|udp)\/(.*):(\d+)$/, (_, p: string, ip: string, port: string) => portKey({ protocol: p as 'tcp' | 'udp', hostIp: ip, hostPort: Number(port) }))));
      },
      10_000,
      async () => `the receiver's view ${view()} to hold only what docker ps shows (${JSON.stringify(sorted(await dockerPsPortKeys()))})`,
    );
    // and no container of this run is left behind
    assert.equal((await docker('ps', '-aq', '--filter', `label=${runLabel}`)).trim(), '', 'containers of this run are left');
    // and the agent still shuts down cleanly
    assert.deepEqual(await agent.stop(), { code: 0, signal: null }, agent.tail());
  },
);

engineTest(
  `soak: the real agent in listener mode through ${String(cycles)} CNI DNAT rules added and removed; its placeholders, fds and heap return to baseline`,
  { needs: ['root', 'iptables'], timeout: 180_000 + cycles * 3_000 },
  async (t) => {
    const chains = new NatChains();
    t.after(() => chains.removeAll());
    const agent = await startProbedAgent(t, ['-iptables']);
    // its placeholders on this test's ports, from /proc: TCP listening, UDP bound
    const ports = (p: number): boolean => p >= rulePort && p < rulePort + 100;
    const held = (): string[] => sorted(ownListeningKeys(ports, agent.pid));

    await soak(t, 'rules', agent, async (count) => {
      const rules = Array.from({ length: count }, (_, i) => {
        const protocol = i % 2 === 0 ? 'tcp' : 'udp';
        return [`-p ${protocol} -m ${protocol} --dport ${String(rulePort + i)} -j DNAT --to-destination 10.213.0.2:80`];
      });
      const expected = sorted(rules.map((_, i) => `${i % 2 === 0 ? 'tcp' : 'udp'}/0.0.0.0:${String(rulePort + i)}`));
      const { text } = await chains.batch('ipv4', rules);
      await restore('ipv4', text);
      await waitFor(
        () => held().join(' ') === expected.join(' '),
        20_000,
        () => `placeholders ${expected.join(' ')}; the agent holds ${held().join(' ')}\n${agent.tail()}`,
      );
      await chains.removeAll();
      await waitFor(() => held().length === 0, 20_000, () => `the placeholders to close; the agent holds ${held().join(' ')}\n${agent.tail()}`);
    });

    assert.deepEqual(await ownChainsLeft(), [], 'chains of this test are left');
    assert.deepEqual(await agent.stop(), { code: 0, signal: null }, agent.tail());
  },
);

// ---------------------------------------------------------------------------------------------
// The pipeline alone

/** `gc()` without --expose-gc on the command line (node --test starts this file's process). */
function exposeGc(): () => void {
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
}

test('soak: the pipeline through 100,000 synthetic start/stop events ends empty, and its heap does not grow', (t: TestContext) => {
  const events = 100_000;
  const gc = exposeGc();
  const heap = (): number => {
    gc();
    gc();
    return process.memoryUsage().heapUsed;
  };

  const scheduler = new VirtualTimeScheduler();
  const sourceNames = ['docker', 'containerd'] as const;
  const inputs = new Map(sourceNames.map((name) => [name, new Subject<SourceEvent>()] as const));
  const published = new Map<PortKey, Forward>();
  let writes = 0;
  let failure: Error | undefined;
  const subscription = mergeDeltas(...[...inputs.values()].map((events$) => events$.pipe(toPortSet(), diffPortSets())))
    .pipe(coalesceDeltas(50, scheduler, 1_000))
    .subscribe((delta: PortDelta) => {
      writes++;
      try {
        for (const f of delta.removed) if (!published.delete(portKey(f))) throw new Error(`removed ${portKey(f)}, which was not published`);
        for (const f of delta.added) {
          if (published.has(portKey(f))) throw new Error(`added ${portKey(f)} twice`);
          published.set(portKey(f), f);
        }
      } catch (error) {
        failure ??= error instanceof Error ? error : new Error('a non-Error was thrown', { cause: error });
      }
    });

  // the truth: per source, the live owners and their forwards
  const live = new Map(sourceNames.map((name) => [name, new Map<string, Forward[]>()] as const));
  const truth = (): PortKey[] => sorted(new Set([...live.values()].flatMap((owners) => [...owners.values()].flat().map(portKey))));
  // a small deterministic generator (mulberry32), so a failure can be reproduced
  let seed = 7;
  const random = (n: number): number => {
    seed = (seed + 0x6d2b79f5) | 0;
    let x = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return Math.floor((((x ^ (x >>> 14)) >>> 0) / 2 ** 32) * n);
  };
  let nextOwner = 0;
  const step = (): void => {
    const name = sourceNames[random(2)]!;
    const owners = live.get(name)!;
    if (owners.size > 0 && (owners.size >= 64 || random(3) === 0)) {
      // stop one of the live owners
      const victims = [...owners.keys()];
      const owner = victims[random(victims.length)]!;
      owners.delete(owner);
      inputs.get(name)!.next(remove(owner));
    } else {
      // start a new owner with one or two ports from a small pool, so sources and owners collide
      const owner = `${name}-${String(nextOwner++)}`;
      const forwards: Forward[] = Array.from({ length: 1 + random(2) }, () => ({
        protocol: random(4) === 0 ? 'udp' : 'tcp',
        hostIp: random(3) === 0 ? '::' : '0.0.0.0',
        hostPort: 1000 + random(200),
        source: name,
        owner,
      }));
      owners.set(owner, forwards);
      inputs.get(name)!.next(upsert(owner, forwards));
    }
  };
  const check = (at: number): void => {
    scheduler.flush(); // close every open window
    if (failure !== undefined) throw failure;
    assert.deepEqual(sorted(published.keys()), truth(), `after ${String(at)} events`);
  };

  let baseline = 0;
  const started = performance.now();
  for (let i = 1; i <= events; i++) {
    step();
    // now and then time passes until every window has closed, so bursts of every length occur
    if (random(16) === 0) scheduler.flush();
    if (i % 1_000 === 0) check(i);
    if (i === 10_000) baseline = heap();
  }
  // every owner stops: nothing stays published
  for (const name of sourceNames) for (const owner of [...live.get(name)!.keys()]) {
    live.get(name)!.delete(owner);
    inputs.get(name)!.next(remove(owner));
  }
  check(events);
  assert.equal(published.size, 0);
  const end = heap();
  const ms = performance.now() - started;
  subscription.unsubscribe();
  t.diagnostic(
    `${String(events)} events in ${(ms / 1000).toFixed(1)} s, ${String(writes)} coalesced writes; heapUsed after GC: ${mb(baseline)} after 10,000 events, ${mb(end)} at the end (${end >= baseline ? '+' : ''}${mb(end - baseline)}, margin +4 MB)`,
  );
  assert.ok(end <= baseline + 4 * 2 ** 20, `the heap grew from ${mb(baseline)} to ${mb(end)}`);
});
