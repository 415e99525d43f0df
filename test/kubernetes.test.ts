/**
 * The kubernetes stream end to end: `kubernetesServices(kubeconfigClients(path))` with the real
 * @kubernetes/client-node adapter, over TLS, against `test/fakeApiServer.ts`.
 *
 * That server is a PROTOCOL FAKE: no Kubernetes API server can be installed on these machines, so
 * it speaks the Service list/watch protocol as the Kubernetes API documentation describes it
 * (ServiceList with metadata.resourceVersion, `?watch=true&resourceVersion=N` streaming
 * `{"type","object"}` lines, bookmarks, ERROR 410 Expired for a too-old version, dropped
 * connections, a closed port). Its CA is made by `openssl`, so the tests need it (they skip
 * without it, or fail with PORTSTREAM_REQUIRE_ENGINES=1).
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { toPortSet } from '../operators/toPortSet.js';
import { diff, type PortKey, type PortSet } from '../src/model.js';
import { kubernetesServices } from '../streams/kubernetes.js';
import { kubeconfigClients } from '../streams/kubeconfigClients.js';
import { makeTestPki, startFakeApiServer, type FakeApiServer, type TestPki } from './fakeApiServer.js';
import { engineTest, recordPortSets, sleep, sorted, waitFor, type PortSetRecorder } from './engines.js';

const opts = { needs: ['openssl'] as const, timeout: 60_000 };
const API = 'tcp/0.0.0.0:6443';

let pki: Promise<TestPki> | undefined;
const testPki = (): Promise<TestPki> => (pki ??= makeTestPki());

interface Agent extends PortSetRecorder {
  readonly logs: { level: number; msg: string }[];
  /** The set before the latest one. */
  previous(): PortSet | undefined;
}

/** The stream under test on `path`, with a short back-off, folded into port sets. */
function watchKube(path: string, extra: { pollMs?: number; listenerAddr?: string; listTimeoutMs?: number } = {}): Agent {
  const logs: { level: number; msg: string }[] = [];
  const log = pino(
    { level: 'debug' },
    {
      write: (line: string) => {
        const { level, msg } = JSON.parse(line) as { level: number; msg: string };
        logs.push({ level, msg });
        if (process.env['PORTSTREAM_LOG_LEVEL'] !== undefined) process.stderr.write(line);
      },
    },
  );
  const rec = recordPortSets(
    kubernetesServices(kubeconfigClients(path, { logger: log, pollMs: extra.pollMs ?? 1_000, watchTimeoutSeconds: 60 }), {
      listenerAddr: extra.listenerAddr ?? '0.0.0.0',
      apiPort: 6443,
      logger: log,
      backoff: { initialMs: 50, maxMs: 400, stableMs: 5_000 },
      ...(extra.listTimeoutMs !== undefined && { listTimeoutMs: extra.listTimeoutMs }),
    }).pipe(toPortSet()),
  );
  return { ...rec, logs, previous: () => rec.sets.at(-2) };
}

/** A temp directory with a fake server whose kubeconfig is written in it, all removed after the test. */
async function setUp(t: { after: (fn: () => Promise<void> | void) => void }): Promise<{ server: FakeApiServer; dir: string; path: string }> {
  const server = await startFakeApiServer(await testPki());
  const dir = await mkdtemp(join(tmpdir(), 'portstream-kube-'));
  t.after(async () => {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });
  const path = join(dir, 'k3s.yaml');
  await server.writeKubeconfig(path);
  return { server, dir, path };
}

function show(agent: Agent): string {
  return `agent: [${sorted(agent.keys()).join(' ')}]${agent.ended() ? ` (stream ${String(agent.ended())})` : ''}`;
}

async function until(agent: Agent, expected: readonly PortKey[], what: string, timeoutMs = 10_000): Promise<void> {
  await waitFor(() => sameKeys(agent.keys(), expected), timeoutMs, () => `${what}: [${sorted(expected).join(' ')}]; ${show(agent)}`);
  assert.deepEqual(sorted(agent.keys()), sorted(expected));
  assert.equal(agent.ended(), undefined, 'the stream must never end');
}

function sameKeys(a: Iterable<PortKey>, b: Iterable<PortKey>): boolean {
  const x = sorted(a);
  const y = sorted(b);
  return x.length === y.length && x.every((key, i) => key === y[i]);
}

