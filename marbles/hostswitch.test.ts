import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { Observable, of } from 'rxjs';
import type { TestScheduler } from 'rxjs/testing';
import type { Forward, PortDelta } from '../src/model.js';
import type { SinkReport } from '../src/sinks/sink.js';
import { hostSwitchSink, type HostSwitchRequest, type HostSwitchResponse, type HostSwitchSinkOptions } from '../src/sinks/hostswitch.js';
import { fwd, marbles, recordingLogger, type RunHelpers } from './helpers.js';

// The host-switch sink in virtual time (1 frame = 1 virtual ms). Every request is answered by a
// script, after 1 frame unless a test says otherwise. Back-off: 10, 20, 40, 40, ... (random() =
// 0.5 neutralises the jitter); requests time out after 50 frames; withdrawing gives up at 100.

const p8080 = fwd(8080);
const p8081 = fwd(8081);
const dns = fwd(5353, { protocol: 'udp', containerPort: 53 });

const add = (...added: Forward[]): PortDelta => ({ added, removed: [] });
const del = (...removed: Forward[]): PortDelta => ({ added: [], removed });

const wrote = (added: Forward[], removed: Forward[] = []): SinkReport => ({ sink: 'hostswitch', type: 'wrote', added, removed });
/** A failure; `forwards` names the forwards of the entry that failed (none when the list could not be read). */
const failed = (retryInMs: number, error: string, forwards?: Forward[]): SinkReport => ({ sink: 'hostswitch', type: 'failed', error, retryInMs, ...(forwards && { forwards }) });
const withdrawn = (count: number): SinkReport => ({ sink: 'hostswitch', type: 'withdrawn', count });

interface Spec {
  readonly after?: number;
  readonly status?: number;
  readonly body?: string;
  /** No HTTP answer: the request errors with this message. */
  readonly fail?: string;
  /** Never answers. */
  readonly hang?: true;
}

const entry = (port: number, protocol = 'tcp', local = `127.0.0.1:${String(port)}`) => ({ local, remote: `192.168.127.2:${String(port)}`, protocol });
const ok = (after = 1): Spec => ({ after, status: 200, body: '' });
const list = (...entries: { local: string; remote: string; protocol: string }[]): Spec => ({ status: 200, body: `${JSON.stringify(entries)}\n` });
const running = (local: string, protocol = 'tcp'): Spec => ({ status: 500, body: `proxy already running for ${protocol} on ${local}\n` });
const notFound: Spec = { status: 500, body: 'proxy not found\n' };
const bindError = (local: string): Spec => ({ status: 500, body: `listen tcp ${local}: bind: address already in use\n` });
const down: Spec = { fail: 'connect ECONNREFUSED 192.168.127.1:80' };
const hang: Spec = { hang: true };

/**
 * Answers each request with the next spec of its queue: `all`, `expose PROTO/LOCAL` or
 * `unexpose PROTO/LOCAL`. Records `FRAME QUEUE` per request (and `FRAME cancelled QUEUE` when the
 * sink gives up on one), and every body as sent.
 */
function scripted(h: RunHelpers, scheduler: TestScheduler, script: Record<string, Spec[]>) {
  const calls: string[] = [];
  const bodies: string[] = [];
  const request = (req: HostSwitchRequest): Observable<HostSwitchResponse> => {
    let queue = 'all';
    if (req.path !== '/services/forwarder/all') {
      assert.equal(req.method, 'POST');
      const body = JSON.parse(req.body ?? '') as { local: string; protocol: string };
      queue = `${req.path.slice('/services/forwarder/'.length)} ${body.protocol}/${body.local}`;
      bodies.push(`${req.path} ${req.body ?? ''}`);
    } else {
      assert.equal(req.method, 'GET');
    }
    calls.push(`${String(scheduler.now())} ${queue}`);
    const spec = script[queue]?.shift();
    assert.ok(spec !== undefined, `unexpected request at ${String(scheduler.now())}: ${queue}`);
    if (spec.hang) {
      return new Observable<HostSwitchResponse>(() => () => calls.push(`${String(scheduler.now())} cancelled ${queue}`));
    }
    const after = '-'.repeat(spec.after ?? 1);
    const answer =
      spec.fail !== undefined
        ? h.cold<HostSwitchResponse>(`${after}#`, undefined, new Error(spec.fail))
        : h.cold(`${after}(r|)`, { r: { status: spec.status ?? 200, body: spec.body ?? '' } });
    return new Observable<HostSwitchResponse>((subscriber) => {
      let answered = false;
      const sub = answer.subscribe({
        next: (v) => {
          answered = true;
          subscriber.next(v);
        },
        error: (err: unknown) => {
          answered = true;
          subscriber.error(err);
        },
        complete: () => {
          subscriber.complete();
        },
      });
      return () => {
        sub.unsubscribe();
        if (!answered) calls.push(`${String(scheduler.now())} cancelled ${queue}`);
      };
    });
  };
  const unused = (): string[] => Object.entries(script).flatMap(([k, v]) => (v.length > 0 ? [`${k} (${String(v.length)} left)`] : []));
  return { request, calls, bodies, unused };
}

/**
 * Subscribes at frame 0 and records `FRAME what` for every report and the end, for timelines
 * where several things happen in one frame (marble groups would shift the frames after them).
 */
