/**
 * A PROTOCOL FAKE of gvisor-tap-vsock's forwarder API (pkg/services/forwarder/ports.go), the
 * host-switch expose API (docs/host-switch.md), faithful to what it answers:
 * - `POST /services/forwarder/expose` `{"local","remote","protocol"}`: 200 with an empty body;
 *   500 `proxy already running for PROTO on LOCAL` for a duplicate protocol+local; 500 with the
 *   listen error (`listen tcp 127.0.0.1:P: bind: address already in use`) when the port cannot be
 *   bound (the fake really binds `local` on this machine, as the forwarder does on the host);
 *   400 for a body that does not decode or a remote without a port; 400 `post only` for other methods.
 * - `POST /services/forwarder/unexpose` `{"local","protocol"}`: 200; 500 `proxy not found`.
 * - An empty protocol means tcp in both. `GET /services/forwarder/all`: the proxies, sorted by
 *   local then protocol, as a JSON array and a newline.
 * Errors are written as Go's http.Error does: text/plain, the message and a newline.
 *
 * For fault tests: while `fault` is set, every request (the three paths alike) is answered with
 * that status and message instead, and changes nothing. With `bind: false` the fake records its
 * proxies without binding them: when host and VM are one machine, the engine's own proxy already
 * holds the published port that the forwarder would bind on the real host.
 *
 * Shared by test/hostswitch.test.ts (the sink on its own) and test/faults.test.ts (the agent).
 */
import dgram from 'node:dgram';
import http from 'node:http';
import net from 'node:net';
import type { TestContext } from 'node:test';

export interface Proxy {
  readonly local: string;
  readonly remote: string;
  readonly protocol: string;
  readonly close: () => void;
}

export interface FakeOptions {
  /** Bind each proxy's `local` for real, as the forwarder does (default true). */
  readonly bind?: boolean;
}

export interface Fake {
  readonly url: string;
  readonly port: number;
  /** Every request: `METHOD PATH BODY`. */
  readonly requests: string[];
  readonly proxies: Map<string, Proxy>;
  /** While set, every request is answered with this instead (an injected fault). */
  fault: { readonly status: number; readonly message: string } | undefined;
  /** What `/all` would answer, as `proto local->remote`. */
  view(): string[];
  /** Adds a proxy as if exposed by someone else (an earlier run, the host itself). */
  preload(local: string, remote: string, protocol: string): Promise<void>;
  close(): Promise<void>;
}

