import dgram from 'node:dgram';
import net from 'node:net';
import { Observable } from 'rxjs';
import { moduleLogger, type Logger } from '../log.js';
import type { OpenProxy, ProxyEvent } from './bindings.js';
import { hostPort, type HostBinding } from './portMapping.js';

/**
 * The proxies of the host side: for one binding, listen on `HostIp:HostPort` and carry every
 * connection (TCP) or flow (UDP) to the VM address on the same port. Each is an Observable:
 * subscribing listens, an error means the listen failed, unsubscribing closes the listener and
 * everything it carries.
 */

export interface ProxyOptions {
  /** A UDP flow (one client address and port) is closed after this long without a datagram either way. */
  readonly udpIdleTimeoutMs?: number;
  /** At most this many UDP flows per binding; the least recently used is closed to make room. */
  readonly maxUdpFlows?: number;
  /** Bound on connecting to the VM; the client's connection is reset when it passes. */
  readonly connectTimeoutMs?: number;
  /** Stream high-water mark of a TCP connection's sockets (the upload direction buffers up to this). */
  readonly highWaterMark?: number;
  /**
   * Read buffer of a TCP connection's VM side, the download direction (VM to host client): each
   * read takes up to this much, and it is passed on without a copy. One per connection; 512 KiB
   * keeps a proxied download within about 0.8 of a direct one on loopback (64 KiB: about 0.6).
   */
  readonly readBufferBytes?: number;
  readonly log?: Logger;
}

export const proxyDefaults = {
  udpIdleTimeoutMs: 60_000,
  maxUdpFlows: 4096,
  connectTimeoutMs: 10_000,
  highWaterMark: 256 * 1024,
  readBufferBytes: 512 * 1024,
} as const;

/** The proxy for `binding`'s protocol, as `manageBindings` wants it. */
export function proxyOpener(opts: ProxyOptions = {}): OpenProxy {
  return (binding, target) => (binding.protocol === 'udp' ? udpProxy(binding, target, opts) : tcpProxy(binding, target, opts));
}

/**
 * TCP: full duplex, and a slow reader on either side pauses the other, so memory stays bounded:
 * - host client to VM: `pipe` (bounded by the high-water marks; Node offers no user read buffer
 *   for accepted sockets, so this direction reads 64 KiB at a time);
 * - VM to host client: each read lands in a per-connection buffer (`readBufferBytes`) that is
 *   written on without a copy, and reading resumes only once that write is done (one buffer of
 *   memory, and large reads and writes: twice the throughput of a pipe on loopback).
 * Half-close is honoured (each side's end of stream is passed on and the other direction keeps
 * flowing); a reset or error on one side resets the other. A connection that cannot reach the
 * VM is reset.
 */
export function tcpProxy(binding: HostBinding, target: () => string, opts: ProxyOptions = {}): Observable<ProxyEvent> {
  const log = opts.log ?? moduleLogger('host-proxy');
  const connectTimeoutMs = opts.connectTimeoutMs ?? proxyDefaults.connectTimeoutMs;
  const highWaterMark = opts.highWaterMark ?? proxyDefaults.highWaterMark;
  const readBufferBytes = opts.readBufferBytes ?? proxyDefaults.readBufferBytes;
  const where = hostPort(binding.hostIp, binding.hostPort);
  return new Observable<ProxyEvent>((subscriber) => {
    const sockets = new Set<net.Socket>();
    const server = net.createServer({ allowHalfOpen: true, noDelay: true, highWaterMark });
    let listening = false;

    server.on('connection', (client) => {
      const to = target();
      const onread = {
        buffer: Buffer.allocUnsafe(readBufferBytes),
        callback: (bytes: number, buffer: Uint8Array): boolean => {
          // The buffer is read into again only after this write is done: no copy, and back-pressure.
          client.write(buffer.subarray(0, bytes), (err) => {
            if (!err) upstream.resume();
          });
          return false; // pause until then
        },
      };
      // Node passes stream options through to the socket; the typings just do not list them.
      const connectOptions: net.NetConnectOpts & { writableHighWaterMark: number } = {
        host: to,
        port: binding.hostPort,
        allowHalfOpen: true,
        noDelay: true,
        onread,
        writableHighWaterMark: highWaterMark,
      };
      const upstream = net.connect(connectOptions);
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
      client.pipe(upstream);
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

interface Flow {
  readonly socket: dgram.Socket;
  /** The VM address this flow was opened to. */
  readonly to: string;
  readonly timer: NodeJS.Timeout;
}

/**
 * UDP: a relay. Each client address and port is a flow with its own socket towards the VM, so
 * replies find their way back to the client that asked; only datagrams from the VM address and
 * port count as replies. A flow closes after `udpIdleTimeoutMs` without traffic either way.
 */
export function udpProxy(binding: HostBinding, target: () => string, opts: ProxyOptions = {}): Observable<ProxyEvent> {
  const log = opts.log ?? moduleLogger('host-proxy');
  const idleMs = opts.udpIdleTimeoutMs ?? proxyDefaults.udpIdleTimeoutMs;
  const maxFlows = opts.maxUdpFlows ?? proxyDefaults.maxUdpFlows;
  const where = hostPort(binding.hostIp, binding.hostPort);
  const v6 = binding.hostIp.includes(':');
  const type = v6 ? 'udp6' : 'udp4';
  return new Observable<ProxyEvent>((subscriber) => {
    const listener = dgram.createSocket({ type, ipv6Only: v6 });
    /** In least recently used order: a flow is moved to the end on every datagram. */
    const flows = new Map<string, Flow>();
    let listening = false;

    const close = (key: string): void => {
      const flow = flows.get(key);
      if (!flow) return;
      flows.delete(key);
      clearTimeout(flow.timer);
      flow.socket.close();
    };

    const touch = (key: string, flow: Flow): void => {
      flow.timer.refresh();
      flows.delete(key);
      flows.set(key, flow);
    };

    const open = (key: string, client: dgram.RemoteInfo): Flow => {
      if (flows.size >= maxFlows) {
        const oldest = flows.keys().next();
        if (oldest.done !== true) close(oldest.value);
      }
      const to = target();
      const socket = dgram.createSocket(type);
      socket.on('message', (reply, from) => {
        if (from.address !== to || from.port !== binding.hostPort) return;
        const flow = flows.get(key);
        if (flow) touch(key, flow);
        listener.send(reply, client.port, client.address);
      });
      socket.on('error', (err) => {
        log.debug({ where, err: err.message }, `a UDP flow of ${where} failed: ${err.message}`);
        close(key);
      });
      const flow: Flow = { socket, to, timer: setTimeout(() => { close(key); }, idleMs) };
      flows.set(key, flow);
      return flow;
    };

    listener.on('message', (msg, client) => {
      const key = `${client.address}|${String(client.port)}`;
      let flow = flows.get(key);
      if (flow) touch(key, flow);
      else flow = open(key, client);
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
      for (const key of [...flows.keys()]) close(key);
      try {
        listener.close();
      } catch {
        // already closed: the bind failed
      }
    };
  });
}
