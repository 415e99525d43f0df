/**
 * The real dockerode client of the docker stream against a Docker socket that hangs: a unix
 * socket server on a temporary path that speaks just enough HTTP to hang where a stuck dockerd
 * would. Each timed-out request must be aborted, so retrying against a hung engine does not
 * collect open connections. No engine is needed.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import type net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import type { Subscription } from 'rxjs';
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