engineTest('NodePort and LoadBalancer, TCP and UDP on one number, ClusterIP ignored: from the start-up list and from the watch', opts, async (t) => {
  const { server, path } = await setUp(t);
  const web = server.create({ name: 'web', type: 'NodePort', ports: [{ name: 'http', port: 80, nodePort: 30080 }] });
  const dns = server.create({
    namespace: 'kube-system',
    name: 'dns',
    type: 'LoadBalancer',
    ports: [
      { name: 'dns-tcp', protocol: 'TCP', port: 53 },
      { name: 'dns-udp', protocol: 'UDP', port: 53 },
    ],
  });
  server.create({ name: 'internal', ports: [{ port: 8080 }] });
  const listRv = server.resourceVersion;

  const agent = watchKube(path);
  t.after(() => {
    agent.stop();
  });
  await until(agent, [API, 'tcp/0.0.0.0:30080', 'tcp/0.0.0.0:53', 'udp/0.0.0.0:53'], 'the listed Services');
  const set = agent.latest();
  assert.ok(set);
  assert.equal(set.get('tcp/0.0.0.0:30080')?.owner, web.metadata.uid);
  assert.equal(set.get('udp/0.0.0.0:53')?.owner, dns.metadata.uid);
  assert.equal(set.get(API)?.owner, 'kubernetes/apiserver');
  assert.equal(set.get('tcp/0.0.0.0:30080')?.source, 'kubernetes');

  // the watch: a NodePort with TCP and UDP on one number, then a ClusterIP (nothing), then a marker
  await waitFor(() => server.openWatches === 1, 5_000, 'the watch');
  const both = server.create({
    name: 'game',
    type: 'NodePort',
    ports: [
      { name: 'tcp', protocol: 'TCP', port: 7777, nodePort: 30777 },
      { name: 'udp', protocol: 'UDP', port: 7777, nodePort: 30777 },
    ],
  });
  server.create({ name: 'cache', type: 'ClusterIP', ports: [{ port: 6379 }] });
  server.create({ name: 'marker', type: 'NodePort', ports: [{ port: 1, nodePort: 30001 }] });
  await until(agent, [API, 'tcp/0.0.0.0:30080', 'tcp/0.0.0.0:53', 'udp/0.0.0.0:53', 'tcp/0.0.0.0:30777', 'udp/0.0.0.0:30777', 'tcp/0.0.0.0:30001'], 'the watched Services');
  assert.equal(agent.latest()?.get('udp/0.0.0.0:30777')?.owner, both.metadata.uid);

  assert.equal(server.stats.lists, 1);
  assert.equal(server.stats.watches, 1);
  const watch = new URL(server.stats.requests.find((r) => r.includes('watch=true'))?.split(' ')[1] ?? '', server.url);
  assert.equal(watch.pathname, '/api/v1/services');
  assert.equal(watch.searchParams.get('resourceVersion'), listRv, 'the watch starts at the list’s resourceVersion');
  assert.equal(watch.searchParams.get('allowWatchBookmarks'), 'true');
});

engineTest('an update changes only what changed; NodePort → ClusterIP removes, and back adds; delete removes', opts, async (t) => {
  const { server, path } = await setUp(t);
  server.create({ name: 'web', type: 'NodePort', ports: [{ name: 'http', port: 80, nodePort: 30080 }, { name: 'https', port: 443, nodePort: 30443 }] });
  const agent = watchKube(path, { listenerAddr: '127.0.0.1' });
  t.after(() => {
    agent.stop();
  });
  await until(agent, ['tcp/127.0.0.1:6443', 'tcp/127.0.0.1:30080', 'tcp/127.0.0.1:30443'], 'the Service');
  await waitFor(() => server.openWatches === 1, 5_000, 'the watch');

  server.update('default', 'web', { ports: [{ name: 'http', port: 80, nodePort: 30080 }, { name: 'https', port: 443, nodePort: 30444 }] });
  await until(agent, ['tcp/127.0.0.1:6443', 'tcp/127.0.0.1:30080', 'tcp/127.0.0.1:30444'], 'the updated Service');
  const before = agent.previous();
  const after = agent.latest();
  assert.ok(before && after);
  const delta = diff(before, after);
  assert.deepEqual(delta.added.map((f) => f.hostPort), [30444]);
  assert.deepEqual(delta.removed.map((f) => f.hostPort), [30443], 'the unchanged port 30080 is not touched');

  server.update('default', 'web', { type: 'ClusterIP' });
  await until(agent, ['tcp/127.0.0.1:6443'], 'the Service gone with its type change to ClusterIP');
  server.update('default', 'web', { type: 'NodePort', ports: [{ name: 'http', port: 80, nodePort: 30090 }] });
  await until(agent, ['tcp/127.0.0.1:6443', 'tcp/127.0.0.1:30090'], 'the Service back as NodePort');

  server.delete('default', 'web');
  await until(agent, ['tcp/127.0.0.1:6443'], 'the deleted Service gone');
  assert.equal(server.stats.lists, 1, 'all of it through one watch');
});

