/**
 * The host-switch sink over real HTTP against a protocol fake of gvisor-tap-vsock's forwarder
 * API (pkg/services/forwarder/ports.go), faithful to what it answers:
 * - `POST /services/forwarder/expose` `{"local","remote","protocol"}`: 200 with an empty body;
 *   500 `proxy already running` for a duplicate protocol+local (`duplicate: 'pre-0.8.2'` for the bind error of
 *   forwarders before v0.8.2, see fakeForwarder.ts); 500 with the
 *   listen error (`listen tcp 127.0.0.1:P: bind: address already in use`) when the port cannot be
 *   bound (the fake really binds `local` on this machine, as the forwarder does on the host);
 *   400 for a body that does not decode or a remote without a port; 400 `post only` for other methods.
 * - `POST /services/forwarder/unexpose` `{"local","protocol"}`: 200; 500 `proxy not found`.
 * - An empty protocol means tcp in both. `GET /services/forwarder/all`: the proxies, sorted by
 *   local then protocol, as a JSON array and a newline.
 * Errors are written as Go's http.Error does: text/plain, the message and a newline.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { test, type TestContext } from 'node:test';
import { Subject } from 'rxjs';
import { pino } from 'pino';
import type { Forward, PortDelta } from '../src/model.js';
import type { SinkReport } from '../src/sinks/sink.js';
import { hostSwitchSink, httpRequester, type HostSwitchSinkOptions } from '../src/sinks/hostswitch.js';
import { fwd, recordingLogger } from '../marbles/helpers.js';
import { freePort, startFake } from './fakeForwarder.js';

async function waitFor(what: string, condition: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${String(timeoutMs)} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

function runSink(t: TestContext, opts: HostSwitchSinkOptions) {
  const deltas = new Subject<PortDelta>();
  const reports: SinkReport[] = [];
  let completed = false;
  const sub = deltas
    .pipe(
      hostSwitchSink({
        tapInterfaceIp: '192.168.127.2',
        requestTimeoutMs: 1_000,
        withdrawTimeoutMs: 2_000,
        backoff: { initialMs: 50, maxMs: 200, jitter: 0 },
        logger: pino({ level: 'silent' }),
        ...opts,
      }),
    )
    .subscribe({ next: (r) => reports.push(r), complete: () => (completed = true) });
  t.after(() => { sub.unsubscribe(); });
  return { deltas, reports, completed: () => completed };
}

const add = (...added: Forward[]): PortDelta => ({ added, removed: [] });
const del = (...removed: Forward[]): PortDelta => ({ added: [], removed });

/** Whether something accepts TCP connections on 127.0.0.1:port. */
function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => { resolve(false); });
  });
}

test('expose and unexpose with the exact bodies; the UDP removal carries its protocol; withdraw empties the host', { timeout: 30_000 }, async (t) => {
  const fake = await startFake(t);
  const [p, q] = [await freePort(), await freePort()];
  const web = fwd(p, { hostIp: '0.0.0.0', containerPort: 80 });
  const dns = fwd(q, { protocol: 'udp', containerPort: 53 });
  const sink = runSink(t, { url: fake.url });

  sink.deltas.next(add(web, dns));
  await waitFor('both forwards on the host', () => fake.proxies.size === 2);
  assert.deepEqual(fake.view(), [`tcp 127.0.0.1:${String(p)}->192.168.127.2:${String(p)}`, `udp 127.0.0.1:${String(q)}->192.168.127.2:${String(q)}`].sort());
  assert.ok(await listening(p), 'the forwarder really listens on the host port');

  sink.deltas.next(del(dns));
  await waitFor('the UDP forward to go', () => fake.proxies.size === 1);
  sink.deltas.complete();
  await waitFor('the sink to complete', sink.completed);
  assert.deepEqual(fake.view(), []);
  assert.equal(await listening(p), false);

  assert.deepEqual(fake.requests.slice(0, 1), ['GET /services/forwarder/all']);
  assert.deepEqual(fake.requests.slice(1, 3).sort(), [
    `POST /services/forwarder/expose {"local":"127.0.0.1:${String(p)}","remote":"192.168.127.2:${String(p)}","protocol":"tcp"}`,
    `POST /services/forwarder/expose {"local":"127.0.0.1:${String(q)}","remote":"192.168.127.2:${String(q)}","protocol":"udp"}`,
  ].sort());
  assert.deepEqual(fake.requests.slice(3), [
    `POST /services/forwarder/unexpose {"local":"127.0.0.1:${String(q)}","protocol":"udp"}`,
    `POST /services/forwarder/unexpose {"local":"127.0.0.1:${String(p)}","protocol":"tcp"}`,
  ]);
  assert.deepEqual(sink.reports.map((r) => r.type), ['wrote', 'wrote', 'wrote', 'withdrawn']);
  assert.deepEqual(sink.reports.at(-1), { sink: 'hostswitch', type: 'withdrawn', count: 1 });
});

