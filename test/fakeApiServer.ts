/**
 * A PROTOCOL FAKE of the Kubernetes API server, for the kubernetes stream's integration tests and
 * benchmark. No real API server can be installed on these machines (shared/design/testing.md), so
 * this in-test HTTPS server speaks the part of the wire protocol the stream uses, as the Kubernetes
 * API documentation ("API Concepts": efficient detection of changes, resource versions, watch
 * bookmarks, 410 Gone) describes it:
 *
 * - `GET /api/v1/services` → 200 `{"kind":"ServiceList","apiVersion":"v1","metadata":
 *   {"resourceVersion":"N"},"items":[...]}`; each item has its own `metadata.resourceVersion` and,
 *   as in a real list, no `kind`/`apiVersion`.
 * - `GET /api/v1/services?watch=true&resourceVersion=N` → 200, `Content-Type: application/json`,
 *   chunked, one `{"type","object"}` JSON line per change after N (`ADDED`, `MODIFIED`,
 *   `DELETED`; a deleted object carries the deletion's resourceVersion). Without a
 *   resourceVersion, or with `0`, it first sends a synthetic `ADDED` for every existing object.
 *   `allowWatchBookmarks=true` lets `bookmark()` send `BOOKMARK` events whose object carries only
 *   the current resourceVersion. `timeoutSeconds` ends the watch cleanly after that long.
 * - A watch from a resourceVersion older than the retained history (see `compact()`) gets 200,
 *   then one `ERROR` event carrying a 410 `Status` (`"reason":"Expired"`), then the end of the
 *   stream, as the watch cache does. `expireWatches()` does the same to watches already open.
 * - Bearer-token authentication (401 `Status` otherwise), 404/405 `Status` for other requests.
 * - Failure modes for tests: `dropConnections()` destroys every open connection mid-stream, and
 *   `stop()`/`start()` close and reopen the listening port (connections are refused meanwhile).
 *
 * Served over TLS with a throw-away CA made by `openssl` (argument arrays, no shell) in a temp
 * directory; `kubeconfig()` carries that CA as `certificate-authority-data`, as a real cluster's
 * kubeconfig does (@kubernetes/client-node 1.x refuses plain http:// without skipping TLS checks).
 * Unlike a real server it takes whatever ports a test gives (a nodePort of 0, SCTP) so that bad
 * input can be tested end to end; a missing nodePort is allocated, as the real one does.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import https from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run } from './engines.js';

export interface FakeServicePort {
  readonly name?: string;
  readonly protocol?: string;
  readonly port: number;
  readonly targetPort?: number;
  readonly nodePort?: number;
}

/** What a test asks for; `namespace` defaults to `default`, `type` to `ClusterIP`. */
export interface FakeServiceSpec {
  readonly namespace?: string;
  readonly name: string;
  readonly type?: string;
  readonly ports: readonly FakeServicePort[];
}

/** A Service as the server stores and sends it. */
export interface ApiService {
  kind?: string;
  apiVersion?: string;
  metadata: { name: string; namespace: string; uid: string; resourceVersion: string; creationTimestamp: string };
  spec: { type: string; ports: FakeServicePort[]; clusterIP: string; selector: Record<string, string> };
  status: { loadBalancer: Record<string, never> };
}

interface WatchEvent {
  readonly type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';
  readonly object: unknown;
}

interface Watcher {
  readonly res: ServerResponse;
  readonly bookmarks: boolean;
  readonly from: number;
}

/** The test CA and the server's certificate and key, PEM. */
export interface TestPki {
  readonly caCert: string;
  readonly serverCert: string;
  readonly serverKey: string;
}

/**
 * A throw-away CA and a server certificate for 127.0.0.1/localhost signed by it, made by
 * `openssl` in a temp directory that is removed again.
 */