engineTest('a dropped watch: the stream reconnects, re-lists and catches up', opts, async (t) => {
  const { server, path } = await setUp(t);
  server.create({ name: 'a', type: 'NodePort', ports: [{ port: 80, nodePort: 30100 }] });
  server.create({ name: 'b', type: 'NodePort', ports: [{ port: 80, nodePort: 30101 }] });
  const agent = watchKube(path);
  t.after(() => {
    agent.stop();
  });
  await until(agent, [API, 'tcp/0.0.0.0:30100', 'tcp/0.0.0.0:30101'], 'the Services');
  await waitFor(() => server.openWatches === 1, 5_000, 'the watch');

  server.dropConnections();
  server.delete('default', 'a');
  server.create({ name: 'c', type: 'LoadBalancer', ports: [{ port: 8443 }] });
  await until(agent, [API, 'tcp/0.0.0.0:30101', 'tcp/0.0.0.0:8443'], 'the state after the drop');
  await waitFor(() => server.stats.lists === 2 && server.openWatches === 1, 5_000, () => `a re-list and a new watch; ${JSON.stringify(server.stats)}`);
  assert.ok(agent.logs.some((l) => l.level === 40 && /lost the Kubernetes API server/.test(l.msg)), 'one warning about the drop');

  server.create({ name: 'd', type: 'NodePort', ports: [{ port: 80, nodePort: 30103 }] });
  await until(agent, [API, 'tcp/0.0.0.0:30101', 'tcp/0.0.0.0:8443', 'tcp/0.0.0.0:30103'], 'a change through the new watch');
});

engineTest('410 Gone at the start of a watch (history compacted between list and watch): the stream re-lists', opts, async (t) => {
  const { server, path } = await setUp(t);
  server.create({ name: 'a', type: 'NodePort', ports: [{ port: 80, nodePort: 30200 }] });
  // Right after the first list is sent: a change, then a compaction, so the list's version is too old to watch from.
  server.afterNextList(() => {
    server.create({ name: 'b', type: 'NodePort', ports: [{ port: 80, nodePort: 30201 }] });
    server.compact();
  });
  const agent = watchKube(path);
  t.after(() => {
    agent.stop();
  });
  await until(agent, [API, 'tcp/0.0.0.0:30200', 'tcp/0.0.0.0:30201'], 'both Services, b through the re-list');
  assert.equal(server.stats.gone, 1, 'the first watch got ERROR 410');
  assert.equal(server.stats.lists, 2);
  assert.ok(agent.logs.some((l) => l.level === 30 && /410 Gone: 410 Expired: too old resource version/.test(l.msg)), 'logged as routine');
  assert.deepEqual(agent.logs.filter((l) => l.level >= 40), [], 'nothing to warn about');
});

engineTest('410 Gone on an open watch (ERROR event, then the end): the stream re-lists and watches again', opts, async (t) => {
  const { server, path } = await setUp(t);
  server.create({ name: 'a', type: 'NodePort', ports: [{ port: 80, nodePort: 30210 }] });
  const agent = watchKube(path);
  t.after(() => {
    agent.stop();
  });
  await until(agent, [API, 'tcp/0.0.0.0:30210'], 'the Service');
  await waitFor(() => server.openWatches === 1, 5_000, 'the watch');

  server.expireWatches();
  await waitFor(() => server.stats.lists === 2 && server.openWatches === 1, 5_000, () => `a re-list and a new watch; ${JSON.stringify(server.stats)}`);
  server.create({ name: 'b', type: 'LoadBalancer', ports: [{ port: 9000, protocol: 'UDP' }] });
  await until(agent, [API, 'tcp/0.0.0.0:30210', 'udp/0.0.0.0:9000'], 'a change through the new watch');
  assert.equal(server.stats.gone, 1);
});

