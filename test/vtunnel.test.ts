import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import { lastValueFrom, Subject, type Subscription } from 'rxjs';
import { pino } from 'pino';
import type { Forward, PortDelta } from '../src/model.js';
import type { SinkReport } from '../src/sinks/sink.js';
import { tcpSender, vtunnelSink, type VtunnelSinkOptions } from '../src/sinks/vtunnel.js';
import { connectAddrsOf } from '../src/wire/connectAddrs.js';
import { fwd, recordingLogger } from '../marbles/helpers.js';
import { startReceiver } from './vtunnelReceiver.js';

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
        // these tests count the messages; the periodic re-send is tested in marbles/vtunnel and the fault matrix
        resyncMs: 0,
        logger: pino({ level: 'silent' }),
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
  const sink = runSink({ port, logger: logger.log });
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
    // the receiver applies a message before it closes the connection, and the sink reports only
    // once the close arrives
    await waitFor('the wrote report', () => sink.reports.at(-1)?.type === 'wrote');
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
  const sink = runSink({ port: receiver.port, withdrawTimeoutMs: 300, logger: logger.log });
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
