import net from 'node:net';
import { performance } from 'node:perf_hooks';

export interface Received {
  /** performance.now() of this process at arrival. */
  readonly at: number;
  /** Wall-clock ms at arrival, to sub-ms precision: comparable with an engine's timeNano / 1e6. */
  readonly wallMs: number;
  readonly remove: boolean;
  readonly hostPorts: number[];
}

/** A vtunnel peer for benchmarks: stamps each PortMapping message on arrival. */
export async function startReceiver(): Promise<{ port: number; messages: Received[]; close: () => Promise<void> }> {
  const messages: Received[] = [];
  const server = net.createServer((socket) => {
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (text += chunk));
    socket.on('end', () => {
      const at = performance.now();
      const wallMs = performance.timeOrigin + at;
      const msg = JSON.parse(text) as { remove: boolean; ports: Record<string, { HostPort: string }[]> };
      const hostPorts = Object.values(msg.ports).flatMap((bindings) => bindings.map((b) => Number(b.HostPort)));
      messages.push({ at, wallMs, remove: msg.remove, hostPorts });
      socket.end();
    });
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    port,
    messages,
    close: () => new Promise((resolve) => server.close(() => { resolve(); })),
  };
}