engineTest('the API server refusing connections: down at start, then gone and back; Services deleted meanwhile are removed', opts, async (t) => {
  const { server, path } = await setUp(t);
  server.create({ name: 'a', type: 'NodePort', ports: [{ port: 80, nodePort: 30300 }] });
  server.create({ name: 'b', type: 'NodePort', ports: [{ port: 80, nodePort: 30301 }] });
  await server.stop();

  const agent = watchKube(path);
  t.after(() => {
    agent.stop();
  });
  await until(agent, [API], 'the API port alone while the server is down');
  await waitFor(() => agent.logs.filter((l) => /cannot reach the Kubernetes API server.*ECONNREFUSED/.test(l.msg)).length >= 3, 5_000, 'a few refused attempts');
  assert.deepEqual(sorted(agent.keys()), [API]);

  await server.start();
  await until(agent, [API, 'tcp/0.0.0.0:30300', 'tcp/0.0.0.0:30301'], 'the Services once the server is back');
  await waitFor(() => server.openWatches === 1, 5_000, 'the watch');

  await server.stop();
  server.delete('default', 'a');
  server.create({ name: 'c', type: 'NodePort', ports: [{ port: 80, nodePort: 30302 }] });
  await sleep(600); // several refused reconnects
  assert.deepEqual(sorted(agent.keys()), sorted([API, 'tcp/0.0.0.0:30300', 'tcp/0.0.0.0:30301']), 'the last known state stays while the server is gone');
  await server.start();
  await until(agent, [API, 'tcp/0.0.0.0:30301', 'tcp/0.0.0.0:30302'], 'the re-listed state: a removed, c added');
});

engineTest('an API server that takes the list and never answers: each list is aborted at its timeout, so retries hold one connection; then it answers', opts, async (t) => {
  const { server, path } = await setUp(t);
  server.create({ name: 'web', type: 'NodePort', ports: [{ port: 80, nodePort: 30080 }] });
  server.stallLists = true;
  const agent = watchKube(path, { listTimeoutMs: 200 });
  t.after(() => {
    agent.stop();
  });
  await waitFor(() => server.stats.lists >= 5, 15_000, () => `five stalled lists (${String(server.stats.lists)} so far)`);
  // Each timed-out list is aborted before the next one starts: no pile of open connections.
  await waitFor(() => server.openConnections <= 1, 2_000, () => `the aborted lists to close (${String(server.openConnections)} open)`);
  assert.deepEqual(sorted(agent.keys()), [API], 'nothing listed yet but the API port');
  server.stallLists = false;
  await until(agent, [API, 'tcp/0.0.0.0:30080'], 'the Services once the list is answered');
});

engineTest('bookmarks are taken in stride: no reconnect, and later events still apply', opts, async (t) => {
  const { server, path } = await setUp(t);
  const agent = watchKube(path);
  t.after(() => {
    agent.stop();
  });
  await until(agent, [API], 'the empty cluster');
  await waitFor(() => server.openWatches === 1, 5_000, 'the watch');
  const sets = agent.sets.length;
  server.bookmark();
  server.bookmark();
  server.create({ name: 'a', type: 'NodePort', ports: [{ port: 80, nodePort: 30400 }] });
  await until(agent, [API, 'tcp/0.0.0.0:30400'], 'the Service after the bookmarks');
  assert.equal(agent.sets.length, sets + 1, 'the bookmarks made no set');
  assert.equal(server.stats.watches, 1);
  assert.equal(server.stats.lists, 1);
});

engineTest('bad input: one warning naming namespace/name, and the Service’s other ports still count', opts, async (t) => {
  const { server, path } = await setUp(t);
  server.create({ namespace: 'shop', name: 'mixed', type: 'LoadBalancer', ports: [{ name: 'assoc', protocol: 'SCTP', port: 9 }, { name: 'web', protocol: 'TCP', port: 8081 }] });
  const agent = watchKube(path);
  t.after(() => {
    agent.stop();
  });
  await until(agent, [API, 'tcp/0.0.0.0:8081'], 'the TCP port of the mixed Service');
  await waitFor(() => server.openWatches === 1, 5_000, 'the watch');
  server.create({ namespace: 'shop', name: 'broken', type: 'NodePort', ports: [{ name: 'zero', port: 80, nodePort: 0 }] });
  server.create({ name: 'marker', type: 'NodePort', ports: [{ port: 1, nodePort: 30500 }] });
  await until(agent, [API, 'tcp/0.0.0.0:8081', 'tcp/0.0.0.0:30500'], 'the marker');
  assert.deepEqual(
    agent.logs.filter((l) => l.level === 40).map((l) => l.msg),
    [
      'Service shop/mixed: port "assoc" has protocol "SCTP", which cannot be forwarded (only TCP and UDP); forwarding its other ports',
      'Service shop/broken: port "zero" has nodePort 0, not a port in 1..65535; nothing of it is forwarded',
    ],
  );
});

