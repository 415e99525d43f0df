/**
 * `portstream host`, the receiver, alone on loopback: real sockets, real PortMapping messages
 * sent the way the agent sends them. The "VM" is a set of servers on 127.0.0.2 (all of 127/8
 * is loopback on Linux), so a binding on 127.0.0.1:P forwards to 127.0.0.2:P.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import net from 'node:net';
import { test, type TestContext } from 'node:test';
import { lastValueFrom, Observable, Subject, toArray } from 'rxjs';
import { pino } from 'pino';
import { runHost } from '../src/host/cli.js';
import { startHostReceiver, type HostEvent, type HostReceiver, type HostReceiverOptions } from '../src/host/receiver.js';
import type { Forward } from '../src/model.js';
import { tcpSender } from '../src/sinks/vtunnelTransport.js';
import { vtunnelSink } from '../src/sinks/vtunnel.js';
import { encodePortMapping, maxPortMappingBytes } from '../src/wire/portMapping.js';
import { recordingLogger } from '../marbles/helpers.js';

const VM = '127.0.0.2';
const vmAddrs = [{ network: 'ip+net', addr: `${VM}/8` }] as const;
const silent = pino({ level: 'silent' });

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function waitFor(what: string, condition: () => boolean | Promise<boolean>, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${String(timeoutMs)} ms waiting for ${what}`);
    await sleep(10);
  }
}

/** A port free on 127.0.0.1 (and, with a server on 127.0.0.2 bound right after, in use there by the test only). */
async function freePort(): Promise<number> {
  const probe = net.createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const { port } = probe.address() as net.AddressInfo;
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

function listen(server: net.Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

/** Closes a server and the connections it holds. */
function closeServer(server: net.Server, sockets: Set<net.Socket>): Promise<void> {
  for (const s of sockets) s.destroy();
  return new Promise((resolve) => server.close(() => { resolve(); }));
}

/** A TCP server on `host:port` that remembers its connections. */
async function tcpServer(t: TestContext, host: string, port: number, onConnection: (socket: net.Socket) => void) {
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    onConnection(socket);
  });
  await listen(server, port, host);
  let closed = false;
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    await closeServer(server, sockets);
  };
  t.after(close);
  return { server, sockets, close };
}

/** A VM-side echo server that says who it is first. */
function echoWithBanner(banner: string) {
  return (socket: net.Socket): void => {
    socket.write(`${banner}\n`);
    socket.pipe(socket);
  };
}

/** Connects to `port` on 127.0.0.1 and reads the first line; undefined when refused. */
async function firstLine(port: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      text += chunk;
      const nl = text.indexOf('\n');
      if (nl >= 0) {
        socket.destroy();
        resolve(text.slice(0, nl));
      }
    });
    socket.on('error', () => {
      resolve(undefined);
    });
    socket.on('close', () => {
      resolve(undefined);
    });
  });
}

function forward(hostPort: number, more: Partial<Forward> = {}): Forward {
  return { protocol: 'tcp', hostIp: '127.0.0.1', hostPort, containerPort: 80, source: 'docker', owner: 'c1', ...more };
}

/** Sends one message as the agent does (connect, write the line, half-close, wait for the close). */
function sendLine(receiver: HostReceiver, line: string): Promise<void> {
  return lastValueFrom(tcpSender('127.0.0.1', receiver.port, 2_000)(line), { defaultValue: undefined });
}

const addLine = (...forwards: Forward[]): string => encodePortMapping(false, forwards, vmAddrs);
const removeLine = (...forwards: Forward[]): string => encodePortMapping(true, forwards, vmAddrs);

async function startReceiver(t: TestContext, more: Partial<HostReceiverOptions> = {}) {
  const logger = recordingLogger();
  const receiver = await startHostReceiver({
    listen: { host: '127.0.0.1', port: 0 },
    backoff: { initialMs: 50, maxMs: 200, jitter: 0 },
    logger: logger.log,
    ...more,
  });
  const events: HostEvent[] = [];
  const sub = receiver.events$.subscribe((e) => events.push(e));
  t.after(async () => {
    sub.unsubscribe();
    await receiver.close();
  });
  return { receiver, events, lines: logger.lines };
}