export async function makeTestPki(): Promise<TestPki> {
  const dir = await mkdtemp(join(tmpdir(), 'portstream-pki-'));
  const p = (name: string): string => join(dir, name);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  try {
    await run('openssl', ['req', '-x509', ...ec, '-keyout', p('ca.key'), '-out', p('ca.crt'), '-days', '2', '-subj', '/CN=portstream test CA',
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
    await run('openssl', ['req', ...ec, '-keyout', p('server.key'), '-out', p('server.csr'), '-subj', '/CN=portstream fake apiserver']);
    await writeFile(
      p('server.ext'),
      'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n',
    );
    await run('openssl', ['x509', '-req', '-in', p('server.csr'), '-CA', p('ca.crt'), '-CAkey', p('ca.key'),
      '-set_serial', `0x${randomBytes(8).toString('hex')}`, '-days', '2', '-extfile', p('server.ext'), '-out', p('server.crt')]);
    const [caCert, serverCert, serverKey] = await Promise.all([readFile(p('ca.crt'), 'utf8'), readFile(p('server.crt'), 'utf8'), readFile(p('server.key'), 'utf8')]);
    return { caCert, serverCert, serverKey };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export interface FakeApiServerStats {
  /** Every request, as `METHOD /path?query`. */
  readonly requests: string[];
  lists: number;
  watches: number;
  /** Watches answered with an ERROR 410. */
  gone: number;
  unauthorized: number;
}

export class FakeApiServer {
  readonly token = randomBytes(12).toString('hex');
  readonly stats: FakeApiServerStats = { requests: [], lists: 0, watches: 0, gone: 0, unauthorized: 0 };
  private readonly server: https.Server;
  private readonly objects = new Map<string, ApiService>();
  private history: { rv: number; event: WatchEvent }[] = [];
  private readonly watchers = new Set<Watcher>();
  private readonly sockets = new Set<Socket>();
  private rv = 100;
  /** The oldest resourceVersion a watch may start from. */
  private oldestRv = 100;
  private nextNodePort = 30000;
  private listening = false;
  private afterList: (() => void) | undefined;
  port = 0;
  /**
   * While set, a list is taken and never answered, as an API server that accepts connections
   * before its storage is ready (k3s starting) does. Counted in `stats.lists` all the same.
   */
  stallLists = false;

  constructor(private readonly pki: TestPki) {
    this.server = https.createServer({ key: pki.serverKey, cert: pki.serverCert }, (req, res) => {
      this.handle(req, res);
    });
    this.server.on('connection', (socket: Socket) => {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
    });
    // A client that goes away mid-handshake is not the test's business.
    this.server.on('tlsClientError', () => undefined);
  }

  get url(): string {
    return `https://127.0.0.1:${String(this.port)}`;
  }

  get resourceVersion(): string {
    return String(this.rv);
  }

  /** Client connections open right now. */
  get openConnections(): number {
    return this.sockets.size;
  }

  /** Open watches right now. */
  get openWatches(): number {
    return this.watchers.size;
  }

  /** Listens on 127.0.0.1 (the same port as before after a `stop()`). */
  async start(): Promise<void> {
    if (this.listening) return;
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.port, '127.0.0.1', () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    this.port = (this.server.address() as { port: number }).port;
    this.listening = true;
  }

  /** Closes the port (new connections are refused) and drops every open connection. */
  async stop(): Promise<void> {
    if (!this.listening) return;
    this.listening = false;
    const closed = new Promise<void>((resolve) => this.server.close(() => { resolve(); }));
    this.dropConnections();
    await closed;
  }

  /** Destroys every open connection, watches included, without a clean end. */
  dropConnections(): void {
    this.watchers.clear();
    for (const socket of this.sockets) socket.destroy();
  }

  /** A kubeconfig for this server: its URL, the test CA and the bearer token. */
  kubeconfig(token = this.token): string {
    const ca = Buffer.from(this.pki.caCert).toString('base64');
    return [
      'apiVersion: v1',
      'kind: Config',
      'clusters:',
      '- name: fake',
      '  cluster:',
      `    server: ${this.url}`,
      `    certificate-authority-data: ${ca}`,
      'contexts:',
      '- name: fake',
      '  context:',
      '    cluster: fake',
      '    user: fake',
      'current-context: fake',
      'users:',
      '- name: fake',
      '  user:',
      `    token: ${token}`,
      '',
    ].join('\n');
  }

  /** Writes `kubeconfig()` to `path` the way tools replace files: a temp file renamed over it. */
  async writeKubeconfig(path: string, token = this.token): Promise<void> {
    const temp = `${path}.tmp-${randomBytes(4).toString('hex')}`;
    await writeFile(temp, this.kubeconfig(token));
    await rename(temp, path);
  }

  /** Creates a Service (ADDED to every watch); a NodePort or LoadBalancer port without nodePort gets one. */
  create(spec: FakeServiceSpec): ApiService {
    const namespace = spec.namespace ?? 'default';
    if (this.objects.has(`${namespace}/${spec.name}`)) throw new Error(`services "${spec.name}" already exists in ${namespace}`);
    const rv = ++this.rv;
    const svc: ApiService = {
      metadata: { name: spec.name, namespace, uid: randomUUID(), resourceVersion: String(rv), creationTimestamp: new Date().toISOString() },
      spec: { type: spec.type ?? 'ClusterIP', ports: this.allocate(spec.type ?? 'ClusterIP', spec.ports), clusterIP: `10.43.0.${String(rv % 250)}`, selector: { app: spec.name } },
      status: { loadBalancer: {} },
    };
    this.objects.set(`${namespace}/${spec.name}`, svc);
    this.record(rv, 'ADDED', svc);
    return clone(svc);
  }

  /** Changes a Service's type and/or ports (MODIFIED); changing to ClusterIP wipes nodePorts, as the real server does. */
  update(namespace: string, name: string, change: { type?: string; ports?: readonly FakeServicePort[] }): ApiService {
    const old = this.objects.get(`${namespace}/${name}`);
    if (!old) throw new Error(`services "${name}" not found in ${namespace}`);
    const type = change.type ?? old.spec.type;
    let ports = change.ports ?? old.spec.ports;
    if (type !== 'NodePort' && type !== 'LoadBalancer') ports = ports.map(withoutNodePort);
    const rv = ++this.rv;
    const svc: ApiService = {
      ...old,
      metadata: { ...old.metadata, resourceVersion: String(rv) },
      spec: { ...old.spec, type, ports: this.allocate(type, ports) },
    };
    this.objects.set(`${namespace}/${name}`, svc);
    this.record(rv, 'MODIFIED', svc);
    return clone(svc);
  }

  /** Deletes a Service (DELETED, carrying the deletion's resourceVersion). */
  delete(namespace: string, name: string): void {
    const old = this.objects.get(`${namespace}/${name}`);
    if (!old) throw new Error(`services "${name}" not found in ${namespace}`);
    this.objects.delete(`${namespace}/${name}`);
    const rv = ++this.rv;
    this.record(rv, 'DELETED', { ...old, metadata: { ...old.metadata, resourceVersion: String(rv) } });
  }

  /** Sends a BOOKMARK with the current resourceVersion to every watch that allowed bookmarks. */
  bookmark(): void {
    const event: WatchEvent = {
      type: 'BOOKMARK',
      object: { kind: 'Service', apiVersion: 'v1', metadata: { resourceVersion: String(this.rv), creationTimestamp: null }, spec: {}, status: { loadBalancer: {} } },
    };
    for (const w of this.watchers) if (w.bookmarks) this.write(w.res, event);
  }

  /** Forgets the history so far: a watch from any resourceVersion before now gets 410 Gone. */
  compact(): void {
    this.oldestRv = this.rv;
    this.history = [];
  }

  /** Ends every open watch with an ERROR 410 Expired event, as when its window fell out of the history. */
  expireWatches(): void {
    this.compact();
    for (const w of [...this.watchers]) {
      this.watchers.delete(w);
      this.stats.gone++;
      this.write(w.res, { type: 'ERROR', object: expired(w.from, this.rv) });
      w.res.end();
    }
  }

  /** Runs `fn` right after the next list response has been sent, before the client can watch. */
  afterNextList(fn: () => void): void {
    this.afterList = fn;
  }

  /** Closes everything. */
  async close(): Promise<void> {
    await this.stop();
  }

  private allocate(type: string, ports: readonly FakeServicePort[]): FakeServicePort[] {
    const needs = type === 'NodePort' || type === 'LoadBalancer';
    return ports.map((p) => (needs && p.nodePort === undefined ? { ...p, nodePort: this.nextNodePort++ } : { ...p }));
  }

  private record(rv: number, type: WatchEvent['type'], svc: ApiService): void {
    const event: WatchEvent = { type, object: { kind: 'Service', apiVersion: 'v1', ...clone(svc) } };
    this.history.push({ rv, event });
    for (const w of this.watchers) this.write(w.res, event);
  }

  private write(res: ServerResponse, event: WatchEvent): void {
    if (!res.writableEnded && !res.destroyed) res.write(`${JSON.stringify(event)}\n`);
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    this.stats.requests.push(`${req.method ?? '?'} ${req.url ?? ''}`);
    const url = new URL(req.url ?? '/', 'https://fake');
    if (req.headers.authorization !== `Bearer ${this.token}`) {
      this.stats.unauthorized++;
      sendStatus(res, 401, 'Unauthorized', 'Unauthorized');
      return;
    }
    if (url.pathname !== '/api/v1/services') {
      sendStatus(res, 404, 'NotFound', 'the server could not find the requested resource');
      return;
    }
    if (req.method !== 'GET') {
      sendStatus(res, 405, 'MethodNotAllowed', `the server does not allow this method on the requested resource`);
      return;
    }
    const watch = url.searchParams.get('watch');
    if (watch === 'true' || watch === '1') this.watch(url, req, res);
    else this.list(res);
  }

  private list(res: ServerResponse): void {
    this.stats.lists++;
    if (this.stallLists) return;
    const items = [...this.objects.values()].map(clone);
    const body = JSON.stringify({ kind: 'ServiceList', apiVersion: 'v1', metadata: { resourceVersion: String(this.rv) }, items });
    res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
    const hook = this.afterList;
    this.afterList = undefined;
    res.end(body, () => hook?.());
  }

  private watch(url: URL, req: IncomingMessage, res: ServerResponse): void {
    this.stats.watches++;
    const rvParam = url.searchParams.get('resourceVersion') ?? '';
    const from = rvParam === '' || rvParam === '0' ? undefined : Number(rvParam);
    if (from !== undefined && !Number.isSafeInteger(from)) {
      sendStatus(res, 400, 'BadRequest', `resourceVersion: Invalid value: "${rvParam}": must be a resource version`);
      return;
    }
    res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-cache, private', 'Transfer-Encoding': 'chunked' });
    res.flushHeaders();
    if (from !== undefined && from < this.oldestRv) {
      this.stats.gone++;
      this.write(res, { type: 'ERROR', object: expired(from, this.rv) });
      res.end();
      return;
    }
    if (from === undefined) {
      for (const svc of this.objects.values()) this.write(res, { type: 'ADDED', object: { kind: 'Service', apiVersion: 'v1', ...clone(svc) } });
    } else {
      for (const { rv, event } of this.history) if (rv > from) this.write(res, event);
    }
    const watcher: Watcher = { res, bookmarks: url.searchParams.get('allowWatchBookmarks') === 'true', from: from ?? this.rv };
    this.watchers.add(watcher);
    const timeoutSeconds = Number(url.searchParams.get('timeoutSeconds') ?? '0');
    const timer = timeoutSeconds > 0 ? setTimeout(() => {
      this.watchers.delete(watcher);
      res.end();
    }, timeoutSeconds * 1000).unref() : undefined;
    const done = (): void => {
      clearTimeout(timer);
      this.watchers.delete(watcher);
    };
    req.on('close', done);
    res.on('close', done);
  }
}

/** Starts a fake API server on 127.0.0.1 (a free port) with the given PKI. */
export async function startFakeApiServer(pki: TestPki): Promise<FakeApiServer> {
  const server = new FakeApiServer(pki);
  await server.start();
  return server;
}

function expired(from: number, current: number): object {
  return {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message: `too old resource version: ${String(from)} (${String(current)})`,
    reason: 'Expired',
    code: 410,
  };
}

function sendStatus(res: ServerResponse, code: number, reason: string, message: string): void {
  const body = JSON.stringify({ kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code });
  res.writeHead(code, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

function withoutNodePort(p: FakeServicePort): FakeServicePort {
  return {
    ...(p.name !== undefined && { name: p.name }),
    ...(p.protocol !== undefined && { protocol: p.protocol }),
    port: p.port,
    ...(p.targetPort !== undefined && { targetPort: p.targetPort }),
  };
}

function clone<T>(value: T): T {
  return structuredClone(value);
}
