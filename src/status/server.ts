import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { lstat, unlink } from 'node:fs/promises';
import net from 'node:net';
import { errorMessage } from '../errors.js';
import { silentLogger, type Logger } from '../log.js';
import { describeStatusAddr, type StatusAddress } from './address.js';
import type { StatusMetrics } from './metrics.js';
import type { StatusTracker } from './tracker.js';
import { forwardsView, healthView } from './views.js';

/** A listening status endpoint (docs/status.md). */
export interface StatusServer {
  readonly address: string;
  /** Stops listening, ends open connections and removes its unix socket. */
  close(): Promise<void>;
}

/** Serves `/healthz`, `/forwards` and `/metrics` on `address`. Rejects when it cannot listen there. */
export async function serveStatus(address: StatusAddress, tracker: StatusTracker, metrics: StatusMetrics, log: Logger = silentLogger): Promise<StatusServer> {
  const server = createServer((req, res) => {
    handle(req, res, tracker, metrics).catch((err: unknown) => {
      log.warn({ url: req.url }, `status request ${String(req.url)} failed: ${errorMessage(err)}`);
      if (!res.headersSent) send(res, 500, 'application/json', JSON.stringify({ error: errorMessage(err) }));
      else res.destroy();
    });
  });
  if (address.kind === 'unix') await clearStaleSocket(address.path, log);
  await listen(server, address);
  const where = describeStatusAddr(address);
  log.info({ statusAddr: where }, `status endpoint listening on ${where}`);
  let closing: Promise<void> | undefined;
  return {
    address: where,
    close: () =>
      (closing ??= new Promise<void>((resolve) => {
        server.close(() => {
          resolve();
        });
        server.closeAllConnections();
      }).then(() => (address.kind === 'unix' ? removeSocket(address.path) : undefined))),
  };
}

async function handle(req: IncomingMessage, res: ServerResponse, tracker: StatusTracker, metrics: StatusMetrics): Promise<void> {
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.setHeader('Allow', 'GET, HEAD');
    send(res, 405, 'application/json', JSON.stringify({ error: `${String(req.method)} is not allowed; use GET` }));
    return;
  }
  const path = new URL(req.url ?? '/', 'http://status').pathname;
  switch (path) {
    case '/healthz': {
      const health = healthView(tracker.current());
      send(res, health.ok ? 200 : 503, 'application/json', JSON.stringify(health) + '\n');
      return;
    }
    case '/forwards':
      send(res, 200, 'application/json', JSON.stringify(forwardsView(tracker.current())) + '\n');
      return;
    case '/metrics':
      send(res, 200, metrics.registry.contentType, await metrics.scrape());
      return;
    default:
      send(res, 404, 'application/json', JSON.stringify({ error: `no such endpoint ${path}; try /healthz, /forwards or /metrics` }) + '\n');
  }
}

function send(res: ServerResponse, status: number, type: string, body: string): void {
  res.writeHead(status, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body), 'Cache-Control': 'no-store' });
  res.end(res.req.method === 'HEAD' ? undefined : body);
}

function listen(server: Server, address: StatusAddress): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    const done = (): void => {
      server.off('error', reject);
      resolve();
    };
    if (address.kind === 'unix') server.listen(address.path, done);
    else server.listen({ host: address.host, port: address.port, ipv6Only: address.host === '::1' }, done);
  });
}

/**
 * A socket left by an agent that did not shut down cleanly is replaced; one that another process
 * still answers on, or a path that is not a socket at all, is left alone and refused.
 */
async function clearStaleSocket(path: string, log: Logger): Promise<void> {
  const stat = await lstat(path).catch((err: unknown) => {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  });
  if (!stat) return;
  if (!stat.isSocket()) throw new Error(`${path} exists and is not a socket; not replacing it`);
  if (await answers(path)) throw new Error(`another process already serves on ${path}`);
  log.info(`replacing the stale status socket ${path}`);
  await removeSocket(path);
}

function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ path });
    socket.setTimeout(1_000, () => {
      socket.destroy();
      resolve(true); // it accepted the connection; something is there
    });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => {
      resolve(false);
    });
  });
}

async function removeSocket(path: string): Promise<void> {
  try {
    if ((await lstat(path)).isSocket()) await unlink(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}
