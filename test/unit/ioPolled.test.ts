import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import net from 'node:net';
import { once } from 'node:events';
import { test } from 'node:test';
import { ioPolled } from '../../src/ioPolled.js';

test('ioPolled: a loopback connection started before it is open by the time it emits; one setImmediate is not enough', async () => {
  const server = net.createServer((s) => s.destroy());
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as net.AddressInfo;
  // Started from an I/O callback (a datagram arriving), as the agent starts a message from a
  // Docker event: that is the phase of the loop where one setImmediate comes too early.
  const udp = dgram.createSocket('udp4');
  udp.bind(0, '127.0.0.1');
  await once(udp, 'listening');
  const fromIo = (): Promise<{ atImmediate: boolean; atPolled: boolean }> =>
    new Promise((resolve, reject) => {
      udp.once('message', () => {
        const socket = net.connect({ host: '127.0.0.1', port });
        let open = false;
        socket.once('connect', () => (open = true));
        socket.on('error', () => undefined);
        let atImmediate = false;
        setImmediate(() => (atImmediate = open));
        ioPolled().subscribe({
          next: () => {
            resolve({ atImmediate, atPolled: open });
            socket.destroy();
          },
          error: reject,
        });
      });
      udp.send('x', udp.address().port, '127.0.0.1');
    });
  try {
    for (let i = 0; i < 20; i++) {
      const seen = await fromIo();
      assert.equal(seen.atImmediate, false, 'a single setImmediate already saw the connection open');
      assert.equal(seen.atPolled, true, `connection ${String(i)} was not open yet`);
    }
  } finally {
    udp.close();
    server.close();
  }
});

test('ioPolled: unsubscribing before it emits cancels it', async () => {
  let emitted = false;
  ioPolled().subscribe(() => (emitted = true)).unsubscribe();
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.equal(emitted, false);
});
