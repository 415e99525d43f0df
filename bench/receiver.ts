import { spawn } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export interface Received {
  /**
   * performance.now() of this process when the message was complete: at its newline, where the
   * host side (ours, src/host/receiver.ts, and Rancher Desktop's) acts on it.
   */
  readonly at: number;
  /** The same instant in wall-clock ms, to sub-ms precision: comparable with an engine's timeNano / 1e6. */
  readonly wallMs: number;
  /** Wall-clock ms when the agent's end of stream followed, one turn of its event loop later or more. */
  readonly closedWallMs: number;
  readonly remove: boolean;
  readonly hostPorts: number[];
}

export interface Receiver {
  readonly port: number;
  readonly messages: Received[];
  close(): Promise<void>;
}

/** A vtunnel peer for benchmarks, in this process: stamps each PortMapping message when its line is complete. */
export async function startReceiver(onMessage?: (message: Received) => void): Promise<Receiver> {
  const messages: Received[] = [];
  const server = net.createServer((socket) => {
    let text = '';
    let at: number | undefined;
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      text += chunk;
      if (at === undefined && chunk.includes('\n')) at = performance.now();
    });
    socket.on('end', () => {
      const closed = performance.now();
      at ??= closed; // no newline: complete only now
      const wallMs = performance.timeOrigin + at;
      const msg = JSON.parse(text) as { remove: boolean; ports: Record<string, { HostPort: string }[]> };
      const hostPorts = Object.values(msg.ports).flatMap((bindings) => bindings.map((b) => Number(b.HostPort)));
      const received = { at, wallMs, closedWallMs: performance.timeOrigin + closed, remove: msg.remove, hostPorts };
      messages.push(received);
      onMessage?.(received);
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

/**
 * The same peer in a process of its own (receiverMain.ts), as the real vtunnel peer is: its
 * stamps do not wait for this process's own work (engine calls, the bench's event stream). Each
 * message reaches `messages` a little later, with `at` on this process's clock.
 */
export async function startReceiverProcess(): Promise<Receiver> {
  const main = fileURLToPath(new URL('receiverMain.ts', import.meta.url));
  const child = spawn(process.execPath, ['--import', 'tsx', main], { stdio: ['pipe', 'pipe', 'inherit'] });
  const messages: Received[] = [];
  const lines = createInterface({ input: child.stdout });
  const port = await new Promise<number>((resolve, reject) => {
    child.once('exit', (code) => { reject(new Error(`the receiver process exited (${String(code)}) before listening`)); });
    lines.on('line', (line) => {
      const value = JSON.parse(line) as { port: number } | Received;
      if ('port' in value) resolve(value.port);
      else messages.push({ ...value, at: value.wallMs - performance.timeOrigin });
    });
  });
  return {
    port,
    messages,
    close: async () => {
      child.stdin.end();
      if (child.exitCode === null) await once(child, 'exit');
    },
  };
}
