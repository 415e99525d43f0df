/**
 * Kubernetes figures against the protocol fake API server (test/fakeApiServer.ts; no real API
 * server can be installed here), over TLS through the real @kubernetes/client-node adapter:
 *
 * - add latency: from the fake server writing a Service's ADDED watch event to the stream
 *   emitting its `upsert` (lone events, spaced apart);
 * - a burst of 100 Services created at once: time until the stream has emitted every one.
 *
 * `node --import tsx bench/kubernetes.ts [--quick]` runs it alone; `npm run bench` runs it with
 * the rest once bench/run.ts calls `benchKubernetes`.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import type { Subscription } from 'rxjs';
import { kubernetesServices } from '../streams/kubernetes.js';
import { kubeconfigClients } from '../streams/kubeconfigClients.js';
import { makeTestPki, startFakeApiServer } from '../test/fakeApiServer.js';
import { findBinary } from '../test/engines.js';
import { sleep, until } from './harness.js';
import { percentile, printSummary, report, round } from './stats.js';

export async function benchKubernetes(quick: boolean): Promise<void> {
  if (findBinary('openssl') === undefined) {
    process.stderr.write('bench: openssl is not installed; skipping the Kubernetes figures (apt-get install -y openssl)\n');
    return;
  }
  const server = await startFakeApiServer(await makeTestPki());
  const dir = await mkdtemp(join(tmpdir(), 'portstream-bench-kube-'));
  let subscription: Subscription | undefined;
  try {
    const path = join(dir, 'k3s.yaml');
    await server.writeKubeconfig(path);
    // When the stream emitted an upsert carrying each host port.
    const seen = new Map<number, number>();
    let snapshots = 0;
    subscription = kubernetesServices(kubeconfigClients(path), { listenerAddr: '0.0.0.0', apiPort: 6443 }).subscribe((event) => {
      const at = performance.now();
      if (event.type === 'snapshot') snapshots++;
      if (event.type === 'upsert') for (const f of event.forwards) if (!seen.has(f.hostPort)) seen.set(f.hostPort, at);
    });
    if ((await until(() => snapshots >= 2 && server.openWatches === 1, 10_000)) === undefined) {
      process.stderr.write('bench: the kubernetes stream did not list and watch the fake API server within 10 s; skipping\n');
      return;
    }

    const latencies: number[] = [];
    const n = quick ? 50 : 200;
    for (let i = 0; i < n; i++) {
      const nodePort = 31_000 + i;
      const t0 = performance.now();
      server.create({ name: `lone-${String(i)}`, type: 'NodePort', ports: [{ port: 80, nodePort }] });
      await until(() => seen.has(nodePort), 2_000);
      const at = seen.get(nodePort);
      if (at !== undefined) latencies.push(at - t0);
      await sleep(10);
    }
    report({
      name: 'kubernetes.add_latency.p50',
      value: round(percentile(latencies, 50)),
      unit: 'ms',
      samples: latencies.length,
      note: 'fake API server writes ADDED → stream emits the upsert (TLS, @kubernetes/client-node Watch)',
    });
    report({ name: 'kubernetes.add_latency.p99', value: round(percentile(latencies, 99)), unit: 'ms', samples: latencies.length });

    const burst = 100;
    const t0 = performance.now();
    for (let i = 0; i < burst; i++) server.create({ name: `burst-${String(i)}`, type: 'LoadBalancer', ports: [{ port: 20_000 + i }] });
    const all = await until(() => Array.from({ length: burst }, (_, i) => 20_000 + i).every((p) => seen.has(p)), 10_000);
    const last = Math.max(...Array.from({ length: burst }, (_, i) => seen.get(20_000 + i) ?? Number.NaN));
    report({ name: 'kubernetes.burst100.last_upsert', value: round(last - t0), unit: 'ms', complete: all !== undefined, note: '100 Services created at once' });
  } finally {
    subscription?.unsubscribe();
    await server.close();
    await rm(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await benchKubernetes(process.argv.includes('--quick'));
  printSummary();
}