function record(source: Observable<SinkReport>, scheduler: TestScheduler): string[] {
  const seen: string[] = [];
  const at = (): string => String(scheduler.now());
  const keys = (fs: readonly Forward[]): string => fs.map((f) => `${f.protocol}/${String(f.hostPort)}`).join(',');
  source.subscribe({
    next: (r) => {
      if (r.type === 'wrote') seen.push(`${at()} wrote${r.added.length > 0 ? ` +${keys(r.added)}` : ''}${r.removed.length > 0 ? ` -${keys(r.removed)}` : ''}`);
      else if (r.type === 'failed') seen.push(`${at()} failed (retry in ${String(r.retryInMs)}): ${r.error}`);
      else if (r.type === 'withdrawn') seen.push(`${at()} withdrawn ${String(r.count)}${r.left === undefined ? '' : ` (${String(r.left)} left)`}`);
    },
    error: (err: unknown) => seen.push(`${at()} error ${err instanceof Error ? err.message : String(err)}`),
    complete: () => seen.push(`${at()} complete`),
  });
  return seen;
}

function options(scheduler: TestScheduler, request: HostSwitchSinkOptions['request'], more: Partial<HostSwitchSinkOptions> = {}) {
  const logger = recordingLogger();
  const opts: HostSwitchSinkOptions = {
    ...(request && { request }),
    tapInterfaceIp: '192.168.127.2',
    requestTimeoutMs: 50,
    withdrawTimeoutMs: 100,
    resyncMs: 0, // the periodic re-read has a test of its own
    backoff: { initialMs: 10, factor: 2, maxMs: 40, jitter: 0.2 },
    random: () => 0.5,
    scheduler,
    logger: logger.log,
    ...more,
  };
  return { opts, lines: logger.lines };
}

test(
  'start-up reads the forwards first; an add exposes and a remove unexposes, with the exact bodies',
  marbles((h, scheduler) => {
    const s = scripted(h, scheduler, { all: [list()], 'expose tcp/127.0.0.1:8080': [ok()], 'unexpose tcp/127.0.0.1:8080': [ok()] });
    const deltas = h.cold('a---r', { a: add(p8080), r: del(p8080) });
    h.expectObservable(deltas.pipe(hostSwitchSink(options(scheduler, s.request).opts))).toBe('--w--x', {
      w: wrote([p8080]),
      x: wrote([], [p8080]),
    });
    h.flush();
    assert.deepEqual(s.calls, ['0 all', '1 expose tcp/127.0.0.1:8080', '4 unexpose tcp/127.0.0.1:8080']);
    assert.deepEqual(s.bodies, [
      '/services/forwarder/expose {"local":"127.0.0.1:8080","remote":"192.168.127.2:8080","protocol":"tcp"}',
      '/services/forwarder/unexpose {"local":"127.0.0.1:8080","protocol":"tcp"}',
    ]);
    assert.deepEqual(s.unused(), []);
  }),
);

test(
  'UDP: the unexpose carries protocol udp; tcp and udp on one port number are two forwards',
  marbles((h, scheduler) => {
    const udp8080 = fwd(8080, { protocol: 'udp' });
    const s = scripted(h, scheduler, {
      all: [list()],
      'expose tcp/127.0.0.1:8080': [ok()],
      'expose udp/127.0.0.1:8080': [ok()],
      'unexpose udp/127.0.0.1:8080': [ok()],
    });
    const deltas = h.cold('a---r', { a: add(p8080, udp8080), r: del(udp8080) });
    const seen = record(deltas.pipe(hostSwitchSink(options(scheduler, s.request).opts)), scheduler);
    h.flush();
    assert.deepEqual(seen, ['2 wrote +tcp/8080', '2 wrote +udp/8080', '5 wrote -udp/8080']);
    assert.deepEqual(s.bodies.at(-1), '/services/forwarder/unexpose {"local":"127.0.0.1:8080","protocol":"udp"}');
    assert.deepEqual(s.unused(), []);
  }),
);

test(
  'without -adminInstall every host IP of a port shares 127.0.0.1:PORT: exposed once, unexposed with its last forward',
  marbles((h, scheduler) => {
    const any = fwd(8080, { hostIp: '0.0.0.0', owner: 'a' });
    const one = fwd(8080, { hostIp: '10.0.0.5', owner: 'b' });
    const s = scripted(h, scheduler, { all: [list()], 'expose tcp/127.0.0.1:8080': [ok()], 'unexpose tcp/127.0.0.1:8080': [ok()] });
    const deltas = h.cold('a--b--c', { a: add(any, one), b: del(any), c: del(one) });
    // `any` goes at 3 while the entry stays for `one`: reported at once; the entry goes with `one`.
    h.expectObservable(deltas.pipe(hostSwitchSink(options(scheduler, s.request).opts))).toBe('--wv---x', {
      w: wrote([any, one]),
      v: wrote([], [any]),
      x: wrote([], [one]),
    });
    h.flush();
    assert.deepEqual(s.calls, ['0 all', '1 expose tcp/127.0.0.1:8080', '6 unexpose tcp/127.0.0.1:8080']);
  }),
);

test(
  'with -adminInstall local is the forward\'s own host IP; remote is always -tap-interface-ip',
  marbles((h, scheduler) => {
    const any = fwd(8080, { hostIp: '0.0.0.0' });
    const lo = fwd(8081, { hostIp: '127.0.0.1' });
    const s = scripted(h, scheduler, { all: [list()], 'expose tcp/0.0.0.0:8080': [ok()], 'expose tcp/127.0.0.1:8081': [ok()] });
    const { opts } = options(scheduler, s.request, { adminInstall: true, tapInterfaceIp: '192.168.127.9' });
    h.expectObservable(h.cold('a', { a: add(any, lo) }).pipe(hostSwitchSink(opts))).toBe('--(wv)', { w: wrote([any]), v: wrote([lo]) });
    h.flush();
    assert.deepEqual(s.bodies, [
      '/services/forwarder/expose {"local":"0.0.0.0:8080","remote":"192.168.127.9:8080","protocol":"tcp"}',
      '/services/forwarder/expose {"local":"127.0.0.1:8081","remote":"192.168.127.9:8081","protocol":"tcp"}',
    ]);
  }),
);