test('the exact wire in: a listener appears and forwards to the VM address; a remove closes it and its connections', { timeout: 30_000 }, async (t) => {
  const port = await freePort();
  await tcpServer(t, VM, port, echoWithBanner('vm'));
  const { receiver, events } = await startReceiver(t);

  // Byte for byte what the contract shows, with this test's ports and addresses.
  const line = `{"remove":false,"ports":{"80/tcp":[{"HostIp":"127.0.0.1","HostPort":"${String(port)}"}]},"connectAddrs":[{"network":"ip+net","addr":"${VM}/8"}]}\n`;
  assert.equal(line, addLine(forward(port)), 'the agent writes exactly this');
  await sendLine(receiver, line);
  await waitFor('the binding', () => receiver.bindings().get(`tcp/127.0.0.1:${String(port)}`)?.state === 'listening');
  assert.deepEqual(receiver.bindings().get(`tcp/127.0.0.1:${String(port)}`), {
    binding: { protocol: 'tcp', hostIp: '127.0.0.1', hostPort: port, containerPort: 80 },
    target: VM,
    state: 'listening',
  });
  assert.equal(await firstLine(port), 'vm', 'a connection to the host port reaches the VM');

  // A connection that stays open across the remove.
  const held = net.connect(port, '127.0.0.1');
  held.on('error', () => undefined);
  await new Promise((resolve) => held.once('data', resolve));
  const heldClosed = new Promise((resolve) => held.once('close', resolve));

  await sendLine(receiver, removeLine(forward(port)));
  await waitFor('the binding to go', () => receiver.bindings().size === 0);
  await heldClosed;
  assert.equal(await firstLine(port), undefined, 'the host port is closed');
  assert.deepEqual(
    events.map((e) => e.type),
    ['message', 'bound', 'message', 'unbound'],
  );
});

test('the agent\'s vtunnel sink and this receiver: a state over the 64 KiB message limit arrives whole (in parts), and is withdrawn whole', { timeout: 30_000 }, async (t) => {
  // The proxies are stand-ins that listen on nothing: this is about the messages, not 1600 sockets.
  const opened = new Set<string>();
  const open: HostReceiverOptions['open'] = (binding) =>
    new Observable((subscriber) => {
      const key = `${binding.protocol}/${binding.hostIp}:${String(binding.hostPort)}`;
      opened.add(key);
      subscriber.next({ type: 'listening' });
      return () => opened.delete(key);
    });
  const { receiver, events } = await startReceiver(t, { open });
  // 800 container ports on 127.0.0.1 and ::1, as one delta.
  const forwards = Array.from({ length: 800 }, (_, i) => [
    forward(40000 + i, { containerPort: 8000 + i }),
    forward(40000 + i, { containerPort: 8000 + i, hostIp: '::1' }),
  ]).flat();
  assert.ok(Buffer.byteLength(addLine(...forwards)) > maxPortMappingBytes, 'as one message it would be refused');
  const deltas = new Subject<{ added: Forward[]; removed: Forward[] }>();
  const vmAddrsBoth = [...vmAddrs, { network: 'ip+net', addr: 'fd00:213::2/64' }] as const;
  const reports = lastValueFrom(
    deltas.pipe(vtunnelSink({ send: tcpSender('127.0.0.1', receiver.port, 2_000), connectAddrs: vmAddrsBoth, resyncMs: 0, logger: silent }), toArray()),
  );
  deltas.next({ added: forwards, removed: [] });
  await waitFor('every binding', () => opened.size === forwards.length);
  deltas.complete();
  const done = await reports;
  assert.deepEqual(done.map((r) => r.type), ['wrote', 'withdrawn']);
  assert.equal(opened.size, 0, 'withdrawn on the host');
  assert.equal(receiver.bindings().size, 0);
  assert.deepEqual(events.filter((e) => e.type === 'rejected'), []);
  assert.equal(events.filter((e) => e.type === 'message').length, 4, 'two parts to add, two to remove');
});

test('TCP: 1 MiB each way at once arrives intact, and a half-close lets the other direction finish', { timeout: 30_000 }, async (t) => {
  await oneMiBEachWay(t);
});

test('TCP, where Node\'s sockets take no read buffer of their own: the upload is piped, and the same holds', { timeout: 30_000 }, async (t) => {
  // net.Socket as the proxy sees it; Node's own server and net.connect use their internal one.
  const exports = net as { Socket: typeof net.Socket };
  const original = exports.Socket;
  let attempts = 0;
  exports.Socket = function NoUserBuffers() {
    attempts += 1;
    throw new Error('this Node takes no onread buffer on a handle');
  } as unknown as typeof net.Socket;
  t.after(() => {
    exports.Socket = original;
  });
  await oneMiBEachWay(t);
  assert.equal(attempts, 1, 'the proxy tried its own read buffer once, and fell back');
});