test('forwards left from an earlier run (TCP and UDP) are adopted at start-up and removed on withdraw; the host\'s own are left alone', { timeout: 30_000 }, async (t) => {
  const fake = await startFake(t);
  const [p, q, api, gone] = [await freePort(), await freePort(), await freePort(), await freePort()];
  await fake.preload(`127.0.0.1:${String(p)}`, `192.168.127.2:${String(p)}`, 'tcp');
  await fake.preload(`127.0.0.1:${String(q)}`, `192.168.127.2:${String(q)}`, 'udp');
  await fake.preload(`127.0.0.1:${String(api)}`, `192.168.127.2:${String(api)}`, 'tcp'); // the host's own (say, the API port)
  await fake.preload(`127.0.0.1:${String(gone)}`, `192.168.127.2:${String(gone)}`, 'tcp'); // an earlier run's, no longer wanted: not ours to judge
  const logger = recordingLogger();
  const web = fwd(p);
  const dns = fwd(q, { protocol: 'udp' });
  const sink = runSink(t, { url: fake.url, logger: logger.log });
  sink.deltas.next(add(web, dns));
  await waitFor('both adopted', () => sink.reports.filter((r) => r.type === 'wrote').length === 2);
  assert.deepEqual(fake.requests, ['GET /services/forwarder/all'], 'nothing to expose: both are there');
  assert.equal(logger.lines().filter((l) => l.msg.endsWith('is already exposed (by an earlier run): adopted')).length, 2);
  assert.ok(!logger.lines().some((l) => l.level >= 40), logger.lines().map((l) => l.msg).join('\n'));

  sink.deltas.complete();
  await waitFor('the sink to complete', sink.completed);
  assert.deepEqual(fake.view(), [
    `tcp 127.0.0.1:${String(api)}->192.168.127.2:${String(api)}`,
    `tcp 127.0.0.1:${String(gone)}->192.168.127.2:${String(gone)}`,
  ].sort());
  assert.deepEqual(fake.requests.slice(1).sort(), [
    `POST /services/forwarder/unexpose {"local":"127.0.0.1:${String(p)}","protocol":"tcp"}`,
    `POST /services/forwarder/unexpose {"local":"127.0.0.1:${String(q)}","protocol":"udp"}`,
  ].sort());
  assert.deepEqual(sink.reports.at(-1), { sink: 'hostswitch', type: 'withdrawn', count: 2 });
});

test('"proxy already running" (exposed by someone after start-up): adopted, then removed on withdraw', { timeout: 30_000 }, async (t) => {
  const fake = await startFake(t);
  const p = await freePort();
  const logger = recordingLogger();
  const sink = runSink(t, { url: fake.url, logger: logger.log });
  await waitFor('the start-up read', () => fake.requests.length === 1);
  await fake.preload(`127.0.0.1:${String(p)}`, `192.168.127.2:${String(p)}`, 'tcp');
  sink.deltas.next(add(fwd(p)));
  await waitFor('the expose', () => sink.reports.length === 1);
  assert.deepEqual(sink.reports[0], { sink: 'hostswitch', type: 'wrote', added: [fwd(p)], removed: [] });
  assert.ok(logger.lines().some((l) => l.msg === `127.0.0.1:${String(p)} (tcp) is already exposed (by an earlier run): adopted`));
  sink.deltas.complete();
  await waitFor('the sink to complete', sink.completed);
  assert.deepEqual(fake.view(), []);
  assert.deepEqual(sink.reports.at(-1), { sink: 'hostswitch', type: 'withdrawn', count: 1 });
});

test('a taken host port: the bind error is reported and retried until the port frees; "proxy not found" on removal is fine', { timeout: 30_000 }, async (t) => {
  const fake = await startFake(t);
  const p = await freePort();
  const squatter = net.createServer();
  await new Promise<void>((resolve) => squatter.listen(p, '127.0.0.1', resolve));
  t.after(() => new Promise((resolve) => squatter.close(resolve)));
  const logger = recordingLogger();
  const sink = runSink(t, { url: fake.url, logger: logger.log });
  sink.deltas.next(add(fwd(p)));
  await waitFor('two failures', () => sink.reports.filter((r) => r.type === 'failed').length >= 2);
  const failure = sink.reports.find((r) => r.type === 'failed');
  assert.equal(
    failure?.type === 'failed' ? failure.error : '',
    `cannot expose 127.0.0.1:${String(p)} (tcp): the host port is taken (listen tcp 127.0.0.1:${String(p)}: bind: address already in use)`,
  );
  assert.equal(fake.proxies.size, 0);
  assert.equal(logger.lines().filter((l) => l.level === 40).length, 1, 'one warning, then debug lines');

  await new Promise((resolve) => squatter.close(resolve));
  await waitFor('the forward', () => sink.reports.some((r) => r.type === 'wrote'));
  assert.equal(fake.proxies.size, 1);
  assert.deepEqual(sink.reports.filter((r) => r.type === 'wrote'), [{ sink: 'hostswitch', type: 'wrote', added: [fwd(p)], removed: [] }]);

  // Someone removed it behind our back: the removal answers "proxy not found", which is fine.
  fake.proxies.get(`tcp/127.0.0.1:${String(p)}`)?.close();
  fake.proxies.clear();
  sink.deltas.next(del(fwd(p)));
  await waitFor('the removal', () => sink.reports.filter((r) => r.type === 'wrote').length === 2);
  assert.deepEqual(sink.reports.at(-1), { sink: 'hostswitch', type: 'wrote', added: [], removed: [fwd(p)] });
  assert.equal(logger.lines().filter((l) => l.level >= 40).length, 1, 'no new warning');
});