test(
  'IPv6 forwards are skipped with one log line, however many come and go, and never sent',
  marbles((h, scheduler) => {
    const v6 = fwd(8080, { hostIp: '::' });
    const v6b = fwd(8081, { hostIp: '::' });
    const s = scripted(h, scheduler, { all: [list()], 'expose tcp/127.0.0.1:8080': [ok()] });
    const { opts, lines } = options(scheduler, s.request);
    // as Docker publishes each -p on 0.0.0.0 and ::, container after container
    const deltas = h.cold('a-a-r-b', { a: add(v6, p8080), r: del(v6), b: add(v6b, v6) });
    h.expectObservable(deltas.pipe(hostSwitchSink(opts))).toBe('--w', { w: wrote([p8080]) });
    h.flush();
    assert.deepEqual(s.calls, ['0 all', '1 expose tcp/127.0.0.1:8080']);
    assert.deepEqual(
      lines().filter((l) => l.level >= 30 && l.msg.includes('IPv4 only')),
      [{ level: 30, msg: 'skipping tcp/[::]:8080: the host-switch API is IPv4 only (further IPv6 ports are skipped quietly)' }],
    );
  }),
);

test(
  'a forward left by an earlier run: adopted at start-up, removed on withdraw; 6443 (the host\'s) never touched',
  marbles((h, scheduler) => {
    const s = scripted(h, scheduler, {
      all: [list(entry(6443), entry(8080), entry(9090, 'udp'))],
      'expose tcp/127.0.0.1:8081': [ok()],
      'unexpose tcp/127.0.0.1:8080': [ok()],
      'unexpose tcp/127.0.0.1:8081': [ok()],
    });
    const { opts, lines } = options(scheduler, s.request);
    const deltas = h.cold('a----|', { a: add(p8080, p8081) });
    h.expectObservable(deltas.pipe(hostSwitchSink(opts))).toBe('-ab---(y|)', { a: wrote([p8080]), b: wrote([p8081]), y: withdrawn(2) });
    h.flush();
    assert.deepEqual(s.calls, ['0 all', '1 expose tcp/127.0.0.1:8081', '5 unexpose tcp/127.0.0.1:8080', '5 unexpose tcp/127.0.0.1:8081']);
    assert.deepEqual(s.unused(), []);
    assert.ok(lines().some((l) => l.msg === '127.0.0.1:8080 (tcp) is already exposed (by an earlier run): adopted'));
  }),
);

test(
  '"proxy already running" on expose: adopted once the host\'s forwards show it forwards where ours would, and removed like any other',
  marbles((h, scheduler) => {
    const s = scripted(h, scheduler, {
      all: [list(), list(entry(8080))],
      'expose tcp/127.0.0.1:8080': [running('127.0.0.1:8080')],
      'unexpose tcp/127.0.0.1:8080': [ok()],
    });
    const { opts, lines } = options(scheduler, s.request);
    const deltas = h.cold('a---|', { a: add(p8080) });
    // refused as running at 2, not in the list read at 0: read again at 2, adopted at 3
    h.expectObservable(deltas.pipe(hostSwitchSink(opts))).toBe('---w-(y|)', { w: wrote([p8080]), y: withdrawn(1) });
    h.flush();
    assert.deepEqual(s.calls, ['0 all', '1 expose tcp/127.0.0.1:8080', '2 all', '4 unexpose tcp/127.0.0.1:8080']);
    assert.ok(lines().some((l) => l.level === 30 && l.msg === '127.0.0.1:8080 (tcp) is already exposed (by an earlier run): adopted'));
    assert.ok(!lines().some((l) => l.level >= 40), 'not an error');
  }),
);

test(
  '"proxy already running" for a forward that appeared since the last read and goes elsewhere: not adopted, never removed',
  marbles((h, scheduler) => {
    const theirs = { local: '127.0.0.1:8080', remote: '10.0.0.9:8080', protocol: 'tcp' };
    const s = scripted(h, scheduler, {
      all: [list(), list(theirs)],
      'expose tcp/127.0.0.1:8080': [running('127.0.0.1:8080')],
    });
    const { opts } = options(scheduler, s.request);
    const seen = record(h.cold('a---|', { a: add(p8080) }).pipe(hostSwitchSink(opts)), scheduler);
    h.flush();
    assert.deepEqual(seen, [
      '3 failed (retry in 10): cannot expose 127.0.0.1:8080 (tcp): the host switch forwards it to 10.0.0.9:8080 (not ours, left alone)',
      '4 withdrawn 0',
      '4 complete',
    ]);
    assert.deepEqual(s.calls, ['0 all', '1 expose tcp/127.0.0.1:8080', '2 all']);
  }),
);

test(
  '"proxy not found" on unexpose: already gone, which is fine',
  marbles((h, scheduler) => {
    const s = scripted(h, scheduler, {
      all: [list()],
      'expose udp/127.0.0.1:5353': [ok()],
      'unexpose udp/127.0.0.1:5353': [notFound],
    });
    const { opts, lines } = options(scheduler, s.request);
    const deltas = h.cold('a--r', { a: add(dns), r: del(dns) });
    h.expectObservable(deltas.pipe(hostSwitchSink(opts))).toBe('--w-x', { w: wrote([dns]), x: wrote([], [dns]) });
    h.flush();
    assert.ok(!lines().some((l) => l.level >= 40), 'not an error');
  }),
);

