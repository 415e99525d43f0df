import dgram from 'node:dgram';
import net from 'node:net';
import { Observable } from 'rxjs';
import { moduleLogger, type Logger } from '../log.js';
import { udpFlowTable, type UdpFlow } from '../udpFlows.js';
import type { OpenProxy, ProxyEvent } from './bindings.js';
import { hostPort } from './targets.js';
import { type HostBinding } from '../wire/parsePortMapping.js';

/**
 * The proxies of the host side: for one binding, listen on `HostIp:HostPort` and carry every
 * connection (TCP) or flow (UDP) to the VM address on the same port. Each is an Observable:
 * subscribing listens, an error means the listen failed, unsubscribing closes the listener and
 * everything it carries.
 */

/** How the host's proxies connect, buffer, bound UDP flows and log. */
export interface ProxyOptions {
  /** A UDP flow (one client address and port) is closed after this long without a datagram either way. */
  readonly udpIdleTimeoutMs?: number | undefined;
  /** At most this many UDP flows per binding; the least recently used is closed to make room. */
  readonly maxUdpFlows?: number | undefined;
  /** Bound on connecting to the VM; the client's connection is reset when it passes. */
  readonly connectTimeoutMs?: number | undefined;
  /**
   * Stream high-water mark of a TCP connection's sockets. It bounds an upload only where the
   * client's socket is piped (a Node whose internals `withReadBuffer` does not recognise); the
   * relays write one read buffer at a time and wait for it.
   */
  readonly highWaterMark?: number | undefined;
  /**
   * Read buffer of each direction of a TCP connection: each read takes up to this much, and it is
   * passed on without a copy. 512 KiB keeps a proxied transfer within about 0.8 of a direct one
   * on loopback (64 KiB, Node's own: about 0.6).
   */
  readonly readBufferBytes?: number | undefined;
  /** Where it logs, through a child naming its module; without one it logs nothing. */
  readonly logger?: Logger | undefined;
}

/** The values the proxies use for the options left out. */
export const proxyDefaults = {
  udpIdleTimeoutMs: 60_000,
  maxUdpFlows: 4096,
  connectTimeoutMs: 10_000,
  highWaterMark: 256 * 1024,
  readBufferBytes: 512 * 1024,
} as const;

/** Whether an upload was piped (see `withReadBuffer`), so that this is logged once per process. */
let pipedUploads = false;

/** The proxy for `binding`'s protocol, as `manageBindings` wants it. */
export function proxyOpener(opts: ProxyOptions = {}): OpenProxy {
  // One child logger shared by every proxy, not one made per binding.
  const withLog = { ...opts, logger: moduleLogger('host-proxy', opts.logger) };
  return (binding, target) => (binding.protocol === 'udp' ? openUdp(binding, target, withLog) : openTcp(binding, target, withLog));
}

/** Options whose logger is already the module's own. */
type WithLog = ProxyOptions & { readonly logger: Logger };

/**
 * TCP: full duplex, and a slow reader on either side pauses the other, so memory stays bounded.
 * Each direction reads into a buffer of its own (`readBufferBytes`) that is written on without a
 * copy, and reading resumes only once that write is done (`relay`): one buffer of memory per
 * direction, and large reads and writes, twice the throughput of a pipe on loopback.
 * Half-close is honoured (each side's end of stream is passed on and the other direction keeps
 * flowing); a reset or error on one side resets the other. A connection that cannot reach the
 * VM is reset.
 */
export function tcpProxy(binding: HostBinding, target: () => string, opts: ProxyOptions = {}): Observable<ProxyEvent> {
  return openTcp(binding, target, { ...opts, logger: moduleLogger('host-proxy', opts.logger) });
}

