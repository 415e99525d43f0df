import { performance } from 'node:perf_hooks';
import { Subject, type Observable } from 'rxjs';
import { createAgent } from '../src/agent.js';
import type { SourceEvent } from '../src/model.js';
import { vtunnelSink } from '../src/sinks/vtunnel.js';
import { startReceiver, type Received } from './receiver.js';

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Tries every `intervalMs` until `check` holds: the time it took, or undefined after `timeoutMs`. */
export async function until(check: () => boolean | Promise<boolean>, timeoutMs: number, intervalMs = 1): Promise<number | undefined> {
  const start = performance.now();
  for (;;) {
    if (await check()) return performance.now() - start;
    if (performance.now() - start > timeoutMs) return undefined;
    await sleep(intervalMs);
  }
}

/**
 * The agent as the latency benches measure it: one source through the whole pipeline to the
 * real vtunnel sink, whose peer stamps each message on arrival. The sink's periodic re-send of
 * its whole state is off here: it would count as writes of a burst that lasts longer than its
 * interval (its cost is in the idle CPU figure instead).
 */
export async function runVtunnelAgent(
  name: string,
  events: Observable<SourceEvent>,
): Promise<{ messages: Received[]; stop: () => Promise<void> }> {
  const receiver = await startReceiver();
  const stop$ = new Subject<void>();
  let done!: () => void;
  const finished = new Promise<void>((resolve) => (done = resolve));
  createAgent(
    {
      sources: { [name]: events },
      routes: [{ sink: vtunnelSink({ address: `127.0.0.1:${String(receiver.port)}`, connectAddrs: [], resyncMs: 0 }), sources: [name] }],
    },
    stop$,
  ).subscribe({ complete: done });
  await sleep(200);
  return {
    messages: receiver.messages,
    stop: async () => {
      stop$.next();
      await finished;
      await receiver.close();
    },
  };
}