test(
  'a bind error is reported and retried with back-off for that port only; other ports go on meanwhile',
  marbles((h, scheduler) => {
    const s = scripted(h, scheduler, {
      all: [list()],
      'expose tcp/127.0.0.1:8080': [bindError('127.0.0.1:8080'), bindError('127.0.0.1:8080'), ok()],
      'expose tcp/127.0.0.1:8081': [ok()],
    });
    const { opts, lines } = options(scheduler, s.request);
    const deltas = h.cold('a--b', { a: add(p8080), b: add(p8081) });
    const error = 'cannot expose 127.0.0.1:8080 (tcp): the host port is taken (listen tcp 127.0.0.1:8080: bind: address already in use)';
    h.expectObservable(deltas.pipe(hostSwitchSink(opts))).toBe('--f-v 8ms g 20ms w', {
      f: failed(10, error, [p8080]),
      v: wrote([p8081]),
      g: failed(20, error, [p8080]),
      w: wrote([p8080]),
    });
    h.flush();
    assert.deepEqual(s.calls, ['0 all', '1 expose tcp/127.0.0.1:8080', '3 expose tcp/127.0.0.1:8081', '12 expose tcp/127.0.0.1:8080', '33 expose tcp/127.0.0.1:8080']);
    const about = lines().filter((l) => l.msg.startsWith('cannot expose'));
    assert.deepEqual(
      about.map((l) => l.level),
      [40, 20],
      'a warning, then debug lines',
    );
    assert.equal(about[0]?.msg, `${error}; retrying in 10 ms`);
  }),
);

test(
  'a 400 (malformed) is reported and retried later like a refusal',
  marbles((h, scheduler) => {
    const s = scripted(h, scheduler, {
      all: [list()],
      'expose tcp/127.0.0.1:8080': [{ status: 400, body: 'missing port in address\n' }, ok()],
    });
    h.expectObservable(h.cold('a', { a: add(p8080) }).pipe(hostSwitchSink(options(scheduler, s.request).opts))).toBe('--f 10ms w', {
      f: failed(10, 'the host switch refused to expose 127.0.0.1:8080 (tcp): HTTP 400 missing port in address', [p8080]),
      w: wrote([p8080]),
    });
    h.flush();
  }),
);

test(
  'per-port ordering: a remove waits for the add of the same port that is in flight',
  marbles((h, scheduler) => {
    const s = scripted(h, scheduler, {
      all: [list()],
      'expose tcp/127.0.0.1:8080': [ok(5)],
      'unexpose tcp/127.0.0.1:8080': [ok()],
    });
    const deltas = h.cold('a-r', { a: add(p8080), r: del(p8080) });
    h.expectObservable(deltas.pipe(hostSwitchSink(options(scheduler, s.request).opts))).toBe('------wx', {
      w: wrote([p8080]),
      x: wrote([], [p8080]),
    });
    h.flush();
    assert.deepEqual(s.calls, ['0 all', '1 expose tcp/127.0.0.1:8080', '6 unexpose tcp/127.0.0.1:8080']);
  }),
);

test(
  'with -adminInstall, removing 0.0.0.0:8080 and adding 127.0.0.1:8080 share a lane: the removal goes first',
  marbles((h, scheduler) => {
    const any = fwd(8080, { hostIp: '0.0.0.0' });
    const lo = fwd(8080, { hostIp: '127.0.0.1' });
    const s = scripted(h, scheduler, {
      all: [list()],
      'expose tcp/0.0.0.0:8080': [ok()],
      'unexpose tcp/0.0.0.0:8080': [ok(3)],
      'expose tcp/127.0.0.1:8080': [ok()],
    });
    const { opts } = options(scheduler, s.request, { adminInstall: true });
    const deltas = h.cold('a--b', { a: add(any), b: { added: [lo], removed: [any] } });
    h.expectObservable(deltas.pipe(hostSwitchSink(opts))).toBe('--w---xv', { w: wrote([any]), x: wrote([], [any]), v: wrote([lo]) });
    h.flush();
    assert.deepEqual(s.calls, ['0 all', '1 expose tcp/0.0.0.0:8080', '3 unexpose tcp/0.0.0.0:8080', '6 expose tcp/127.0.0.1:8080']);
  }),
);

test(
  'bounded concurrency: never more than `concurrency` requests at once',
  marbles((h, scheduler) => {
    const ports = [8080, 8081, 8082, 8083, 8084];
    const forwards = ports.map((p) => fwd(p));
    const script: Record<string, Spec[]> = { all: [list()] };
    for (const p of ports) script[`expose tcp/127.0.0.1:${String(p)}`] = [ok(3)];
    const s = scripted(h, scheduler, script);
    const { opts } = options(scheduler, s.request, { concurrency: 2 });
    const seen = record(h.cold('a', { a: add(...forwards) }).pipe(hostSwitchSink(opts)), scheduler);
    h.flush();
    assert.deepEqual(seen, ['4 wrote +tcp/8080', '4 wrote +tcp/8081', '7 wrote +tcp/8082', '7 wrote +tcp/8083', '10 wrote +tcp/8084']);
    assert.deepEqual(
      s.calls.map((c) => c.split(' ')[0]),
      ['0', '1', '1', '4', '4', '7'],
    );
  }),
);