function openTcp(binding: HostBinding, target: () => string, opts: WithLog): Observable<ProxyEvent> {
  const log = opts.logger;
  const connectTimeoutMs = opts.connectTimeoutMs ?? proxyDefaults.connectTimeoutMs;
  const highWaterMark = opts.highWaterMark ?? proxyDefaults.highWaterMark;
  const readBufferBytes = opts.readBufferBytes ?? proxyDefaults.readBufferBytes;
  const where = hostPort(binding.hostIp, binding.hostPort);
  return new Observable<ProxyEvent>((subscriber) => {
    const sockets = new Set<net.Socket>();
    const server = net.createServer({ allowHalfOpen: true, noDelay: true, highWaterMark, pauseOnConnect: true });
    let listening = false;

    server.on('connection', (accepted) => {
      const to = target();
      // Each direction reads into a buffer of its own and writes it on without a copy.
      const client: net.Socket = withReadBuffer(accepted, relay(() => upstream, () => client, readBufferBytes), server);
      // Node passes stream options through to the socket; the typings just do not list them.
      const connectOptions: net.NetConnectOpts & { writableHighWaterMark: number } = {
        host: to,
        port: binding.hostPort,
        allowHalfOpen: true,
        noDelay: true,
        onread: relay(() => client, () => upstream, readBufferBytes),
        writableHighWaterMark: highWaterMark,
      };
      const upstream: net.Socket = net.connect(connectOptions);
      sockets.add(client);
      sockets.add(upstream);
      let connected = false;
      upstream.setTimeout(connectTimeoutMs, () => {
        upstream.destroy(new Error(`no connection to ${hostPort(to, binding.hostPort)} within ${String(connectTimeoutMs)} ms`));
      });
      upstream.once('connect', () => {
        connected = true;
        upstream.setTimeout(0);
      });
      upstream.on('error', (err) => {
        if (!connected) log.debug({ where, to, err: err.message }, `a connection to ${where} could not reach the VM: ${err.message}`);
        if (!client.destroyed) client.resetAndDestroy();
      });
      client.on('error', () => {
        if (!upstream.destroyed) upstream.resetAndDestroy();
      });
      client.once('close', () => sockets.delete(client));
      upstream.once('close', () => sockets.delete(upstream));
      // Each end of stream is passed on as a half-close; the other way keeps flowing.
      if (client === accepted) {
        // No read buffer of our own: a pipe, 64 KiB reads (about 0.6 of a direct upload).
        if (!pipedUploads) log.info({ where }, `this Node's sockets take no read buffer of their own; uploads through ${where} and the rest are piped`);
        pipedUploads = true;
        client.pipe(upstream);
      } else {
        client.once('end', () => upstream.end());
      }
      upstream.once('end', () => client.end());
    });

    server.on('error', (err) => {
      if (!listening) subscriber.error(err);
      else log.warn({ where, err: err.message }, `the listener on ${where} (tcp) reported: ${err.message}`);
    });
    server.listen({ host: binding.hostIp, port: binding.hostPort, ipv6Only: binding.hostIp.includes(':'), exclusive: true }, () => {
      listening = true;
      subscriber.next({ type: 'listening' });
    });

    return () => {
      server.close();
      for (const socket of sockets) socket.destroy();
      sockets.clear();
    };
  });
}

interface Flow extends UdpFlow {
  /** The VM address this flow was opened to. */
  readonly to: string;
}

/**
 * UDP: a relay. Each client address and port is a flow with its own socket towards the VM, so
 * replies find their way back to the client that asked; only datagrams from the VM address and
 * port count as replies. A flow closes after `udpIdleTimeoutMs` without traffic either way.
 */
export function udpProxy(binding: HostBinding, target: () => string, opts: ProxyOptions = {}): Observable<ProxyEvent> {
  return openUdp(binding, target, { ...opts, logger: moduleLogger('host-proxy', opts.logger) });
}