engineTest('a kubeconfig that appears late in an existing directory is noticed through fs.watch, not the poll', opts, async (t) => {
  const { server, dir } = await setUp(t);
  server.create({ name: 'a', type: 'NodePort', ports: [{ port: 80, nodePort: 30600 }] });
  const path = join(dir, 'late.yaml');
  const agent = watchKube(path, { pollMs: 60_000 });
  t.after(() => {
    agent.stop();
  });
  await until(agent, [API], 'the API port alone without a kubeconfig');
  await sleep(300);
  assert.deepEqual(sorted(agent.keys()), [API]);
  assert.ok(agent.logs.some((l) => l.msg === `waiting for the kubeconfig ${path} to appear`));

  await writeFile(path, server.kubeconfig()); // written in place, as k3s does
  await until(agent, [API, 'tcp/0.0.0.0:30600'], 'the Service once the kubeconfig is there', 5_000);
});

engineTest('a kubeconfig whose directory appears late (the poll), then replaced to point at another server', opts, async (t) => {
  const { server, dir } = await setUp(t);
  server.create({ name: 'a', type: 'NodePort', ports: [{ port: 80, nodePort: 30700 }] });
  const other = await startFakeApiServer(await testPki());
  t.after(() => other.close());
  other.create({ name: 'b', type: 'NodePort', ports: [{ port: 80, nodePort: 30701 }] });

  const path = join(dir, 'rancher', 'k3s', 'k3s.yaml');
  const agent = watchKube(path, { pollMs: 200 });
  t.after(() => {
    agent.stop();
  });
  await until(agent, [API], 'the API port alone');
  await sleep(300);
  await mkdir(join(dir, 'rancher', 'k3s'), { recursive: true });
  await server.writeKubeconfig(path);
  await until(agent, [API, 'tcp/0.0.0.0:30700'], 'the first server’s Service');

  await other.writeKubeconfig(path); // renamed over the old one
  await until(agent, [API, 'tcp/0.0.0.0:30701'], 'the second server’s Service only');
  await waitFor(() => server.openWatches === 0, 5_000, 'the old watch to be closed');
});

engineTest('a rejected token (401) is retried without end, and a fixed kubeconfig recovers', opts, async (t) => {
  const { server, path } = await setUp(t);
  server.create({ name: 'a', type: 'NodePort', ports: [{ port: 80, nodePort: 30800 }] });
  await server.writeKubeconfig(path, 'wrong-token');
  const agent = watchKube(path, { pollMs: 200 });
  t.after(() => {
    agent.stop();
  });
  await waitFor(() => server.stats.unauthorized >= 2, 5_000, 'two rejected attempts');
  assert.deepEqual(sorted(agent.keys()), [API]);
  assert.ok(agent.logs.some((l) => l.level === 40 && /cannot reach the Kubernetes API server \(401: Unauthorized\)/.test(l.msg)));

  await server.writeKubeconfig(path);
  await until(agent, [API, 'tcp/0.0.0.0:30800'], 'the Service with the right token');
});

engineTest('a file that is not a kubeconfig is one warning, and its replacement is used', opts, async (t) => {
  const { server, path } = await setUp(t);
  server.create({ name: 'a', type: 'NodePort', ports: [{ port: 80, nodePort: 30900 }] });
  await writeFile(path, 'clusters: [');
  const agent = watchKube(path, { pollMs: 200 });
  t.after(() => {
    agent.stop();
  });
  await waitFor(() => agent.logs.some((l) => l.level === 40 && l.msg.startsWith(`cannot use the kubeconfig ${path}`)), 5_000, 'the warning');
  await sleep(500);
  assert.equal(agent.logs.filter((l) => l.msg.startsWith('cannot use the kubeconfig')).length, 1, 'one warning, not one per poll');
  await server.writeKubeconfig(path);
  await until(agent, [API, 'tcp/0.0.0.0:30900'], 'the Service');
});