async function oneMiBEachWay(t: TestContext): Promise<void> {
  const port = await freePort();
  const down = randomBytes(1024 * 1024);
  await tcpServer(t, VM, port, (socket) => {
    // Sends its 1 MiB at once (full duplex), and its hash of what it got only after the client's end.
    const hash = createHash('sha256');
    socket.on('data', (chunk: Buffer) => hash.update(chunk));
    socket.write(down);
    socket.once('end', () => socket.end(`\n${hash.digest('hex')}`));
  });
  const { receiver } = await startReceiver(t);
  await sendLine(receiver, addLine(forward(port)));
  await waitFor('the binding', () => receiver.bindings().get(`tcp/127.0.0.1:${String(port)}`)?.state === 'listening');

  const up = randomBytes(1024 * 1024);
  const client = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  const received: Buffer[] = [];
  client.on('data', (chunk: Buffer) => received.push(chunk));
  const ended = new Promise((resolve) => client.once('end', resolve));
  client.end(up);
  await ended;
  client.destroy();
  const all = Buffer.concat(received);
  assert.equal(all.length, down.length + 65, 'everything the VM sent, after the client had half-closed');
  assert.equal(sha256(all.subarray(0, down.length)), sha256(down), 'the 1 MiB from the VM is intact');
  assert.equal(all.subarray(down.length + 1).toString(), sha256(up), 'the 1 MiB to the VM arrived intact');
}

/**
 * Writes `total` bytes to `socket` as fast as it takes them, then ends it; `written()` is how
 * much it has taken so far (it stops growing when back-pressure holds the writer).
 */
function flood(socket: net.Socket, total: number): { written: () => number } {
  const chunk = Buffer.alloc(256 * 1024, 7);
  let written = 0;
  const pump = (): void => {
    while (written < total) {
      written += chunk.length;
      if (!socket.write(chunk)) {
        socket.once('drain', pump);
        return;
      }
    }
    socket.end();
  };
  pump();
  return { written: () => written };
}

test('TCP back-pressure: a client that does not read holds the VM side back', { timeout: 30_000 }, async (t) => {
  const port = await freePort();
  const offered = 256 * 1024 * 1024;
  let vmSocket: net.Socket | undefined;
  let vmSide: { written: () => number } | undefined;
  await tcpServer(t, VM, port, (socket) => {
    vmSocket = socket;
    vmSide = flood(socket, offered);
  });
  const { receiver } = await startReceiver(t);
  await sendLine(receiver, addLine(forward(port)));
  await waitFor('the binding', () => receiver.bindings().size === 1);

  const client = net.connect(port, '127.0.0.1');
  client.pause(); // reads nothing
  t.after(() => client.destroy());
  await waitFor('the VM side', () => vmSocket !== undefined);
  // Let the buffers fill, then look twice: the amount the VM side got rid of must stop growing.
  await sleep(1_000);
  const first = vmSide?.written() ?? 0;
  await sleep(500);
  assert.equal(vmSide?.written(), first, `the VM side kept writing into a proxy nobody reads from (${String(first)} then ${String(vmSide?.written())} bytes)`);
  assert.ok(first < 64 * 1024 * 1024, `${String(first >> 20)} MiB left the VM side while the client read nothing`);

  // Reading again drains everything.
  let got = 0;
  client.on('data', (c: Buffer) => (got += c.length));
  client.resume();
  await waitFor('all the data', () => got === offered, 30_000);
});

test('TCP back-pressure the other way: a VM side that does not read holds the host client back', { timeout: 30_000 }, async (t) => {
  const port = await freePort();
  let vmSocket: net.Socket | undefined;
  await tcpServer(t, VM, port, (socket) => {
    vmSocket = socket;
    socket.pause(); // reads nothing, for now
  });
  const { receiver } = await startReceiver(t);
  await sendLine(receiver, addLine(forward(port)));
  await waitFor('the binding', () => receiver.bindings().size === 1);

  const offered = 256 * 1024 * 1024;
  const client = net.connect(port, '127.0.0.1');
  t.after(() => client.destroy());
  const clientSide = flood(client, offered);
  await waitFor('the VM side', () => vmSocket !== undefined);
  await sleep(1_000);
  const first = clientSide.written();
  await sleep(500);
  assert.equal(clientSide.written(), first, `the client kept writing into a proxy the VM does not read from (${String(first)} then ${String(clientSide.written())} bytes)`);
  assert.ok(first < 64 * 1024 * 1024, `${String(first >> 20)} MiB left the client while the VM side read nothing`);

  let got = 0;
  vmSocket?.on('data', (c: Buffer) => (got += c.length));
  vmSocket?.resume();
  await waitFor('all the data', () => got === offered, 30_000);
});