test(
  'a request that never answers times out and is cancelled; after back-off the host is read again, and what it shows decides',
  marbles((h, scheduler) => {
    const s = scripted(h, scheduler, {
      all: [list(), list(entry(8080))],
      'expose tcp/127.0.0.1:8080': [hang],
    });
    const { opts } = options(scheduler, s.request);
    h.expectObservable(h.cold('a', { a: add(p8080) }).pipe(hostSwitchSink(opts))).toBe('51ms f 10ms w', {
      f: failed(10, 'could not expose 127.0.0.1:8080 (tcp): no answer to POST /services/forwarder/expose within 50 ms', [p8080]),
      // the expose did arrive: the forward is on the host, and no second expose is needed
      w: wrote([p8080]),
    });
    h.flush();
    assert.deepEqual(s.calls, ['0 all', '1 expose tcp/127.0.0.1:8080', '51 cancelled expose tcp/127.0.0.1:8080', '61 all']);
  }),
);

test(
  'the host switch is down at start-up: back off, then read and expose; one warning for the outage',
  marbles((h, scheduler) => {
    const s = scripted(h, scheduler, { all: [down, down, list()], 'expose tcp/127.0.0.1:8080': [ok()] });
    const { opts, lines } = options(scheduler, s.request);
    const error = 'could not read /services/forwarder/all: connect ECONNREFUSED 192.168.127.1:80';
    h.expectObservable(h.cold('a', { a: add(p8080) }).pipe(hostSwitchSink(opts))).toBe('-f 10ms g 20ms -w', {
      f: failed(10, error),
      g: failed(20, error),
      w: wrote([p8080]),
    });
    h.flush();
    assert.deepEqual(s.calls, ['0 all', '11 all', '32 all', '33 expose tcp/127.0.0.1:8080']);
    assert.deepEqual(
      lines().filter((l) => l.msg.includes('ECONNREFUSED')).map((l) => l.level),
      [40, 20],
    );
    assert.ok(lines().some((l) => l.level === 30 && l.msg === 'reached the host switch (the host switch) again'));
  }),
);

test(
  'the host switch restarts empty: a failed request leads to a re-read, and everything wanted is exposed again',
  marbles((h, scheduler) => {
    const s = scripted(h, scheduler, {
      all: [list(), list()],
      'expose tcp/127.0.0.1:8080': [ok(), ok()],
      'expose tcp/127.0.0.1:8081': [down, ok()],
    });
    const deltas = h.cold('a-b', { a: add(p8080), b: add(p8081) });
    h.expectObservable(deltas.pipe(hostSwitchSink(options(scheduler, s.request).opts))).toBe('--wf 10ms -(vx)', {
      w: wrote([p8080]),
      f: failed(10, 'could not expose 127.0.0.1:8081 (tcp): connect ECONNREFUSED 192.168.127.1:80', [p8081]),
      v: wrote([p8080]),
      x: wrote([p8081]),
    });
    h.flush();
    assert.deepEqual(s.calls, ['0 all', '1 expose tcp/127.0.0.1:8080', '2 expose tcp/127.0.0.1:8081', '13 all', '14 expose tcp/127.0.0.1:8080', '14 expose tcp/127.0.0.1:8081']);
  }),
);

test(
  'an entry of ours held by another forward (another remote) is left alone, reported, and looked at again later',
  marbles((h, scheduler) => {
    const theirs = { local: '127.0.0.1:8080', remote: '192.168.127.50:80', protocol: 'tcp' };
    const s = scripted(h, scheduler, { all: [list(theirs), list()], 'expose tcp/127.0.0.1:8080': [ok()] });
    h.expectObservable(h.cold('a', { a: add(p8080) }).pipe(hostSwitchSink(options(scheduler, s.request).opts))).toBe('-f 10ms -w', {
      f: failed(10, 'cannot expose 127.0.0.1:8080 (tcp): the host switch forwards it to 192.168.127.50:80 (not ours, left alone)', [p8080]),
      w: wrote([p8080]),
    });
    h.flush();
    assert.deepEqual(s.calls, ['0 all', '11 all', '12 expose tcp/127.0.0.1:8080']);
  }),
);

test(
  'withdraw: everything published is unexposed, then withdrawn and complete',
  marbles((h, scheduler) => {
    const s = scripted(h, scheduler, {
      all: [list()],
      'expose tcp/127.0.0.1:8080': [ok()],
      'expose udp/127.0.0.1:5353': [ok()],
      'unexpose tcp/127.0.0.1:8080': [ok()],
      'unexpose udp/127.0.0.1:5353': [ok(2)],
    });
    const deltas = h.cold('a--|', { a: add(p8080, dns) });
    const seen = record(deltas.pipe(hostSwitchSink(options(scheduler, s.request).opts)), scheduler);
    h.flush();
    assert.deepEqual(seen, ['2 wrote +tcp/8080', '2 wrote +udp/5353', '5 withdrawn 2', '5 complete']);
    assert.deepEqual(s.bodies.slice(2), [
      '/services/forwarder/unexpose {"local":"127.0.0.1:8080","protocol":"tcp"}',
      '/services/forwarder/unexpose {"local":"127.0.0.1:5353","protocol":"udp"}',
    ]);
  }),
);