function openUdp(binding: HostBinding, target: () => string, opts: WithLog): Observable<ProxyEvent> {
  const log = opts.logger;
  const idleMs = opts.udpIdleTimeoutMs ?? proxyDefaults.udpIdleTimeoutMs;
  const maxFlows = opts.maxUdpFlows ?? proxyDefaults.maxUdpFlows;
  const where = hostPort(binding.hostIp, binding.hostPort);
  const v6 = binding.hostIp.includes(':');
  const type = v6 ? 'udp6' : 'udp4';
  return new Observable<ProxyEvent>((subscriber) => {
    const listener = dgram.createSocket({ type, ipv6Only: v6 });
    const flows = udpFlowTable<Flow>(idleMs, maxFlows);
    let listening = false;

    const open = (key: string, client: dgram.RemoteInfo): Flow =>
      flows.open(key, (timer) => {
        const to = target();
        const socket = dgram.createSocket(type);
        socket.on('message', (reply, from) => {
          if (from.address !== to || from.port !== binding.hostPort) return;
          flows.touch(key);
          listener.send(reply, client.port, client.address);
        });
        socket.on('error', (err) => {
          log.debug({ where, err: err.message }, `a UDP flow of ${where} failed: ${err.message}`);
          flows.close(key);
        });
        return { socket, to, timer };
      });

    listener.on('message', (msg, client) => {
      const key = `${client.address}|${String(client.port)}`;
      const flow = flows.touch(key) ?? open(key, client);
      flow.socket.send(msg, binding.hostPort, flow.to, (err) => {
        if (err) log.debug({ where, err: err.message }, `could not relay a datagram of ${where} to the VM: ${err.message}`);
      });
    });
    listener.on('error', (err) => {
      if (!listening) subscriber.error(err);
      else log.warn({ where, err: err.message }, `the listener on ${where} (udp) reported: ${err.message}`);
    });
    listener.bind({ address: binding.hostIp, port: binding.hostPort, exclusive: true }, () => {
      listening = true;
      subscriber.next({ type: 'listening' });
    });

    return () => {
      flows.closeAll();
      try {
        listener.close();
      } catch {
        // already closed: the bind failed
      }
    };
  });
}

/**
 * `accepted` re-made as a socket that reads into `onread.buffer`, as `net.connect` allows and
 * `net.Server` does not: without it the upload direction reads 64 KiB at a time and a proxied
 * upload runs at about 0.6 of a direct one on loopback (0.84 with it). The handle moves to a new
 * Socket (what the server itself does for each connection), the server's count of connections
 * moves with it, and `accepted`, which has not started reading (`pauseOnConnect`), is dropped.
 * If Node's internals are not as expected, `accepted` is returned as it is and still works.
 */
function withReadBuffer(accepted: net.Socket, onread: UserReadBuffer, server: net.Server): net.Socket {
  const internals = accepted as unknown as { _handle?: unknown; _server?: unknown };
  const handle = internals._handle;
  if (typeof handle !== 'object' || handle === null || internals._server !== server) return accepted;
  internals._handle = null;
  internals._server = null;
  const options = { handle, onread, allowHalfOpen: true, readable: true, writable: true };
  let socket: net.Socket;
  try {
    socket = new net.Socket(options);
  } catch {
    // A Node whose handles take no user buffer: give the handle back, and the pipe does it.
    internals._handle = handle;
    internals._server = server;
    return accepted;
  }
  Object.assign(socket, { _server: server, server });
  socket.setNoDelay(true);
  return socket;
}

/** Node's `onread` option: reads land in `buffer`; returning false pauses the socket. */
interface UserReadBuffer {
  readonly buffer: Buffer;
  readonly callback: (bytes: number, buffer: Uint8Array) => boolean;
}

/**
 * A read buffer of `bytes` whose every read is written to `to()` as it is, without a copy; the
 * reader (`from()`) is paused until that write is done, so the buffer is never overwritten while
 * in flight and a slow receiver slows the sender: one buffer of memory per direction.
 */
function relay(to: () => net.Socket, from: () => net.Socket, bytes: number): UserReadBuffer {
  return {
    buffer: Buffer.allocUnsafe(bytes),
    callback: (n, buffer) => {
      to().write(buffer.subarray(0, n), (err) => {
        if (!err) from().resume();
      });
      return false;
    },
  };
}
