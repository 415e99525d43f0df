import net from 'node:net';
import { Observable, type ObservableInput } from 'rxjs';

/**
 * How the vtunnel sink delivers one message: resolve (or complete) once the peer has taken the
 * line, fail otherwise. A promise works; an Observable is better, because unsubscribing cancels
 * it (the sink does so on shutdown and on its own timeout).
 */
export type VtunnelSend = (line: string) => ObservableInput<void>;

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
      socket.once('connect', () => {
        // Nothing listens on the peer's port and the kernel chose that very port as our source
        // port (possible for a loopback peer in the ephemeral range): TCP's simultaneous open
        // connected the socket to itself, and the line would "arrive" with nobody reading it.
        // Go's net.Dial treats a self-connect as a refused connection; so does this.
        if (socket.localPort === socket.remotePort && socket.localAddress === socket.remoteAddress) {
          socket.destroy(new Error(`connect ECONNREFUSED ${peer} (the socket connected to itself: nothing listens there)`));
          return;
        }
        socket.end(line);
      });
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