test(
  'withdraw with nothing published: withdrawn 0 at once; an expose in flight finishes first and is then removed',
  marbles((h, scheduler) => {
    const s1 = scripted(h, scheduler, { all: [list()] });
    h.expectObservable(h.cold<PortDelta>('--|').pipe(hostSwitchSink(options(scheduler, s1.request).opts))).toBe('--(y|)', { y: withdrawn(0) });
    const s2 = scripted(h, scheduler, { all: [list()], 'expose tcp/127.0.0.1:8080': [ok(3)], 'unexpose tcp/127.0.0.1:8080': [ok()] });
    h.expectObservable(h.cold('a-|', { a: add(p8080) }).pipe(hostSwitchSink(options(scheduler, s2.request).opts))).toBe('----w(y|)', {
      w: wrote([p8080]),
      y: withdrawn(1),
    });
    h.flush();
    assert.deepEqual(s2.calls, ['0 all', '1 expose tcp/127.0.0.1:8080', '4 unexpose tcp/127.0.0.1:8080']);
  }),
);

test(
  'withdraw gives up after withdrawTimeoutMs when the host switch is gone, with a warning; a hanging unexpose is cancelled then',
  marbles((h, scheduler) => {
    const s = scripted(h, scheduler, {
      all: [list()],
      'expose tcp/127.0.0.1:8080': [ok()],
      'unexpose tcp/127.0.0.1:8080': [down, down, down, down],
    });
    const { opts, lines } = options(scheduler, s.request);
    const seen = record(h.cold('a-|', { a: add(p8080) }).pipe(hostSwitchSink(opts)), scheduler);
    const error = 'could not unexpose 127.0.0.1:8080 (tcp): connect ECONNREFUSED 192.168.127.1:80';
    const hung = scripted(h, scheduler, { all: [list()], 'expose tcp/127.0.0.1:8080': [ok()], 'unexpose tcp/127.0.0.1:8080': [hang] });
    const seenHung = record(h.cold('a-|', { a: add(p8080) }).pipe(hostSwitchSink(options(scheduler, hung.request, { requestTimeoutMs: 5_000 }).opts)), scheduler);
    h.flush();
    // The input completes at 2; the deadline is 2 + 100.
    assert.deepEqual(seen, [
      '2 wrote +tcp/8080',
      `3 failed (retry in 10): ${error}`,
      `14 failed (retry in 20): ${error}`,
      `35 failed (retry in 40): ${error}`,
      `76 failed (retry in 40): ${error}`,
      '102 withdrawn 0 (1 left)',
      '102 complete',
    ]);
    assert.deepEqual(s.calls.slice(2), ['2 unexpose tcp/127.0.0.1:8080', '13 unexpose tcp/127.0.0.1:8080', '34 unexpose tcp/127.0.0.1:8080', '75 unexpose tcp/127.0.0.1:8080']);
    assert.equal(lines().at(-1)?.msg, `gave up withdrawing 1 forward from the host switch (the host switch) after 100 ms (last error: ${error})`);
    assert.deepEqual(seenHung, ['2 wrote +tcp/8080', '102 withdrawn 0 (1 left)', '102 complete']);
    assert.deepEqual(hung.calls.slice(2), ['2 unexpose tcp/127.0.0.1:8080', '102 cancelled unexpose tcp/127.0.0.1:8080']);
  }),
);

test(
  'an input error propagates and cancels the request in flight; unsubscribing cancels too',
  marbles((h, scheduler) => {
    const s1 = scripted(h, scheduler, { all: [list()], 'expose tcp/127.0.0.1:8080': [hang] });
    h.expectObservable(h.cold('a-#', { a: add(p8080) }, new Error('merge failed')).pipe(hostSwitchSink(options(scheduler, s1.request).opts))).toBe(
      '--#',
      {},
      new Error('merge failed'),
    );
    const s2 = scripted(h, scheduler, { all: [hang] });
    h.expectObservable(h.cold('a', { a: add(p8080) }).pipe(hostSwitchSink(options(scheduler, s2.request).opts)), '^ 5ms !').toBe('-');
    h.flush();
    assert.deepEqual(s1.calls, ['0 all', '1 expose tcp/127.0.0.1:8080', '2 cancelled expose tcp/127.0.0.1:8080']);
    assert.deepEqual(s2.calls, ['0 all', '6 cancelled all']);
  }),
);

test(
  'synchronous answers and a synchronous input: exposed, withdrawn and completed at once',
  marbles((h, scheduler) => {
    const calls: string[] = [];
    const request = (req: HostSwitchRequest) => {
      calls.push(`${req.path} ${req.body ?? ''}`);
      return of({ status: 200, body: req.path.endsWith('/all') ? '[]\n' : '' });
    };
    h.expectObservable(of(add(p8080)).pipe(hostSwitchSink(options(scheduler, request).opts))).toBe('(wy|)', { w: wrote([p8080]), y: withdrawn(1) });
    h.flush();
    assert.deepEqual(calls, [
      '/services/forwarder/all ',
      '/services/forwarder/expose {"local":"127.0.0.1:8080","remote":"192.168.127.2:8080","protocol":"tcp"}',
      '/services/forwarder/unexpose {"local":"127.0.0.1:8080","protocol":"tcp"}',
    ]);
  }),
);

test(
  'while idle, the host\'s forwards are re-read every resyncMs: a host switch that restarted empty gets them back',
  marbles((h, scheduler) => {
    const { request, calls, unused } = scripted(h, scheduler, {
      all: [list(), list(), list(entry(8080))],
      'expose tcp/127.0.0.1:8080': [ok(), ok()],
      'unexpose tcp/127.0.0.1:8080': [ok()],
    });
    const { opts } = options(scheduler, request, { resyncMs: 20 });
    // published at 2; the re-read at 20 finds the host empty (it restarted): exposed again at 21;
    // the re-read at 40 finds it there; the input completes at 50: withdrawn, and no more reads
    const seen = record(h.cold('a 49ms |', { a: add(p8080) }).pipe(hostSwitchSink(opts)), scheduler);
    h.flush();
    assert.deepEqual(calls, ['0 all', '1 expose tcp/127.0.0.1:8080', '20 all', '21 expose tcp/127.0.0.1:8080', '40 all', '50 unexpose tcp/127.0.0.1:8080']);
    assert.deepEqual(seen, ['2 wrote +tcp/8080', '22 wrote +tcp/8080', '51 withdrawn 1', '51 complete']);
    assert.deepEqual(unused(), []);
  }),
);