test('UDP: a request gets its reply through the relay; two clients are two flows; an idle flow is closed', { timeout: 30_000 }, async (t) => {
  const port = await freePort();
  const vmUdp = dgram.createSocket('udp4');
  const sources: number[] = [];
  vmUdp.on('message', (msg, rinfo) => {
    sources.push(rinfo.port);
    vmUdp.send(`echo:${msg.toString()}`, rinfo.port, rinfo.address);
  });
  await new Promise<void>((resolve) => vmUdp.bind(port, VM, resolve));
  t.after(() => { vmUdp.close(); });

  const { receiver } = await startReceiver(t, { proxy: { udpIdleTimeoutMs: 300, logger: silent } });
  await sendLine(receiver, addLine(forward(port, { protocol: 'udp', containerPort: 53 })));
  await waitFor('the binding', () => receiver.bindings().get(`udp/127.0.0.1:${String(port)}`)?.state === 'listening');

  const a = await udpClient(t);
  const b = await udpClient(t);
  assert.equal(await a.ask(port, 'one'), 'echo:one');
  assert.equal(await b.ask(port, 'two'), 'echo:two');
  assert.equal(await a.ask(port, 'three'), 'echo:three');
  assert.equal(sources.length, 3);
  assert.equal(sources[0], sources[2], 'one client is one flow: the same source port towards the VM');
  assert.notEqual(sources[0], sources[1], 'two clients are two flows');

  await sleep(600); // longer than the idle timeout
  assert.equal(await a.ask(port, 'four'), 'echo:four');
  assert.notEqual(sources[3], sources[0], 'after the idle timeout the client gets a new flow');

  await sendLine(receiver, removeLine(forward(port, { protocol: 'udp', containerPort: 53 })));
  await waitFor('the binding to go', () => receiver.bindings().size === 0);
  // The port is free again: binding it ourselves works.
  const probe = dgram.createSocket('udp4');
  await new Promise<void>((resolve, reject) => {
    probe.once('error', reject);
    probe.bind(port, '127.0.0.1', resolve);
  });
  probe.close();
});

async function udpClient(t: TestContext) {
  const socket = dgram.createSocket('udp4');
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  t.after(() => { socket.close(); });
  return {
    ask: (port: number, text: string): Promise<string> =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => { reject(new Error(`no UDP reply to ${text}`)); }, 2_000);
        socket.once('message', (msg) => {
          clearTimeout(timer);
          resolve(msg.toString());
        });
        socket.send(text, port, '127.0.0.1');
      }),
  };
}

test('bad input: each bad message is logged once and dropped, a silent client is timed out, and the receiver goes on', { timeout: 30_000 }, async (t) => {
  const port = await freePort();
  await tcpServer(t, VM, port, echoWithBanner('vm'));
  const { receiver, events, lines } = await startReceiver(t, { messageTimeoutMs: 300 });

  const raw = (payload: Buffer | string | undefined): Promise<void> =>
    new Promise((resolve) => {
      const socket = net.connect(receiver.port, '127.0.0.1');
      socket.on('error', () => undefined);
      socket.once('close', () => { resolve(); });
      socket.resume();
      if (payload !== undefined) socket.end(payload);
    });

  await raw('not json\n');
  await raw('{"remove":false,"ports":{"80/tcp":[{"HostIp":"0.0.0.0","HostPort":8080}]},"connectAddrs":[]}\n');
  await raw(Buffer.alloc(70 * 1024, 0x20)); // too large
  const started = Date.now();
  await raw(undefined); // connects, sends nothing, is disconnected
  const waited = Date.now() - started;
  assert.ok(waited >= 250 && waited < 3_000, `the silent client was disconnected after ${String(waited)} ms`);
  await raw(''); // connects and closes at once: not a message, not an error

  const rejected = events.flatMap((e) => (e.type === 'rejected' ? [e.error] : []));
  assert.deepEqual(rejected.length, 4, rejected.join('\n'));
  assert.match(rejected[0] ?? '', /^not valid JSON/);
  assert.match(rejected[1] ?? '', /HostPort must be a string, got number 8080/);
  assert.match(rejected[2] ?? '', /larger than the limit of 65536 bytes/);
  assert.match(rejected[3] ?? '', /sent no complete message within 300 ms/);
  const warnings = lines().filter((l) => l.level >= 40);
  assert.equal(warnings.length, 4, 'one log line per bad message');
  for (const w of warnings) assert.match(w.msg, /^dropped a PortMapping from 127\.0\.0\.1:\d+: /);

  // Still alive and working.
  await sendLine(receiver, addLine(forward(port)));
  await waitFor('the binding', () => receiver.bindings().size === 1);
  assert.equal(await firstLine(port), 'vm');
});

