import dgram from 'node:dgram';
import net from 'node:net';
import { Observable } from 'rxjs';
import { moduleLogger, type Logger } from '../log.js';
import { udpFlowTable, type UdpFlow } from '../udpFlows.js';
import { inSubnet, type ForwarderSpec } from './plan.js';

/**
 * The loopback forwarders' sockets (docs/loopback.md): listen on the VM's connect address only,
 * take connections and datagrams only from the subnets the host end is on, and carry each to the
 * forward's loopback address on the same port. Subscribing listens (and emits once it does), an
 * error means the listen failed (with the error's `code`, e.g. EADDRINUSE or EADDRNOTAVAIL), and
 * unsubscribing closes the listener and everything it carries. Nothing outlives the process: a
 * killed agent leaves no socket and no rule behind.
 */

/** How a loopback forwarder bounds its UDP flows and buffers, and where it logs. */
export interface ForwarderOptions {
  /** A UDP flow (one peer address and port) closes after this long without a datagram either way. */
  readonly udpIdleTimeoutMs?: number | undefined;
  /** At most this many UDP flows per forwarder; the least recently used makes room. */
  readonly maxUdpFlows?: number | undefined;
  /** Read buffer of the download direction (loopback service to host), passed on without a copy. */
  readonly readBufferBytes?: number | undefined;
  /** Where it logs, through a child naming its module; without one it logs nothing. */
  readonly logger?: Logger | undefined;
}

/** The values a forwarder uses for the options left out. */
export const forwarderDefaults = { udpIdleTimeoutMs: 60_000, maxUdpFlows: 1024, readBufferBytes: 256 * 1024 } as const;

/** The forwarder for `spec`'s protocol. */
export function openForwarder(spec: ForwarderSpec, opts: ForwarderOptions = {}): Observable<void> {
  return spec.protocol === 'udp' ? udpForwarder(spec, opts) : tcpForwarder(spec, opts);
}

const allowed = (spec: ForwarderSpec, peer: string | undefined): boolean => peer !== undefined && spec.allow.some((cidr) => inSubnet(peer, cidr));

/**
 * TCP, full duplex with half-close: each side's end of stream is passed on and the other
 * direction keeps flowing; a reset or error on one side resets the other. Back-pressure both
 * ways: the upload is piped, and the download reads into one buffer that is written on as it is
 * and read into again only once that write is done, so a slow reader slows the writer and memory
 * stays at one buffer per direction. A peer outside the allowed subnets is reset unread.
 */
export function tcpForwarder(spec: ForwarderSpec, opts: ForwarderOptions = {}): Observable<void> {
  const log = moduleLogger('loopback', opts.logger);
  const bufferBytes = opts.readBufferBytes ?? forwarderDefaults.readBufferBytes;
  return new Observable<void>((subscriber) => {
    const sockets = new Set<net.Socket>();
    const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true });
    let listening = false;
    server.on('connection', (client) => {
      if (!allowed(spec, client.remoteAddress)) {
        client.on('error', ignore);
        log.debug({ key: spec.key, peer: client.remoteAddress }, `${spec.key}: refused a connection from ${client.remoteAddress ?? '?'}, outside ${spec.allow.join(', ')}`);
        client.resetAndDestroy();
        return;
      }
      const buffer = Buffer.allocUnsafe(bufferBytes);
      const upstream: net.Socket = net.connect({
        host: spec.dialIp,
        port: spec.port,
        allowHalfOpen: true,
        noDelay: true,
        onread: {
          buffer,
          callback: (n: number, buf: Uint8Array) => {
            client.write(buf.subarray(0, n), (err) => {
              if (!err) upstream.resume();
            });
            return false;
          },
        },
      });
      client.on('error', () => {
        if (!upstream.destroyed) upstream.resetAndDestroy();
      });
      sockets.add(client);
      sockets.add(upstream);
      // A side that closes before its partner was ended leaves nothing to carry the other way (a
      // write into a closed client would otherwise leave the upstream paused for good); a partner
      // already ended is left to flush what it holds and close by itself.
      client.once('close', () => {
        sockets.delete(client);
        if (!upstream.writableEnded) upstream.destroy();
      });
      upstream.once('close', () => {
        sockets.delete(upstream);
        if (!client.writableEnded) client.destroy();
      });
      upstream.on('error', (err) => {
        log.debug({ key: spec.key, err: err.message }, `${spec.key}: ${spec.dialIp}:${String(spec.port)} failed: ${err.message}`);
        if (!client.destroyed) client.resetAndDestroy();
      });
      upstream.once('end', () => client.end());
      client.pipe(upstream);
    });
    server.on('error', (err) => {
      if (!listening) subscriber.error(err);
      else log.warn({ key: spec.key, err: err.message }, `${spec.key}: the forwarder's listener reported: ${err.message}`);
    });
    server.listen({ host: spec.listenIp, port: spec.port, ipv6Only: spec.listenIp.includes(':'), exclusive: true }, () => {
      listening = true;
      subscriber.next();
    });
    return () => {
      server.close();
      for (const socket of sockets) socket.destroy();
      sockets.clear();
    };
  });
}