test(
  'a withdraw does not wait for a periodic re-read in flight: the read is cancelled and the unexposes go at once',
  marbles((h, scheduler) => {
    const { request, calls, unused } = scripted(h, scheduler, {
      all: [list(), hang],
      'expose tcp/127.0.0.1:8080': [ok()],
      'unexpose tcp/127.0.0.1:8080': [ok()],
    });
    const { opts } = options(scheduler, request, { resyncMs: 20, requestTimeoutMs: 5_000 });
    // published at 2; the re-read at 20 hangs; the input completes at 25
    const seen = record(h.cold('a 24ms |', { a: add(p8080) }).pipe(hostSwitchSink(opts)), scheduler);
    h.flush();
    assert.deepEqual(calls, ['0 all', '1 expose tcp/127.0.0.1:8080', '20 all', '25 cancelled all', '25 unexpose tcp/127.0.0.1:8080']);
    assert.deepEqual(seen, ['2 wrote +tcp/8080', '26 withdrawn 1', '26 complete']);
    assert.deepEqual(unused(), []);
  }),
);

test(
  'with nothing published there is no periodic re-read',
  marbles((h, scheduler) => {
    const { request, calls, unused } = scripted(h, scheduler, { all: [list()] });
    const { opts } = options(scheduler, request, { resyncMs: 20 });
    const seen = record(h.cold<PortDelta>('69ms |').pipe(hostSwitchSink(opts)), scheduler);
    h.flush();
    assert.deepEqual(calls, ['0 all']);
    assert.deepEqual(seen, ['69 withdrawn 0', '69 complete']);
    assert.deepEqual(unused(), []);
  }),
);

test(
  'the doc-comment diagram of hostSwitchSink, run as it stands in src/sinks/hostswitch.ts',
  marbles((h, scheduler) => {
    const source = readFileSync(new URL('../src/sinks/hostswitch.ts', import.meta.url), 'utf8');
    const line = (name: string): string => {
      const m = new RegExp(`^ \\* {3}${name}: +(\\S+)`, 'm').exec(source);
      assert.ok(m?.[1] !== undefined, `the diagram's ${name} line`);
      return m[1];
    };
    const [deltasMarble, requestsMarble, reportsMarble] = [line('deltas'), line('requests'), line('reports')];
    const s = scripted(h, scheduler, {
      all: [list()],
      'expose tcp/127.0.0.1:8080': [ok()],
      'unexpose tcp/127.0.0.1:8080': [ok()],
      'expose tcp/127.0.0.1:8081': [ok()],
      'unexpose tcp/127.0.0.1:8081': [ok()],
    });
    const deltas = h.cold(deltasMarble, { a: add(p8080), b: del(p8080), c: add(p8081) });
    h.expectObservable(deltas.pipe(hostSwitchSink(options(scheduler, s.request).opts))).toBe(reportsMarble, {
      w: wrote([p8080]),
      x: wrote([], [p8080]),
      v: wrote([p8081]),
      y: withdrawn(1),
    });
    h.flush();
    // The requests line: one letter per request, at its frame.
    const letter = { all: 'L', expose: 'E', unexpose: 'U' } as Record<string, string>;
    const drawn = Array.from(requestsMarble, (c) => c).flatMap((c, frame) => (c === '-' ? [] : [`${String(frame)} ${c}`]));
    assert.deepEqual(s.calls.map((c) => `${c.split(' ')[0] ?? ''} ${letter[c.split(' ')[1] ?? ''] ?? '?'}`), drawn);
    assert.deepEqual(s.unused(), []);
  }),
);

/**
 * A host switch as a map of entries, answering after one frame: `GET /all` lists them; expose and
 * unexpose change them as the forwarder does; `answer` overrides what one request gets.
 */
function modelHost(h: RunHelpers, scheduler: TestScheduler, answer: (queue: string) => Spec | undefined) {
  const host = new Map<string, string>(); // `proto/local` → remote
  const calls: string[] = [];
  const request = (req: HostSwitchRequest): Observable<HostSwitchResponse> => {
    const body = JSON.parse(req.body ?? '{}') as { local?: string; remote?: string; protocol?: string };
    const key = `${body.protocol ?? ''}/${body.local ?? ''}`;
    const queue = req.path.endsWith('/all') ? 'all' : `${req.path.slice('/services/forwarder/'.length)} ${key}`;
    calls.push(`${String(scheduler.now())} ${queue}`);
    const forced = answer(queue);
    let reply: HostSwitchResponse;
    if (forced) reply = { status: forced.status ?? 200, body: forced.body ?? '' };
    else if (queue === 'all') reply = { status: 200, body: JSON.stringify([...host].map(([k, remote]) => ({ local: k.slice(4), remote, protocol: k.slice(0, 3) }))) };
    else if (req.path.endsWith('/expose')) reply = host.has(key) ? { status: 500, body: 'proxy already running\n' } : (host.set(key, body.remote ?? ''), { status: 200, body: '' });
    else reply = host.delete(key) ? { status: 200, body: '' } : { status: 500, body: 'proxy not found\n' };
    return h.cold('-(r|)', { r: reply });
  };
  return { host, calls, request };
}

