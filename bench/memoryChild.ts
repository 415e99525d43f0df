/**
 * The agent pipeline alone, in a process of its own, for `bench/memory.ts`: a synthetic source
 * through createAgent (toPortDeltas, the merge, the coalescer) and the real vtunnel sink (to the
 * peer at 127.0.0.1:PORTSTREAM_BENCH_PEER_PORT, in the parent, that reads and drops each message).
 * Forked with --expose-gc and an IPC channel: `{type:'set', forwards}` publishes that many forwards (10 per owner) and answers with
 * the memory after GC; `{type:'idle', settleMs, ms}` waits `settleMs` (start-up compilation and
 * the sweep after the last set are not idleness), then answers with the CPU used over `ms`. The
 * idle CPU includes the sink's periodic re-send of the whole state.
 */
import { Subject } from 'rxjs';
import { createAgent } from '../src/agent.js';
import { snapshot, type Forward, type SourceEvent } from '../src/model.js';
import { vtunnelSink } from '../src/sinks/vtunnel.js';

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error('run with --expose-gc');

const port = Number(process.env['PORTSTREAM_BENCH_PEER_PORT']);
if (!Number.isInteger(port) || port <= 0) throw new Error('set PORTSTREAM_BENCH_PEER_PORT');

const events = new Subject<SourceEvent>();
const stop = new Subject<void>();
let written = 0;
createAgent(
  { sources: { synthetic: events }, routes: [{ sink: vtunnelSink({ address: `127.0.0.1:${String(port)}`, connectAddrs: [] }), sources: ['synthetic'] }] },
  stop,
).subscribe((report) => {
  if (report.type === 'wrote') written += report.added.length - report.removed.length;
});

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function owners(forwards: number): [string, Forward[]][] {
  return Array.from({ length: Math.ceil(forwards / 10) }, (_, o) => [
    `owner${String(o)}`,
    Array.from({ length: Math.min(10, forwards - o * 10) }, (_, i) => ({
      protocol: 'tcp' as const,
      hostIp: `10.${String(o >> 8)}.${String(o & 255)}.1`,
      hostPort: 1000 + i,
      source: 'synthetic',
      owner: `owner${String(o)}`,
    })),
  ]);
}

process.on('message', (message: { type: 'set'; forwards: number } | { type: 'idle'; settleMs: number; ms: number } | { type: 'stop' }) => {
  void (async () => {
    if (message.type === 'set') {
      events.next(snapshot(owners(message.forwards)));
      while (written !== message.forwards) await sleep(10);
      await sleep(100);
      gc();
      gc();
      const { rss, heapUsed } = process.memoryUsage();
      process.send?.({ type: 'memory', forwards: message.forwards, rss, heapUsed });
    } else if (message.type === 'idle') {
      await sleep(message.settleMs);
      const before = process.cpuUsage();
      await sleep(message.ms);
      const used = process.cpuUsage(before);
      process.send?.({ type: 'idle', cpuMicros: used.user + used.system, ms: message.ms });
    } else {
      stop.next();
      process.disconnect();
    }
  })();
});
process.send?.({ type: 'ready' });
