import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import { lastValueFrom, Subject, type Subscription } from 'rxjs';
import { pino } from 'pino';
import type { Forward, PortDelta } from '../src/model.js';
import type { SinkReport } from '../src/sinks/sink.js';
import { tcpSender, vtunnelSink, type VtunnelSinkOptions } from '../src/sinks/vtunnel.js';
import { connectAddrsOf } from '../src/sinks/vtunnelWire.js';
import { fwd, recordingLogger } from '../marbles/helpers.js';

/**
 * A strict stand-in for the host privileged service on 127.0.0.1: it reads each connection to
 * its end, insists on exactly one newline-terminated JSON value of the contract's shape, applies
 * it to its view (`proto/HostIp:HostPort` -> ports key), then closes. Anything off the contract
 * lands in `violations`, which every test expects to stay empty.
 */
interface Receiver {
  readonly port: number;
  readonly lines: string[];
  readonly view: Map<string, string>;
  readonly violations: string[];
  close(): Promise<void>;
}

async function startReceiver(port = 0): Promise<Receiver> {
  const lines: string[] = [];
  const view = new Map<string, string>();
  const violations: string[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (text += chunk));
    socket.once('end', () => {
      lines.push(text);
      try {
        const { remove, bindings } = parseStrict(text);
        for (const [hostKey, portsKey] of bindings) {
          if (remove) view.delete(hostKey);
          else view.set(hostKey, portsKey);
        }
      } catch (err) {
        violations.push(`${(err as Error).message} in ${JSON.stringify(text)}`);
      }
      socket.end();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  return {
    port: (server.address() as net.AddressInfo).port,
    lines,
    view,
    violations,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => {
          resolve();
        });
      }),
  };
}

function parseStrict(text: string): { remove: boolean; bindings: [string, string][] } {
  assert.ok(text.endsWith('\n') && text.indexOf('\n') === text.length - 1, 'not exactly one newline-terminated line');
  const value = JSON.parse(text) as Record<string, unknown>;
  assert.deepEqual(Object.keys(value), ['remove', 'ports', 'connectAddrs'], 'keys');
  const { remove, ports, connectAddrs } = value;
  assert.equal(typeof remove, 'boolean', 'remove');
  assert.ok(typeof ports === 'object' && ports !== null && !Array.isArray(ports), 'ports is not an object');
  assert.ok(Object.keys(ports).length > 0, 'empty ports');
  const bindings: [string, string][] = [];
  for (const [portsKey, list] of Object.entries(ports)) {
    const match = /^([1-9]\d{0,4})\/(tcp|udp)$/.exec(portsKey);
    assert.ok(match, `ports key ${portsKey}`);
    assert.ok(Array.isArray(list) && list.length > 0, `bindings of ${portsKey}`);
    for (const binding of list as Record<string, unknown>[]) {
      assert.deepEqual(Object.keys(binding), ['HostIp', 'HostPort'], 'binding keys');
      const { HostIp, HostPort } = binding;
      assert.ok(typeof HostIp === 'string' && net.isIP(HostIp) !== 0, `HostIp ${String(HostIp)}`);
      assert.ok(typeof HostPort === 'string' && /^[1-9]\d{0,4}$/.test(HostPort) && Number(HostPort) <= 65535, `HostPort ${String(HostPort)}`);
      bindings.push([`${String(match[2])}/${HostIp}:${HostPort}`, portsKey]);
    }
  }
  assert.ok(Array.isArray(connectAddrs), 'connectAddrs is not an array');
  for (const addr of connectAddrs as Record<string, unknown>[]) {
    assert.deepEqual(Object.keys(addr), ['network', 'addr'], 'connectAddrs keys');
    assert.equal(addr['network'], 'ip+net');
    const [ip, prefix] = String(addr['addr']).split('/');
    assert.ok(net.isIP(ip ?? '') !== 0 && /^\d{1,3}$/.test(prefix ?? ''), `connectAddrs addr ${String(addr['addr'])}`);
  }
  return { remove: remove as boolean, bindings };
}