/** Starts the fake on 127.0.0.1 (`port`, or a free one); `t.after` closes it. */
export async function startFake(t: Pick<TestContext, 'after'>, port = 0, options: FakeOptions = {}): Promise<Fake> {
  const requests: string[] = [];
  const proxies = new Map<string, Proxy>();
  const key = (protocol: string, local: string): string => `${protocol}/${local}`;
  const bindForReal = options.bind ?? true;

  const goError = (res: http.ServerResponse, message: string, status: number): void => {
    res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'x-content-type-options': 'nosniff' });
    res.end(`${message}\n`);
  };

  /** net.Listen / net.ListenUDP on `local` (`HOST:PORT` or `:PORT`), with Go's error text. */
  const bind = (protocol: 'tcp' | 'udp', local: string): Promise<() => void> => {
    if (!bindForReal) return Promise.resolve(() => undefined);
    const colon = local.lastIndexOf(':');
    const host = local.slice(0, colon) || '0.0.0.0';
    const port = Number(local.slice(colon + 1));
    return new Promise((resolve, reject) => {
      const fail = (err: NodeJS.ErrnoException): void => {
        const why = err.code === 'EADDRINUSE' ? 'address already in use' : err.code === 'EACCES' ? 'permission denied' : err.message;
        reject(new Error(`listen ${protocol} ${local}: bind: ${why}`));
      };
      if (protocol === 'tcp') {
        const server = net.createServer((socket) => socket.destroy());
        server.once('error', fail);
        server.listen({ host, port, exclusive: true }, () => {
          resolve(() => server.close());
        });
      } else {
        const socket = dgram.createSocket('udp4');
        socket.once('error', fail);
        socket.bind({ address: host, port, exclusive: true }, () => {
          resolve(() => socket.close());
        });
      }
    });
  };

  const expose = async (protocol: string, local: string, remote: string): Promise<void> => {
    if (proxies.has(key(protocol, local))) throw new Error(`proxy already running for ${protocol} on ${local}`);
    if (protocol !== 'tcp' && protocol !== 'udp') throw new Error(`unknown protocol ${protocol}`);
    const close = await bind(protocol, local);
    proxies.set(key(protocol, local), { local, remote, protocol, close });
  };

  const server = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk: string) => (body += chunk));
    req.on('end', () => {
      requests.push(`${req.method ?? ''} ${req.url ?? ''} ${body}`.trimEnd());
      void handle(req, res, body);
    });
  });

  const decode = (body: string): Record<string, unknown> | Error => {
    try {
      const value = JSON.parse(body) as unknown;
      if (typeof value !== 'object' || value === null || Array.isArray(value)) return new Error('json: cannot unmarshal into Go value of type types.ExposeRequest');
      for (const field of ['local', 'remote', 'protocol']) {
        const v = (value as Record<string, unknown>)[field];
        if (v !== undefined && typeof v !== 'string') return new Error(`json: cannot unmarshal ${typeof v} into Go struct field .${field} of type string`);
      }
      return value as Record<string, unknown>;
    } catch {
      return new Error(body.trim() === '' ? 'EOF' : 'invalid character in JSON');
    }
  };

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse, body: string): Promise<void> => {
    const path = req.url ?? '';
    if (fake.fault !== undefined) {
      goError(res, fake.fault.message, fake.fault.status);
      return;
    }
    if (path === '/services/forwarder/all') {
      const all = [...proxies.values()]
        .map(({ local, remote, protocol }) => ({ local, remote, protocol }))
        .sort((a, b) => (a.local === b.local ? (a.protocol < b.protocol ? -1 : 1) : a.local < b.local ? -1 : 1));
      res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
      res.end(`${JSON.stringify(all)}\n`);
      return;
    }
    if (path !== '/services/forwarder/expose' && path !== '/services/forwarder/unexpose') {
      goError(res, '404 page not found', 404);
      return;
    }
    if (req.method !== 'POST') {
      goError(res, 'post only', 400);
      return;
    }
    const decoded = decode(body);
    if (decoded instanceof Error) {
      goError(res, decoded.message, 400);
      return;
    }
    const local = typeof decoded['local'] === 'string' ? decoded['local'] : '';
    const remote = typeof decoded['remote'] === 'string' ? decoded['remote'] : '';
    const protocol = typeof decoded['protocol'] === 'string' && decoded['protocol'] !== '' ? decoded['protocol'] : 'tcp';
    if (path.endsWith('/expose')) {
      if (!/^[^:]*:\d+$/.test(remote)) {
        goError(res, `address ${remote}: missing port in address`, 400);
        return;
      }
      try {
        await expose(protocol, local, remote);
      } catch (err) {
        goError(res, (err as Error).message, 500);
        return;
      }
      res.writeHead(200);
      res.end();
      return;
    }
    const proxy = proxies.get(key(protocol, local));
    if (!proxy) {
      goError(res, 'proxy not found', 500);
      return;
    }
    proxies.delete(key(protocol, local));
    proxy.close();
    res.writeHead(200);
    res.end();
  };

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  const bound = (server.address() as net.AddressInfo).port;
  let closed = false;
  const fake: Fake = {
    url: `http://127.0.0.1:${String(bound)}`,
    port: bound,
    requests,
    proxies,
    fault: undefined,
    view: () => [...proxies.values()].map((p) => `${p.protocol} ${p.local}->${p.remote}`).sort(),
    preload: (local, remote, protocol) => expose(protocol, local, remote),
    close: async () => {
      if (closed) return;
      closed = true;
      for (const p of proxies.values()) p.close();
      proxies.clear();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
  t.after(() => fake.close());
  return fake;
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export async function freePort(): Promise<number> {
  const probe = net.createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const { port } = probe.address() as net.AddressInfo;
  await new Promise((resolve) => probe.close(resolve));
  return port;
}