test('a 400 for a malformed request is reported and retried, and the sink goes on with other ports', { timeout: 30_000 }, async (t) => {
  const fake = await startFake(t);
  const [p, q] = [await freePort(), await freePort()];
  // A transport that breaks the remote of one port (as a buggy build might).
  const real = httpRequester(fake.url, { timeoutMs: 1_000 });
  let broken = true;
  const sink = runSink(t, {
    request: (req) => real(broken && req.body?.includes(`:${String(p)}"`) ? { ...req, body: req.body.replace(`192.168.127.2:${String(p)}`, '192.168.127.2') } : req),
  });
  sink.deltas.next(add(fwd(p), fwd(q)));
  await waitFor('a refusal and the other port', () => sink.reports.some((r) => r.type === 'failed') && fake.proxies.size === 1);
  const failure = sink.reports.find((r) => r.type === 'failed');
  assert.equal(failure?.type === 'failed' ? failure.error : '', `the host switch refused to expose 127.0.0.1:${String(p)} (tcp): HTTP 400 address 192.168.127.2: missing port in address`);
  broken = false;
  await waitFor('both forwards', () => fake.proxies.size === 2);
  // The fake itself refuses other malformed requests the way the forwarder does.
  const answer = await fetch(`${fake.url}/services/forwarder/expose`, { method: 'POST', body: '{' });
  assert.equal(answer.status, 400);
  assert.equal((await fetch(`${fake.url}/services/forwarder/unexpose`)).status, 400);
  assert.equal(await (await fetch(`${fake.url}/services/forwarder/unexpose`)).text(), 'post only\n');
});

test('the host switch is down, then hangs, then answers: back-off, a timeout on every request, re-read and expose', { timeout: 30_000 }, async (t) => {
  const port = await freePort();
  const logger = recordingLogger();
  const sink = runSink(t, { url: `http://127.0.0.1:${String(port)}`, requestTimeoutMs: 300, logger: logger.log });
  sink.deltas.next(add(fwd(await freePort())));
  await waitFor('refused twice', () => sink.reports.filter((r) => r.type === 'failed').length >= 2);
  for (const r of sink.reports) assert.match(r.type === 'failed' ? r.error : '', /^could not read \/services\/forwarder\/all: .*ECONNREFUSED/);

  // Something that accepts and never answers.
  const held: net.Socket[] = [];
  const mute = net.createServer((s) => held.push(s));
  await new Promise<void>((resolve) => mute.listen(port, '127.0.0.1', resolve));
  const before = sink.reports.length;
  await waitFor('a timeout', () => sink.reports.slice(before).some((r) => r.type === 'failed' && r.error.includes('within 300 ms')));
  for (const s of held) s.destroy();
  await new Promise((resolve) => mute.close(resolve));

  const fake = await startFake(t, port);
  await waitFor('the forward', () => fake.proxies.size === 1, 10_000);
  assert.ok(logger.lines().some((l) => l.msg.startsWith('reached the host switch')));
  assert.equal(fake.requests[0], 'GET /services/forwarder/all', 'the host state is read before exposing');
});

test('shutdown does not hang when the host switch is gone: the withdraw gives up after withdrawTimeoutMs', { timeout: 30_000 }, async (t) => {
  const fake = await startFake(t);
  const sink = runSink(t, { url: fake.url, withdrawTimeoutMs: 400 });
  sink.deltas.next(add(fwd(await freePort())));
  await waitFor('the forward', () => sink.reports.some((r) => r.type === 'wrote'));
  await fake.close();
  const started = Date.now();
  sink.deltas.complete();
  await waitFor('the sink to complete', sink.completed);
  const elapsed = Date.now() - started;
  assert.ok(elapsed >= 350 && elapsed < 2_000, `completed after ${String(elapsed)} ms`);
  assert.deepEqual(sink.reports.at(-1), { sink: 'hostswitch', type: 'withdrawn', count: 0, left: 1 }, 'the withdraw says what it could not remove');
});