/** The view a host should have for these forwards. */
function viewOf(...forwards: Forward[]): Map<string, string> {
  return new Map(forwards.map((f) => [`${f.protocol}/${f.hostIp}:${String(f.hostPort)}`, `${String(f.containerPort ?? f.hostPort)}/${f.protocol}`]));
}

async function waitFor(what: string, condition: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Runs the sink on a Subject, keeping its reports and whether it has completed. */
function runSink(opts: Partial<VtunnelSinkOptions> & { port: number }) {
  const deltas = new Subject<PortDelta>();
  const reports: SinkReport[] = [];
  let completed = false;
  const { port, ...rest } = opts;
  const sub: Subscription = deltas
    .pipe(
      vtunnelSink({
        address: `127.0.0.1:${String(port)}`,
        connectAddrs: connectAddrsOf('lo'),
        sendTimeoutMs: 1_000,
        withdrawTimeoutMs: 1_000,
        backoff: { initialMs: 50, maxMs: 200, jitter: 0 },
        log: pino({ level: 'silent' }),
        ...rest,
      }),
    )
    .subscribe({ next: (r) => reports.push(r), complete: () => (completed = true) });
  return { deltas, reports, completed: () => completed, stop: () => {
      sub.unsubscribe();
    } };
}

const add = (...added: Forward[]): PortDelta => ({ added, removed: [] });

test('adds and removes reach the receiver as the exact JSON of the contract', async () => {
  const receiver = await startReceiver();
  const sink = runSink({ port: receiver.port });
  try {
    const addrs = JSON.stringify(connectAddrsOf('lo'));
    assert.ok(addrs.includes('{"network":"ip+net","addr":"127.0.0.1/8"}'), `lo's addresses: ${addrs}`);
    const http = fwd(8080, { containerPort: 80 });
    const dns = fwd(5353, { protocol: 'udp', hostIp: '::', containerPort: 53 });
    sink.deltas.next(add(http, dns));
    await waitFor('the add', () => receiver.lines.length === 1);
    assert.equal(
      receiver.lines[0],
      `{"remove":false,"ports":{"80/tcp":[{"HostIp":"0.0.0.0","HostPort":"8080"}],"53/udp":[{"HostIp":"::","HostPort":"5353"}]},"connectAddrs":${addrs}}\n`,
    );
    assert.deepEqual(receiver.view, viewOf(http, dns));

    sink.deltas.next({ added: [], removed: [http] });
    await waitFor('the remove', () => receiver.lines.length === 2);
    assert.equal(receiver.lines[1], `{"remove":true,"ports":{"80/tcp":[{"HostIp":"0.0.0.0","HostPort":"8080"}]},"connectAddrs":${addrs}}\n`);
    assert.deepEqual(receiver.view, viewOf(dns));
    assert.deepEqual(
      sink.reports.map((r) => r.type),
      ['wrote', 'wrote'],
    );
    assert.deepEqual(receiver.violations, []);
  } finally {
    sink.stop();
    await receiver.close();
  }
});

test('the host end goes away and comes back empty: the sink retries and re-sends everything; completion withdraws it all', async () => {
  let receiver = await startReceiver();
  const { port } = receiver;
  const logger = recordingLogger();
  const sink = runSink({ port, log: logger.log });
  const [a, b, c] = [fwd(8080), fwd(8081, { protocol: 'udp' }), fwd(8082, { hostIp: '127.0.0.1', containerPort: 80 })] as const;
  try {
    sink.deltas.next(add(a, b));
    await waitFor('a and b on the host', () => receiver.view.size === 2);

    await receiver.close();
    sink.deltas.next({ added: [c], removed: [a] });
    await waitFor('two failed sends', () => sink.reports.filter((r) => r.type === 'failed').length >= 2);
    const failure = sink.reports.find((r) => r.type === 'failed');
    assert.match(failure?.type === 'failed' ? failure.error : '', /ECONNREFUSED/);

    receiver = await startReceiver(port); // a restarted host: nothing on it
    await waitFor('the host to agree with the desired set', () => receiver.view.size === 2);
    assert.deepEqual(receiver.view, viewOf(b, c));
    // a is removed (it may have survived on a host that did not restart), then b and c are re-sent
    assert.deepEqual(
      receiver.lines.map((line) => JSON.parse(line) as { remove: boolean; ports: object }).map(({ remove, ports }) => [remove, Object.keys(ports)]),
      [
        [true, ['8080/tcp']],
        [false, ['8081/udp', '80/tcp']],
      ],
    );
    assert.deepEqual(sink.reports.at(-1), { sink: 'vtunnel', type: 'wrote', added: [b, c], removed: [a] });
    const messages = logger.lines().map((l) => l.msg);
    assert.equal(messages.filter((m) => m.startsWith('could not')).length, sink.reports.filter((r) => r.type === 'failed').length);
    assert.ok(messages.includes('reached the vtunnel peer again; re-sent 2 forwards'), messages.join('\n'));

    sink.deltas.complete();
    await waitFor('the sink to complete', sink.completed);
    assert.deepEqual(receiver.view, new Map());
    assert.deepEqual(sink.reports.at(-1), { sink: 'vtunnel', type: 'withdrawn', count: 2 });
    assert.deepEqual(receiver.violations, []);
  } finally {
    sink.stop();
    await receiver.close();
  }
});

test('shutdown does not hang when the host end is gone: the withdraw gives up after withdrawTimeoutMs', async () => {
  const receiver = await startReceiver();
  const logger = recordingLogger();
  const sink = runSink({ port: receiver.port, withdrawTimeoutMs: 300, log: logger.log });
  try {
    sink.deltas.next(add(fwd(8080)));
    await waitFor('the add', () => receiver.view.size === 1);
    await receiver.close();
    const started = Date.now();
    sink.deltas.complete();
    await waitFor('the sink to complete', sink.completed, 2_000);
    const elapsed = Date.now() - started;
    assert.ok(elapsed >= 250 && elapsed < 1_500, `completed after ${String(elapsed)} ms`);
    assert.ok(!sink.reports.some((r) => r.type === 'withdrawn'), 'nothing was withdrawn');
    assert.match(logger.lines().at(-1)?.msg ?? '', /^gave up withdrawing 1 forward .* after 300 ms/);
  } finally {
    sink.stop();
    await receiver.close(); // no-op unless the test failed before closing it
  }
});

test('a promise-returning send works as the transport', async () => {
  const receiver = await startReceiver();
  const tcp = tcpSender('127.0.0.1', receiver.port, 1_000);
  const sink = runSink({ port: receiver.port, send: (line) => lastValueFrom(tcp(line), { defaultValue: undefined }) });
  try {
    sink.deltas.next(add(fwd(8080)));
    sink.deltas.complete();
    await waitFor('the sink to complete', sink.completed);
    assert.equal(receiver.lines.length, 2);
    assert.deepEqual(receiver.view, new Map());
    assert.deepEqual(sink.reports.at(-1), { sink: 'vtunnel', type: 'withdrawn', count: 1 });
  } finally {
    sink.stop();
    await receiver.close();
  }
});

test('tcpSender fails when the peer takes the line but never closes, and when nothing listens', async () => {
  const held: net.Socket[] = [];
  const server = net.createServer((socket) => held.push(socket));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  try {
    const started = Date.now();
    await assert.rejects(lastValueFrom(tcpSender('127.0.0.1', port, 200)('{}\n'), { defaultValue: undefined }), {
      message: `no close from the vtunnel peer 127.0.0.1:${String(port)} within 200 ms`,
    });
    assert.ok(Date.now() - started >= 190);
  } finally {
    for (const socket of held) socket.destroy();
    await new Promise((resolve) => server.close(resolve));
  }
  await assert.rejects(lastValueFrom(tcpSender('127.0.0.1', port, 1_000)('{}\n'), { defaultValue: undefined }), /ECONNREFUSED 127\.0\.0\.1:\d+/);
});