test(
  'one forward answered 408 forever: it retries on its own back-off, the others are exposed at once and, at stop, unexposed',
  marbles((h, scheduler) => {
    const p8082 = fwd(8082);
    const m = modelHost(h, scheduler, (queue) => (queue === 'expose tcp/127.0.0.1:8080' ? { status: 408, body: 'Request Timeout\n' } : undefined));
    // One request at a time: the failing forward must still not hold the others back.
    const { opts, lines } = options(scheduler, m.request, { concurrency: 1 });
    const seen = record(h.cold('a 199ms |', { a: add(p8080, p8081, p8082) }).pipe(hostSwitchSink(opts)), scheduler);
    h.flush();
    const error = 'expose 127.0.0.1:8080 (tcp) answered HTTP 408: Request Timeout';
    assert.deepEqual(seen.slice(0, 3), [`2 failed (retry in 10): ${error}`, '3 wrote +tcp/8081', '4 wrote +tcp/8082']);
    // Its retries follow its own back-off (10, 20, 40, 40 ...; each after a re-read), not a busy loop.
    const exposes = m.calls.filter((c) => c.endsWith('expose tcp/127.0.0.1:8080') && !c.includes('unexpose'));
    assert.ok(exposes.length >= 4 && exposes.length <= 7, exposes.join(', '));
    // The input completes at 200: everything that may be ours is unexposed at once, 8080 too (its
    // 408 may have hidden a success): "proxy not found" for it is fine.
    assert.deepEqual(m.calls.filter((c) => c.includes('unexpose')), ['200 unexpose tcp/127.0.0.1:8080', '201 unexpose tcp/127.0.0.1:8081', '202 unexpose tcp/127.0.0.1:8082']);
    assert.deepEqual(seen.slice(-2), ['203 withdrawn 3', '203 complete']);
    assert.deepEqual([...m.host.keys()], []);
    assert.equal(lines().filter((l) => l.level >= 40 && l.msg.includes('408')).length, 1, 'one warning for the 408s, then debug lines');
  }),
);

test(
  'a requester that throws synchronously ends the sink with an error notification, never an uncaught exception',
  marbles((h, scheduler) => {
    const thrower = (): never => {
      throw new Error('boom');
    };
    h.expectObservable(h.cold('a', { a: add(p8080) }).pipe(hostSwitchSink(options(scheduler, thrower).opts))).toBe(
      '#',
      {},
      new Error('the host-switch requester threw on GET /services/forwarder/all: boom', { cause: new Error('boom') }),
    );
    // A throw at a later request (the expose), with the list read answered.
    const later = (req: HostSwitchRequest): Observable<HostSwitchResponse> => {
      if (req.path.endsWith('/expose')) throw new Error('bad request object');
      return h.cold('-(r|)', { r: { status: 200, body: '[]' } });
    };
    h.expectObservable(h.cold('a', { a: add(p8080) }).pipe(hostSwitchSink(options(scheduler, later).opts))).toBe(
      '-#',
      {},
      new Error('the host-switch requester threw on POST /services/forwarder/expose: bad request object', { cause: new Error('bad request object') }),
    );
    // A throw in the back-off's random source (a callback too) is an error notification as well.
    const refusing = (): Observable<HostSwitchResponse> => h.cold('-(r|)', { r: { status: 200, body: '[]' } });
    const { opts } = options(scheduler, (req) => (req.path.endsWith('/all') ? refusing() : h.cold('-(r|)', { r: { status: 400, body: 'no\n' } })), {
      random: () => {
        throw new Error('no entropy');
      },
    });
    h.expectObservable(h.cold('a', { a: add(p8080) }).pipe(hostSwitchSink(opts))).toBe('--#', {}, new Error('no entropy'));
  }),
);

test(
  'a forward the start-up list already shows exactly as wanted is adopted, never exposed, even when a duplicate would be refused with a bind error (pre-0.8.2)',
  marbles((h, scheduler) => {
    const s = scripted(h, scheduler, {
      all: [list(entry(8080), { local: '127.0.0.1:9000', remote: '10.0.0.7:9000', protocol: 'tcp' })],
      'unexpose tcp/127.0.0.1:8080': [ok()],
    });
    // stopped 2 frames after start-up
    const seen = record(h.cold('a-|', { a: add(p8080) }).pipe(hostSwitchSink(options(scheduler, s.request).opts)), scheduler);
    h.flush();
    assert.deepEqual(s.calls, ['0 all', '2 unexpose tcp/127.0.0.1:8080']);
    assert.deepEqual(seen, ['1 wrote +tcp/8080', '3 withdrawn 1', '3 complete']);
  }),
);

test(
  'stopped before the start-up list has answered: the read finishes, and what it shows of ours is unexposed',
  marbles((h, scheduler) => {
    const s = scripted(h, scheduler, {
      all: [{ ...list(entry(8080), entry(8081)), after: 5 }],
      'unexpose tcp/127.0.0.1:8080': [ok()],
    });
    const seen = record(h.cold('a|', { a: add(p8080) }).pipe(hostSwitchSink(options(scheduler, s.request).opts)), scheduler);
    h.flush();
    // 8081 is listed as if ours, but nothing here wanted it: not ours to judge, left alone.
    assert.deepEqual(s.calls, ['0 all', '5 unexpose tcp/127.0.0.1:8080']);
    assert.deepEqual(seen, ['6 withdrawn 1', '6 complete']);
  }),
);
