/**
 * A process that holds sockets for the host-network bench, on command over IPC (they must not be
 * the measuring process's own, which the source leaves out):
 * - `{ type: 'open', count }`: half TCP listeners, half bound UDP sockets, on 127.0.0.1, ephemeral ports;
 * - `{ type: 'listen', port }`: a TCP listener on 0.0.0.0:port, answered with the time listen() completed;
 * - `{ type: 'close', port }`, `{ type: 'closeAll' }`.
 * Times are `performance.timeOrigin + performance.now()`, comparable across processes.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { performance } from 'node:perf_hooks';

type Command = { type: 'open'; count: number } | { type: 'listen'; port: number } | { type: 'close'; port: number } | { type: 'closeAll' };

const bulk: (net.Server | dgram.Socket)[] = [];
const listeners = new Map<number, net.Server>();
const send = (m: object): void => {
  process.send?.(m);
};

async function open(count: number): Promise<void> {
  const tcp = Math.ceil(count / 2);
  const made: Promise<void>[] = [];
  for (let i = 0; i < count; i++) {
    made.push(
      new Promise<void>((resolve) => {
        if (i < tcp) {
          const s = net.createServer();
          s.listen(0, '127.0.0.1', resolve);
          bulk.push(s);
        } else {
          const s = dgram.createSocket('udp4');
          s.bind(0, '127.0.0.1', resolve);
          bulk.push(s);
        }
      }),
    );
  }
  await Promise.all(made);
}

process.on('message', (command: Command) => {
  void (async () => {
    switch (command.type) {
      case 'open':
        await open(command.count);
        send({ type: 'opened', count: bulk.length });
        break;
      case 'listen': {
        const s = net.createServer();
        s.listen(command.port, '0.0.0.0', () => {
          send({ type: 'listening', port: command.port, at: performance.timeOrigin + performance.now() });
        });
        listeners.set(command.port, s);
        break;
      }
      case 'close':
        listeners.get(command.port)?.close();
        listeners.delete(command.port);
        send({ type: 'closed', port: command.port });
        break;
      case 'closeAll':
        for (const s of bulk.splice(0)) s.close();
        for (const s of listeners.values()) s.close();
        listeners.clear();
        send({ type: 'closedAll' });
        break;
    }
  })();
});
process.on('disconnect', () => process.exit(0));
send({ type: 'ready' });