test('a client that holds every connection slot: the rest are turned away with one log line, not one each, and the receiver goes on', { timeout: 30_000 }, async (t) => {
  const { receiver, lines } = await startReceiver(t, { maxClients: 2 });
  const held: net.Socket[] = [];
  t.after(() => {
    for (const socket of held) socket.destroy();
  });
  const connectTo = (): Promise<net.Socket> =>
    new Promise((resolve) => {
      const socket = net.connect(receiver.port, '127.0.0.1', () => {
        resolve(socket);
      });
      socket.on('error', () => undefined);
      held.push(socket);
    });
  await connectTo();
  await connectTo();
  const turnedAway = await Promise.all(Array.from({ length: 5 }, connectTo));
  await Promise.all(turnedAway.map((socket) => new Promise((resolve) => socket.once('close', resolve))));
  const drops = lines().filter((l) => l.msg.startsWith('too many connections at once'));
  assert.equal(drops.length, 1, JSON.stringify(drops));
  assert.match(drops[0]!.msg, /^too many connections at once \(2\); turned away 1 since the last such line, the latest from 127\.0\.0\.1$/);
  // once the slots free (the receiver sees the closes), messages get through again
  for (const socket of held) socket.destroy();
  const port = await freePort();
  await waitFor('a message to get through', async () => {
    await sendLine(receiver, addLine(forward(port))).catch(() => undefined);
    return receiver.bindings().has(`tcp/127.0.0.1:${String(port)}`);
  });
});

test('a taken host port is retried with back-off until it frees; a remove stops the retrying', { timeout: 30_000 }, async (t) => {
  const port = await freePort();
  await tcpServer(t, VM, port, echoWithBanner('vm'));
  const squatter = await tcpServer(t, '127.0.0.1', port, echoWithBanner('squatter'));
  const { receiver, events, lines } = await startReceiver(t);

  await sendLine(receiver, addLine(forward(port)));
  await waitFor('three failed listens', () => events.filter((e) => e.type === 'conflict').length >= 3);
  assert.equal(receiver.bindings().get(`tcp/127.0.0.1:${String(port)}`)?.state, 'retrying');
  assert.match(receiver.bindings().get(`tcp/127.0.0.1:${String(port)}`)?.error ?? '', /EADDRINUSE/);
  assert.equal(await firstLine(port), 'squatter');
  const conflicts = lines().filter((l) => l.msg.startsWith('cannot listen on'));
  assert.equal(conflicts[0]?.level, 40, 'the first failure is a warning');
  assert.ok(conflicts.slice(1).every((l) => l.level === 20), 'its repeats are debug lines');

  await squatter.close();
  await waitFor('the listen to succeed', () => receiver.bindings().get(`tcp/127.0.0.1:${String(port)}`)?.state === 'listening');
  assert.equal(await firstLine(port), 'vm');
  assert.ok(lines().some((l) => l.level === 30 && /^listening on 127\.0\.0\.1:\d+ \(tcp\), forwarding to 127\.0\.0\.2:\d+ after \d+ retries$/.test(l.msg)));

  // Taken again, added, then removed while retrying: the retries stop and the port stays free.
  await sendLine(receiver, removeLine(forward(port)));
  await waitFor('the binding to go', () => receiver.bindings().size === 0);
  const again = await tcpServer(t, '127.0.0.1', port, echoWithBanner('squatter'));
  await sendLine(receiver, addLine(forward(port)));
  await waitFor('a conflict', () => receiver.bindings().get(`tcp/127.0.0.1:${String(port)}`)?.state === 'retrying');
  await sendLine(receiver, removeLine(forward(port)));
  await waitFor('the binding to go', () => receiver.bindings().size === 0);
  await again.close();
  await sleep(500); // several back-off periods
  assert.equal(await firstLine(port), undefined, 'nothing listens after the remove');
});

