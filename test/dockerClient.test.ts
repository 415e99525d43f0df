/**
 * The real dockerode client of the docker stream against a Docker socket that hangs: a unix
 * socket server on a temporary path that speaks just enough HTTP to hang where a stuck dockerd
 * would. Each timed-out request must be aborted, so retrying against a hung engine does not
 * collect open connections. No engine is needed.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import type net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { firstValueFrom, take, toArray, type Subscription } from 'rxjs';
import { recordingLogger } from '../marbles/helpers.js';
import { pino } from 'pino';
import { dockerEvents } from '../streams/docker.js';
import { dockerodeClient } from '../streams/dockerClient.js';
import { waitFor } from './engines.js';

const silent = pino({ level: 'silent' });

/**
 * A Docker socket whose `/events` either never answers or opens and stays quiet, and whose
 * container list never answers. Counts requests by path and the connections open now.
 */
async function hungDocker(t: TestContext, events: 'hang' | 'open') {
  const dir = mkdtempSync(join(tmpdir(), 'portstream-hung-docker-'));
  const socketPath = join(dir, 'docker.sock');
  const requests = new Map<string, number>();
  const open = new Set<net.Socket>();
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0] ?? '';
    requests.set(path, (requests.get(path) ?? 0) + 1);
    if (path.endsWith('/events') && events === 'open') {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.flushHeaders();
    }
    // Anything else: no answer, ever.
  });
  server.on('connection', (socket) => {
    open.add(socket);
    socket.once('close', () => open.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  t.after(async () => {
    for (const socket of open) socket.destroy();
    await new Promise((resolve) => server.close(resolve));
    rmSync(dir, { recursive: true, force: true });
  });
  return { socketPath, requests, open };
}

/** The docker stream on `socketPath`, quick to time out and retry; unsubscribed after the test. */
function watch(t: TestContext, socketPath: string): Subscription {
  const options = { logger: silent, requestTimeoutMs: 100, backoff: { initialMs: 20, maxMs: 40, stableMs: 10_000 } };
  const sub = dockerEvents(dockerodeClient({ socketPath, logger: silent }), options).subscribe();
  t.after(() => {
    sub.unsubscribe();
  });
  return sub;
}

test('docker client: an event stream that never opens is aborted at each timeout, so retries hold one connection at most', { timeout: 30_000 }, async (t) => {
  const hung = await hungDocker(t, 'hang');
  const sub = watch(t, hung.socketPath);
  await waitFor(() => (hung.requests.get('/events') ?? 0) >= 6, 10_000, 'six attempts');
  // Each attempt's request is aborted before the next one starts.
  await waitFor(() => hung.open.size <= 1, 2_000, 'the aborted requests to close');
  sub.unsubscribe();
  await waitFor(() => hung.open.size === 0, 2_000, 'the last request to close');
});

test('docker client: a container list that never answers is aborted at each timeout, and the event stream with it', { timeout: 30_000 }, async (t) => {
  const hung = await hungDocker(t, 'open');
  const sub = watch(t, hung.socketPath);
  await waitFor(() => (hung.requests.get('/containers/json') ?? 0) >= 6, 10_000, 'six lists');
  assert.ok((hung.requests.get('/events') ?? 0) >= 6, 'every attempt opens the events first');
  // At most this attempt's event stream and list.
  await waitFor(() => hung.open.size <= 2, 2_000, 'the earlier attempts to close');
  sub.unsubscribe();
  await waitFor(() => hung.open.size === 0, 2_000, 'every request to close');
});

test('docker client: with no socket named it finds the default one and makes its direct GETs there, not through docker-modem', { timeout: 30_000 }, async (t) => {
  // docker-modem's default socket is `~/.docker/run/docker.sock` when that exists: HOME points at
  // a folder holding this test's socket, and DOCKER_HOST is unset, as on a plain VM.
  const home = mkdtempSync(join(tmpdir(), 'portstream-docker-home-'));
  const socketPath = join(home, '.docker', 'run', 'docker.sock');
  mkdirSync(dirname(socketPath), { recursive: true });
  const saved = { HOME: process.env['HOME'], DOCKER_HOST: process.env['DOCKER_HOST'] };
  process.env['HOME'] = home;
  delete process.env['DOCKER_HOST'];
  const connections: net.Socket[] = [];
  const paths: string[] = [];
  const accepts: (string | undefined)[] = [];
  const server = http.createServer((req, res) => {
    paths.push((req.url ?? '').split('?')[0] ?? '');
    accepts.push(req.headers.accept);
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end(req.url?.startsWith('/containers/json') ? '[]' : JSON.stringify({ Id: 'c1', State: { Running: true }, NetworkSettings: { Ports: {} } }));
  });
  server.on('connection', (socket) => connections.push(socket));
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  t.after(async () => {
    if (saved.HOME === undefined) delete process.env['HOME'];
    else process.env['HOME'] = saved.HOME;
    if (saved.DOCKER_HOST !== undefined) process.env['DOCKER_HOST'] = saved.DOCKER_HOST;
    for (const socket of connections) socket.destroy();
    await new Promise((resolve) => server.close(resolve));
    rmSync(home, { recursive: true, force: true });
  });
  const client = dockerodeClient({ logger: silent });
  await firstValueFrom(client.listContainers());
  await firstValueFrom(client.inspect('c1'));
  await firstValueFrom(client.inspect('c1'));
  assert.deepEqual(paths, ['/containers/json', '/containers/c1/json', '/containers/c1/json']);
  // The direct GETs ask for JSON; docker-modem sends no Accept header (and formats every
  // request's options with util.inspect on the way, which the add path cannot afford).
  assert.deepEqual(accepts, ['application/json', 'application/json', 'application/json']);
  assert.equal(connections.length, 1, 'one kept-alive connection');
});

test('docker client: event lines that are not JSON objects are logged and skipped, and the next event still counts', { timeout: 30_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'portstream-odd-events-'));
  const socketPath = join(dir, 'docker.sock');
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'Content-Type': 'application/json' });
    if (req.url?.startsWith('/events')) {
      // what a broken proxy or a future dockerd might send, then a real start event
      res.write('not json\nnull\n[1]\n{"Type":"container","Action":"start","Actor":{"ID":42}}\n');
      res.write('{"Type":"container","Action":"start","Actor":{"ID":"c1"}}\n');
      return; // the stream stays open
    }
    if (req.url?.startsWith('/containers/json')) res.end('[]');
    else res.end(JSON.stringify({ Id: 'c1', State: { Running: true }, NetworkSettings: { Ports: { '80/tcp': [{ HostIp: '0.0.0.0', HostPort: '8080' }] } } }));
  });
  const sockets = new Set<net.Socket>();
  server.on('connection', (socket) => sockets.add(socket));
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  t.after(async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise((resolve) => server.close(resolve));
    rmSync(dir, { recursive: true, force: true });
  });
  const { log, lines } = recordingLogger();
  const events = await firstValueFrom(
    dockerEvents(dockerodeClient({ socketPath, logger: log }), { logger: log }).pipe(take(2), toArray()),
  );
  assert.deepEqual(events.map((e) => e.type), ['snapshot', 'upsert']);
  const warnings = lines().filter((l) => l.level === 40).map((l) => l.msg);
  assert.deepEqual(warnings, [
    'ignoring a Docker event line that is not JSON',
    'ignoring a Docker event line that is not a JSON object',
    'ignoring a Docker event line that is not a JSON object',
    'ignoring a Docker event without a container ID',
  ]);
});
