/**
 * The vtunnel sink in a process of its own, for `bench/vtunnelSink.ts`: deltas straight into the
 * sink (no agent pipeline), to the real TCP peer at 127.0.0.1:PORTSTREAM_BENCH_PEER_PORT.
 * `{type:'changes', forwards, changes}` publishes `forwards`, then times `changes` single changes
 * (alternately an add and its remove); `{type:'idle', settleMs, ms}` answers with the CPU used
 * over `ms` after `settleMs`.
 */
import { performance } from 'node:perf_hooks';
import { pino } from 'pino';
import { Subject } from 'rxjs';
import type { Forward, PortDelta } from '../src/model.js';
import type { SinkReport } from '../src/sinks/sink.js';
import { vtunnelSink } from '../src/sinks/vtunnel.js';
import type { SinkBenchReply } from './vtunnelSink.js';

const logger = pino({ level: 'warn' }, pino.destination(2));
const port = Number(process.env['PORTSTREAM_BENCH_PEER_PORT']);
if (!Number.isInteger(port) || port <= 0) throw new Error('set PORTSTREAM_BENCH_PEER_PORT');

const deltas = new Subject<PortDelta>();
const stop = new Subject<void>();
let wake: ((report: SinkReport) => void) | undefined;
let resent = 0;
deltas
  .pipe(vtunnelSink({ address: `127.0.0.1:${String(port)}`, connectAddrs: [{ network: 'ip+net', addr: '172.26.112.5/20' }], logger }))
  .subscribe((report) => {
    if (report.type === 'resent') resent += 1;
    wake?.(report);
  });

const forward = (i: number): Forward => ({
  protocol: i % 2 === 0 ? 'tcp' : 'udp',
  hostIp: `10.${String((i >> 16) & 255)}.${String((i >> 8) & 255)}.${String(i & 255)}`,
  hostPort: 1024 + (i % 60_000),
  containerPort: 80,
  source: 'bench',
  owner: `o${String(i)}`,
});

/** Pushes `delta` and resolves with [sync ms, ms until the `wrote` report]. */
function change(delta: PortDelta): Promise<[number, number]> {
  return new Promise((resolve) => {
    let syncMs = 0;
    const t0 = performance.now();
    wake = (report) => {
      if (report.type !== 'wrote') return;
      wake = undefined;
      resolve([syncMs, performance.now() - t0]);
    };
    deltas.next(delta);
    syncMs = performance.now() - t0;
  });
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

process.on('message', (message: { type: 'changes'; forwards: number; changes: number } | { type: 'idle'; settleMs: number; ms: number } | { type: 'stop' }) => {
  void (async () => {
    if (message.type === 'changes') {
      await change({ added: Array.from({ length: message.forwards }, (_, i) => forward(i)), removed: [] });
      const syncMs: number[] = [];
      const wroteMs: number[] = [];
      for (let i = 0; i < message.changes; i++) {
        const f = forward(message.forwards + 1 + (i >> 1));
        const [s, w] = await change(i % 2 === 0 ? { added: [f], removed: [] } : { added: [], removed: [f] });
        syncMs.push(s);
        wroteMs.push(w);
      }
      process.send?.({ type: 'changes', syncMs, wroteMs } satisfies SinkBenchReply);
    } else if (message.type === 'idle') {
      await sleep(message.settleMs);
      const before = process.cpuUsage();
      const resentBefore = resent;
      await sleep(message.ms);
      const used = process.cpuUsage(before);
      process.send?.({ type: 'idle', cpuMicros: used.user + used.system, ms: message.ms, resent: resent - resentBefore } satisfies SinkBenchReply);
    } else {
      stop.next();
      deltas.complete();
      await sleep(200);
      process.disconnect();
      process.exit(0);
    }
  })();
});
process.send?.({ type: 'ready' } satisfies SinkBenchReply);