test('a repeated add is a no-op: connections survive it; a new VM address applies to new connections', { timeout: 30_000 }, async (t) => {
  const port = await freePort();
  await tcpServer(t, VM, port, echoWithBanner('vm'));
  await tcpServer(t, '127.0.0.3', port, echoWithBanner('vm2'));
  const { receiver, events } = await startReceiver(t);
  await sendLine(receiver, addLine(forward(port)));
  await waitFor('the binding', () => receiver.bindings().size === 1);

  const held = net.connect(port, '127.0.0.1');
  held.setEncoding('utf8');
  let text = '';
  held.on('data', (c: string) => (text += c));
  await waitFor('the banner', () => text === 'vm\n');
  await sendLine(receiver, addLine(forward(port)));
  await sendLine(receiver, addLine(forward(port)));
  held.write('ping\n');
  await waitFor('the echo', () => text === 'vm\nping\n');
  assert.deepEqual(
    events.filter((e) => e.type !== 'message').map((e) => e.type),
    ['bound'],
  );

  await sendLine(receiver, encodePortMapping(false, [forward(port)], [{ network: 'ip+net', addr: '127.0.0.3/8' }]));
  await waitFor('the retarget', () => receiver.bindings().get(`tcp/127.0.0.1:${String(port)}`)?.target === '127.0.0.3');
  assert.equal(await firstLine(port), 'vm2', 'a new connection goes to the new address');
  held.write('still\n');
  await waitFor('the old connection to go on', () => text.endsWith('still\n'));
  held.destroy();
});

test('a connection the VM refuses is reset, and the listener stays', { timeout: 30_000 }, async (t) => {
  const port = await freePort();
  const { receiver } = await startReceiver(t);
  await sendLine(receiver, addLine(forward(port)));
  await waitFor('the binding', () => receiver.bindings().size === 1);
  const outcome = await new Promise<string>((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.on('error', (err: NodeJS.ErrnoException) => { resolve(err.code ?? err.message); });
    socket.on('close', () => { resolve('closed'); });
  });
  assert.equal(outcome, 'ECONNRESET');
  assert.equal(receiver.bindings().get(`tcp/127.0.0.1:${String(port)}`)?.state, 'listening');
});

test('runHost: flags, usage, exit codes, and a stop that closes everything', { timeout: 30_000 }, async (t) => {
  const io = () => {
    const out: string[] = [];
    const err: string[] = [];
    const stop$ = new Subject<void>();
    const sink = (into: string[]) => ({ write: (s: string) => into.push(s) }) as unknown as NodeJS.WritableStream;
    return { io: { stdout: sink(out), stderr: sink(err), stop$ }, out, err, stop$ };
  };

  let run = io();
  assert.equal(await runHost(['-nope'], run.io), 2);
  assert.match(run.err.join(''), /^portstream host: flag provided but not defined: -nope\nUsage of portstream host:\n/);

  run = io();
  assert.equal(await runHost(['-h'], run.io), 0);
  assert.match(run.out.join(''), /-listen HOST:PORT\n.*\(default "127\.0\.0\.1:3040"\)/);

  run = io();
  assert.equal(await runHost(['-listen', 'vsock://2:17381'], run.io), 2);
  assert.match(run.err.join(''), /invalid value "vsock:\/\/2:17381" for flag -listen: the host side listens on TCP only/);

  run = io();
  assert.equal(await runHost(['-listen', '127.0.0.1'], run.io), 2);
  assert.match(run.err.join(''), /invalid value "127\.0\.0\.1" for flag -listen: must be HOST:PORT/);

  run = io();
  assert.equal(await runHost(['extra'], run.io), 2);

  // A taken -listen port: exit 1.
  const port = await freePort();
  const taken = await tcpServer(t, '127.0.0.1', port, () => undefined);
  run = io();
  assert.equal(await runHost(['-listen', `127.0.0.1:${String(port)}`], run.io), 1);
  await taken.close();

  // Runs until stopped, then closes its socket and exits 0.
  run = io();
  const exit = runHost(['-listen', `127.0.0.1:${String(port)}`], run.io);
  await waitFor('the receiver to listen', async () => (await connectable(port)));
  run.stop$.next();
  assert.equal(await exit, 0);
  assert.equal(await connectable(port), false, 'the receiver is closed');
});

function connectable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => { resolve(false); });
  });
}

function sha256(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}
