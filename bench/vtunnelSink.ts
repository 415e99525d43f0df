/**
 * The vtunnel sink alone, holding 10,000 forwards, against a real TCP peer: what one change costs
 * it (the synchronous work on the delta, and the time until the peer has closed the connection
 * that carried it), and its idle CPU, which is the re-send of the whole state every 3 s. The sink
 * runs in a process of its own (`vtunnelSinkChild.ts`) so that its CPU is not the peer's: the
 * peer, here, reads every message to its end and closes, as the host side does.
 *
 * Alone: `node --import tsx bench/vtunnelSink.ts [--quick]`; `npm run bench` runs it too.
 */
import { fork } from 'node:child_process';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { report, round } from './stats.js';

export type SinkBenchReply =
  | { readonly type: 'ready' }
  | { readonly type: 'changes'; readonly syncMs: readonly number[]; readonly wroteMs: readonly number[] }
  | { readonly type: 'idle'; readonly cpuMicros: number; readonly ms: number; readonly resent: number };

export async function benchVtunnelSink(quick: boolean): Promise<void> {
  let messages = 0;
  const peer = net.createServer((socket) => {
    socket.resume();
    socket.on('end', () => {
      messages += 1;
      socket.end();
    });
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => peer.listen(0, '127.0.0.1', resolve));
  const child = fork(fileURLToPath(new URL('./vtunnelSinkChild.ts', import.meta.url)), [], {
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
    env: { ...process.env, PORTSTREAM_BENCH_PEER_PORT: String((peer.address() as net.AddressInfo).port) },
  });
  const replies: SinkBenchReply[] = [];
  let wake: (() => void) | undefined;
  child.on('message', (m: SinkBenchReply) => {
    replies.push(m);
    wake?.();
  });
  const next = async <T extends SinkBenchReply['type']>(type: T): Promise<Extract<SinkBenchReply, { type: T }>> => {
    for (;;) {
      const i = replies.findIndex((r) => r.type === type);
      if (i >= 0) return replies.splice(i, 1)[0] as Extract<SinkBenchReply, { type: T }>;
      await new Promise<void>((resolve) => (wake = resolve));
    }
  };
  try {
    await next('ready');
    child.send({ type: 'changes', forwards: 10_000, changes: quick ? 200 : 1_000 });
    const changes = await next('changes');
    const p = (xs: readonly number[], q: number): number => round([...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.ceil((q / 100) * xs.length) - 1)]!, 4);
    const note = 'one add or remove while the sink holds 10,000 forwards';
    report({ name: 'vtunnel_sink.change_sync.p50', value: p(changes.syncMs, 50), unit: 'ms', samples: changes.syncMs.length, note: `${note}: the sink's synchronous work on the delta` });
    report({ name: 'vtunnel_sink.change_sync.p99', value: p(changes.syncMs, 99), unit: 'ms', samples: changes.syncMs.length });
    report({ name: 'vtunnel_sink.change_to_wrote.p50', value: p(changes.wroteMs, 50), unit: 'ms', samples: changes.wroteMs.length, note: `${note}: delta → the real TCP peer has read it and closed` });
    report({ name: 'vtunnel_sink.change_to_wrote.p99', value: p(changes.wroteMs, 99), unit: 'ms', samples: changes.wroteMs.length });
    const idleMs = quick ? 6_000 : 15_000;
    child.send({ type: 'idle', settleMs: quick ? 3_000 : 10_000, ms: idleMs });
    const idle = await next('idle');
    report({
      name: 'vtunnel_sink.idle_cpu.10000',
      value: round((idle.cpuMicros / 1000 / idle.ms) * 100, 3),
      unit: '% of a core',
      over_ms: idleMs,
      resent: idle.resent,
      target: '<= 1 %',
      note: 'the sink process alone holding 10,000 forwards: the re-send of all of them every 3 s',
    });
  } finally {
    child.send({ type: 'stop' });
    await new Promise((resolve) => child.once('exit', resolve));
    peer.close();
  }
  if (messages === 0) process.stderr.write('bench: the vtunnel sink sent the peer nothing\n');
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { printSummary } = await import('./stats.js');
  await benchVtunnelSink(process.argv.includes('--quick'));
  printSummary();
}