function ignore(): void {
  // a reset connection may still report its own reset
}

/**
 * UDP: each peer address and port is a flow with a socket of its own connected to the loopback
 * address, so replies go back to the peer that asked and nothing else is taken as a reply. A
 * flow closes after `udpIdleTimeoutMs` without a datagram either way; past `maxUdpFlows` the
 * least recently used one closes. Datagrams from outside the allowed subnets are dropped.
 */
export function udpForwarder(spec: ForwarderSpec, opts: ForwarderOptions = {}): Observable<void> {
  const log = moduleLogger('loopback', opts.logger);
  const idleMs = opts.udpIdleTimeoutMs ?? forwarderDefaults.udpIdleTimeoutMs;
  const maxFlows = opts.maxUdpFlows ?? forwarderDefaults.maxUdpFlows;
  const type = spec.listenIp.includes(':') ? 'udp6' : 'udp4';
  return new Observable<void>((subscriber) => {
    const listener = dgram.createSocket({ type, ipv6Only: type === 'udp6' });
    const flows = udpFlowTable<UdpFlow>(idleMs, maxFlows);
    let listening = false;
    const open = (key: string, peer: dgram.RemoteInfo): UdpFlow =>
      flows.open(key, (timer) => {
        const socket = dgram.createSocket(type);
        socket.on('message', (reply) => {
          flows.touch(key);
          listener.send(reply, peer.port, peer.address);
        });
        socket.on('error', (err) => {
          log.debug({ key: spec.key, err: err.message }, `${spec.key}: a UDP flow failed: ${err.message}`);
          flows.close(key);
        });
        socket.connect(spec.port, spec.dialIp);
        return { socket, timer };
      });
    listener.on('message', (msg, peer) => {
      if (!allowed(spec, peer.address)) return;
      const key = `${peer.address}|${String(peer.port)}`;
      const { socket } = flows.touch(key) ?? open(key, peer);
      // Sent once the flow's socket is connected (at once after the first datagram).
      const send = (): void => {
        socket.send(msg, (err) => {
          if (err) log.debug({ key: spec.key, err: err.message }, `${spec.key}: could not pass a datagram on: ${err.message}`);
        });
      };
      try {
        socket.remoteAddress();
        send();
      } catch {
        socket.once('connect', send);
      }
    });
    listener.on('error', (err) => {
      if (!listening) subscriber.error(err);
      else log.warn({ key: spec.key, err: err.message }, `${spec.key}: the forwarder's UDP socket reported: ${err.message}`);
    });
    listener.bind({ address: spec.listenIp, port: spec.port, exclusive: true }, () => {
      listening = true;
      subscriber.next();
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
