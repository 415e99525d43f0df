/**
 * Agent memory at 0, 2,000 and 10,000 forwards (the pipeline and the vtunnel sink, RSS and heap
 * after GC, in a process of its own), its idle CPU holding 10,000 forwards, and the idle CPU of
 * the real agent process watching Docker, containerd and iptables with nothing happening.
 */
import { fork, spawn } from 'node:child_process';
import net from 'node:net';
import { existsSync, readFileSync } from 'node:fs';
import { sleep } from './harness.js';
import { report, round } from './stats.js';
import { dockerAnswers } from '../test/engines.js';
import { startReceiver } from './receiver.js';

type Reply = { type: 'ready' } | { type: 'memory'; forwards: number; rss: number; heapUsed: number } | { type: 'idle'; cpuMicros: number; ms: number };

export async function benchMemory(quick: boolean): Promise<void> {
  // The vtunnel peer, here rather than in the child: its reading is the host's work, not the agent's.
  const peer = net.createServer((socket) => {
    socket.resume();
    socket.on('end', () => socket.end());
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => peer.listen(0, '127.0.0.1', resolve));
  const child = fork(new URL('./memoryChild.ts', import.meta.url).pathname, [], {
    execArgv: ['--expose-gc', '--import', 'tsx'],
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
    env: { ...process.env, PORTSTREAM_BENCH_PEER_PORT: String((peer.address() as net.AddressInfo).port) },
  });
  const replies: Reply[] = [];
  let wake: (() => void) | undefined;
  child.on('message', (m: Reply) => {
    replies.push(m);
    wake?.();
  });
  const next = async <T extends Reply['type']>(type: T): Promise<Extract<Reply, { type: T }>> => {
    for (;;) {
      const i = replies.findIndex((r) => r.type === type);
      if (i >= 0) return replies.splice(i, 1)[0] as Extract<Reply, { type: T }>;
      await new Promise<void>((resolve) => (wake = resolve));
    }
  };
  await next('ready');
  for (const forwards of [0, 2_000, 10_000]) {
    child.send({ type: 'set', forwards });
    const m = await next('memory');
    report({ name: `agent.rss.${String(forwards)}`, value: round(m.rss / 2 ** 20, 1), unit: 'MB', forwards, ...(forwards === 2000 && { target: '<= 150 MB' }) });
    report({ name: `agent.heap.${String(forwards)}`, value: round(m.heapUsed / 2 ** 20, 1), unit: 'MB', forwards, note: 'heapUsed after GC' });
  }
  const idleMs = quick ? 3_000 : 10_000;
  // A fresh process compiles and sweeps for some 15 s after its start; that is not idleness.
  child.send({ type: 'idle', settleMs: quick ? 3_000 : 20_000, ms: idleMs });
  const idle = await next('idle');
  report({
    name: 'agent.idle_cpu.pipeline_10000',
    value: round((idle.cpuMicros / 1000 / idle.ms) * 100, 3),
    unit: '% of a core',
    over_ms: idleMs,
    target: '<= 1 %',
    note: 'includes the vtunnel re-send of all 10,000 forwards every 3 s',
  });
  child.send({ type: 'stop' });
  await new Promise((resolve) => child.once('exit', resolve));
  peer.close();

  await benchIdleAgentProcess(idleMs, quick ? 5_000 : 20_000);
}

/** The real agent process (`src/main.ts`), idle: CPU from /proc/PID/stat over `ms`. */
async function benchIdleAgentProcess(ms: number, settleMs: number): Promise<void> {
  const receiver = await startReceiver();
  const args = ['-privilegedService', '-vtunnelAddr', `127.0.0.1:${String(receiver.port)}`, '-connectInterface', 'lo'];
  if (await dockerAnswers()) args.push('-docker');
  if (existsSync('/run/containerd/containerd.sock')) args.push('-containerd', '-containerdSock', '/run/containerd/containerd.sock');
  const agent = spawn(process.execPath, ['--import', 'tsx', new URL('../src/main.ts', import.meta.url).pathname, ...args], { stdio: 'ignore' });
  try {
    await sleep(settleMs); // start-up, first lists, the iptables monitor, the compiler's late work
    const ticks = (): number => {
      const fields = readFileSync(`/proc/${String(agent.pid)}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
      return Number(fields[11]) + Number(fields[12]); // utime + stime, in clock ticks (100 Hz)
    };
    const before = ticks();
    await sleep(ms);
    const used = ((ticks() - before) * 10) / ms; // ticks of 10 ms → fraction of the interval
    const rss = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${String(agent.pid)}/status`, 'utf8'))?.[1] ?? Number.NaN) / 1024;
    report({ name: 'agent.idle_cpu.process', value: round(used * 100, 3), unit: '% of a core', over_ms: ms, flags: args.filter((a) => a.startsWith('-') && !a.includes('Addr') && !a.includes('Sock') && a !== '-connectInterface').join(' ') + ' (iptables on by default)', target: '<= 1 %' });
    report({ name: 'agent.rss.process_idle', value: round(rss, 1), unit: 'MB', note: 'the CLI agent under tsx, idle, after start-up' });
  } finally {
    agent.kill('SIGTERM');
    await new Promise((resolve) => agent.once('exit', resolve));
    await receiver.close();
  }
}
