/** The host-switch sink's figures (see `hostswitch.ts`), in a process of its own: JSON lines on stdout. */
import { performance } from 'node:perf_hooks';
import { pino } from 'pino';
import type { Forward, PortDelta } from '../src/model.js';
import { from, map, of, Subject } from 'rxjs';
import { hostSwitchSink, httpRequester, type HostSwitchSinkOptions } from '../src/sinks/hostswitch.js';
import type { SinkReport } from '../src/sinks/sink.js';
import { percentile, round, type Figure } from './stats.js';

const quick = process.argv.includes('--quick');
const url = process.argv[process.argv.indexOf('--url') + 1] ?? '';
const held = 10_000;
const log = pino({ level: 'warn' }, pino.destination(2));
const emit = (f: Figure): void => {
  process.stdout.write(`${JSON.stringify(f)}\n`);
};
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const forward = (hostPort: number): Forward => ({ protocol: 'tcp', hostIp: '0.0.0.0', hostPort, source: 'bench', owner: `o${String(hostPort)}` });
const many = Array.from({ length: held }, (_, i) => forward(20_000 + i));

/** The sink with `opts`, fed by a Subject; `published` counts forwards reported on the host. */
function start(opts: HostSwitchSinkOptions) {
  const deltas = new Subject<PortDelta>();
  let published = 0;
  const reports: SinkReport[] = [];
  let done = false;
  deltas.pipe(hostSwitchSink({ logger: log, ...opts })).subscribe({
    next: (r) => {
      reports.push(r);
      if (r.type === 'wrote') published += r.added.length - r.removed.length;
    },
    complete: () => (done = true),
  });
  return { deltas, reports, published: () => published, done: () => done };
}

/** The sink's own time per change: answers are synchronous, so `next` returns when the change is reported. */
function overhead(): void {
  const sink = start({ request: (req) => of({ status: 200, body: req.path.endsWith('/all') ? '[]\n' : '' }), resyncMs: 0 });
  sink.deltas.next({ added: many, removed: [] });
  if (sink.published() !== held) throw new Error(`published ${String(sink.published())} of ${String(held)}`);
  const samples: number[] = [];
  const rounds = quick ? 500 : 2_000;
  for (let i = 0; i < rounds; i++) {
    const f = forward(40_000 + (i % 1000));
    let t0 = performance.now();
    sink.deltas.next({ added: [f], removed: [] });
    samples.push(performance.now() - t0);
    t0 = performance.now();
    sink.deltas.next({ added: [], removed: [f] });
    samples.push(performance.now() - t0);
  }
  if (sink.published() !== held) throw new Error('a change was not reported synchronously');
  sink.deltas.complete();
  emit({ name: 'hostswitch.overhead.p50', value: round(percentile(samples, 50), 4), unit: 'ms', forwards: held, p99: round(percentile(samples, 99), 4), note: 'one add or removal, answered synchronously in-process: the sink alone' });
}

async function untilTrue(check: () => boolean, timeoutMs: number): Promise<boolean> {
  const end = performance.now() + timeoutMs;
  while (!check()) {
    if (performance.now() > end) return false;
    await new Promise((resolve) => setImmediate(resolve));
  }
  return true;
}

async function againstStandIn(): Promise<void> {
  // The real HTTP client, counting the unexposes the stand-in confirmed.
  const http = httpRequester(url, { timeoutMs: 5_000 });
  let unexposed = 0;
  const request: HostSwitchSinkOptions['request'] = (req) =>
    from(http(req)).pipe(
      map((res) => {
        if (req.path.endsWith('/unexpose') && res.status === 200) unexposed += 1;
        return res;
      }),
    );
  const sink = start({ request });
  const t0 = performance.now();
  sink.deltas.next({ added: many, removed: [] });
  if (!(await untilTrue(() => sink.published() === held, 120_000))) throw new Error(`published ${String(sink.published())} of ${String(held)}`);
  emit({ name: 'hostswitch.publish_10000', value: round(performance.now() - t0, 1), unit: 'ms', note: 'start-up read, then 10,000 exposes over HTTP (4 at a time)' });
  const samples: number[] = [];
  const rounds = quick ? 100 : 300;
  for (let i = 0; i < rounds; i++) {
    const f = forward(40_000 + i);
    const before = sink.reports.length;
    const t1 = performance.now();
    sink.deltas.next({ added: [f], removed: [] });
    await untilTrue(() => sink.reports.length > before, 5_000);
    samples.push(performance.now() - t1);
    const t2 = performance.now();
    sink.deltas.next({ added: [], removed: [f] });
    await untilTrue(() => sink.reports.length > before + 1, 5_000);
    samples.push(performance.now() - t2);
  }
  emit({ name: 'hostswitch.change.p50', value: round(percentile(samples, 50), 3), unit: 'ms', forwards: held, p99: round(percentile(samples, 99), 3), note: 'one add or removal to its report, over HTTP to the stand-in' });
  const settleMs = quick ? 3_000 : 10_000;
  const idleMs = quick ? 6_000 : 15_000;
  await sleep(settleMs);
  const cpu = process.cpuUsage();
  await sleep(idleMs);
  const used = process.cpuUsage(cpu);
  emit({ name: 'hostswitch.idle_cpu.10000', value: round(((used.user + used.system) / 1000 / idleMs) * 100, 3), unit: '% of a core', over_ms: idleMs, target: '<= 1 %', note: 'includes the re-read of the 10,000-entry list every 3 s' });
  const unexposedBefore = unexposed;
  const t3 = performance.now();
  sink.deltas.complete();
  await untilTrue(sink.done, 30_000);
  emit({ name: 'hostswitch.withdraw_10000.unexposed', value: unexposed - unexposedBefore, unit: 'forwards', of: held, ms: round(performance.now() - t3, 1), note: 'unexposed within the 5 s withdraw bound at shutdown' });
}

overhead();
await againstStandIn();
