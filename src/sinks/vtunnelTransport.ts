import net from 'node:net';
import { Observable, type ObservableInput } from 'rxjs';

/**
 * How the vtunnel sink delivers one message: resolve (or complete) once the peer has taken the
 * line, fail otherwise. A promise works; an Observable is better, because unsubscribing cancels
 * it (the sink does so on shutdown and on its own timeout).
 */
export type VtunnelSend = (line: string) => ObservableInput<void>;

export interface VtunnelAddress {
  readonly host: string;
  readonly port: number;
}

/**
 * Parses `-vtunnelAddr`: `host:port`, `[v6]:port`. Throws an error that names the flag, so a
 * typo is reported at start-up rather than as an endless series of failed writes.
 */
export function parseVtunnelAddress(address: string): VtunnelAddress {
  if (address.startsWith('vsock://')) {
    throw new Error(`-vtunnelAddr ${address}: AF_VSOCK peers are not supported yet; use the TCP peer (host:port)`);
  }
  const match = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(address);
  const host = match?.[1] ?? match?.[2];
  const port = Number(match?.[3]);
  if (host === undefined || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new Error(`-vtunnelAddr ${JSON.stringify(address)}: expected host:port, e.g. 127.0.0.1:3040`);
  }
  return { host, port };
}

/**
 * One message per TCP connection, as the wire wants: connect, write the line, half-close, and
 * succeed when the peer closes its end (it has read up to our end of stream by then). Fails on
 * a refused or reset connection, or when the whole exchange takes longer than `timeoutMs`.
 * Unsubscribing destroys the socket.
 */
export function tcpSender(host: string, port: number, timeoutMs: number): (line: string) => Observable<void> {
  const peer = host.includes(':') ? `[${host}]:${String(port)}` : `${host}:${String(port)}`;
  return (line) =>
    new Observable<void>((subscriber) => {
      const socket = net.connect({ host, port });
      const timer = setTimeout(() => {
        socket.destroy(new Error(`no close from the vtunnel peer ${peer} within ${String(timeoutMs)} ms`));
      }, timeoutMs);
      socket.once('connect', () => socket.end(line));
      // The peer owes no reply; drain whatever it sends so its end of stream can arrive.
      socket.resume();
      socket.once('error', (err) => {
        subscriber.error(err.message.includes(peer) ? err : new Error(`vtunnel peer ${peer}: ${err.message}`));
      });
      socket.once('close', (hadError) => {
        clearTimeout(timer);
        if (!hadError) subscriber.complete();
      });
      return () => {
        clearTimeout(timer);
        socket.destroy();
      };
    });
}
