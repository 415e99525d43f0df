/**
 * The loopback forwarder's sockets (src/loopback/forwarder.ts) against real ones, across a veth
 * pair between a namespace made here (the "host", 10.213.N.1 and fd13:213:N::1) and the root
 * namespace (the "VM", 10.213.N.2 and fd13:213:N::2): IPv4 and IPv6 (`::1`), TCP half-close both
 * ways, UDP replies per flow, and peers outside the allowed subnet refused.
 */
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import net from 'node:net';
import type { TestContext } from 'node:test';
import type { Subscription } from 'rxjs';
import { pino } from 'pino';
import { tcpForwarder, udpForwarder } from '../src/loopback/forwarder.js';
import type { ForwarderSpec } from '../src/loopback/plan.js';
import { engineTest, run } from './engines.js';
import { makeNsPair, runBytes, udpClient, type NsPair } from './loopbackHarness.js';

const node = process.execPath;
const log = pino({ level: 'silent' });

function spec(protocol: 'tcp' | 'udp', listenIp: string, port: number, dialIp: string, allow: string): ForwarderSpec {
  return { key: `${protocol}/${listenIp}:${String(port)}`, protocol, listenIp, port, dialIp, allow: [allow], forward: { protocol, hostIp: dialIp, hostPort: port, source: 'test', owner: 't' } };
}

/** A TCP client in the host namespace: sends `text`, half-closes, prints everything it gets until the server's end. */
const halfCloseClient = `
const net = require('node:net');
const [host, port, text] = process.argv.slice(1);
const s = net.connect({ host, port: Number(port), allowHalfOpen: true }, () => { s.end(text); });
let got = '';
s.on('data', (c) => (got += c));
s.on('end', () => { process.stdout.write(got); s.end(); });
s.on('error', (e) => { console.error(e.code || e.message); process.exit(3); });
`;

/** A server on `ip:port` that answers only after the client's end of stream, then ends too. */
async function halfCloseServer(t: TestContext, ip: string, port: number): Promise<void> {
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    let got = '';
    socket.on('data', (c: Buffer) => (got += c.toString()));
    socket.on('end', () => socket.end(`after your end: ${got}`));
  });
  await new Promise<void>((resolve) => server.listen({ host: ip, port, ipv6Only: ip.includes(':') }, resolve));
  t.after(() => new Promise((resolve) => server.close(resolve)));
}

async function udpEchoServer(t: TestContext, ip: string, port: number): Promise<void> {
  const socket = dgram.createSocket(ip.includes(':') ? 'udp6' : 'udp4');
  socket.on('message', (m, r) => { socket.send(`echo:${m.toString()}`, r.port, r.address); });
  await new Promise<void>((resolve) => socket.bind(port, ip, resolve));
  t.after(() => { socket.close(); });
}

const udpClient6 = udpClient.replace("createSocket('udp4')", "createSocket('udp6')");

async function hold(t: TestContext, s: ForwarderSpec): Promise<void> {
  const forwarder = s.protocol === 'tcp' ? tcpForwarder(s, { logger: log }) : udpForwarder(s, { logger: log });
  let sub: Subscription | undefined;
  await new Promise<void>((resolve, reject) => {
    sub = forwarder.subscribe({ next: () => { resolve(); }, error: reject });
  });
  t.after(() => sub?.unsubscribe());
}

async function addIPv6(t: TestContext, pair: NsPair): Promise<{ vm6: string; host6: string }> {
  const octet = pair.vmAddr.split('.')[2] ?? '0';
  const vm6 = `fd13:213:${octet}::2`;
  const host6 = `fd13:213:${octet}::1`;
  await run('ip', ['-6', 'addr', 'add', `${vm6}/64`, 'dev', pair.vethVm, 'nodad']);
  await run('ip', ['-n', pair.ns, '-6', 'addr', 'add', `${host6}/64`, 'dev', `plh${pair.vethVm.slice(3)}`, 'nodad']);
  t.diagnostic(`IPv6 ${host6} -> ${vm6}`);
  return { vm6, host6 };
}

engineTest('loopback forwarder: TCP half-close and UDP per-flow replies over IPv4 and IPv6 (::1); peers outside the subnet refused', { needs: ['root', 'ip', 'busybox'], timeout: 120_000 }, async (t) => {
  const cleanups: (() => Promise<unknown>)[] = [];
  t.after(async () => { for (const c of cleanups.reverse()) await c(); });
  const pair = await makeNsPair('f', cleanups);
  const { vm6 } = await addIPv6(t, pair);
  const port = 45_000 + Math.floor(Math.random() * 900) * 2;
  const inHost = (...args: string[]): Promise<Buffer> => runBytes('ip', ['netns', 'exec', pair.ns, node, ...args], 15_000);

  for (const [dial, listen, cidr, client] of [['127.0.0.1', pair.vmAddr, `${pair.vmAddr}/30`, udpClient], ['::1', vm6, `${vm6}/64`, udpClient6]] as const) {
    await halfCloseServer(t, dial, port);
    await udpEchoServer(t, dial, port);
    await hold(t, spec('tcp', listen, port, dial, cidr));
    await hold(t, spec('udp', listen, port, dial, cidr));
    const reply = await inHost('-e', halfCloseClient, listen, String(port), `hello ${dial}`);
    assert.equal(reply.toString(), `after your end: hello ${dial}`, `TCP through ${listen} to ${dial}: each end of stream passed on`);
    const [a, b] = await Promise.all([inHost('-e', client, listen, String(port), 'one'), inHost('-e', client, listen, String(port), 'two')]);
    assert.deepEqual([a.toString(), b.toString()], ['echo:one', 'echo:two'], `UDP through ${listen}: each flow gets its own reply`);
  }

  // A forwarder that allows another subnet: the host namespace's connection is reset, its datagram dropped.
  await halfCloseServer(t, '127.0.0.1', port + 1);
  await udpEchoServer(t, '127.0.0.1', port + 1);
  await hold(t, spec('tcp', pair.vmAddr, port + 1, '127.0.0.1', '10.99.0.0/16'));
  await hold(t, spec('udp', pair.vmAddr, port + 1, '127.0.0.1', '10.99.0.0/16'));
  await assert.rejects(inHost('-e', halfCloseClient, pair.vmAddr, String(port + 1), 'let me in'), /ECONNRESET|exit 3/);
  await assert.rejects(inHost('-e', udpClient, pair.vmAddr, String(port + 1), 'let me in'), /no reply/);
});
