import assert from 'node:assert/strict';
import { test } from 'node:test';
import { EMPTY, Observable, of, throwError } from 'rxjs';
import type { TestScheduler } from 'rxjs/testing';
import type { Forward, PortDelta } from '../src/model.js';
import type { SinkReport } from '../src/sinks/sink.js';
import { vtunnelSink, type VtunnelSend, type VtunnelSinkOptions } from '../src/sinks/vtunnel.js';
import { encodePortMapping } from '../src/wire/portMapping.js';
import { pino } from 'pino';
import { fwd, marbles, recordingLogger, type RunHelpers } from './helpers.js';

// Times below are in frames (1 frame = 1 virtual ms). Back-off: 10, 20, 40, 40, ... (jitter
// neutralised by random() = 0.5) unless a test says otherwise.

const p8080 = fwd(8080);
const p8081 = fwd(8081);
const p8082 = fwd(8082);

const add = (...added: Forward[]): PortDelta => ({ added, removed: [] });
const del = (...removed: Forward[]): PortDelta => ({ added: [], removed });

const wrote = (added: Forward[], removed: Forward[] = []): SinkReport => ({ sink: 'vtunnel', type: 'wrote', added, removed });
const failed = (retryInMs: number, error = 'connect ECONNREFUSED 127.0.0.1:3040'): SinkReport => ({
  sink: 'vtunnel',
  type: 'failed',
  error,
  retryInMs,
});
const withdrawn = (count: number): SinkReport => ({ sink: 'vtunnel', type: 'withdrawn', count });
const abandoned = (forwards: Forward[], error: string): SinkReport => ({ sink: 'vtunnel', type: 'abandoned', count: forwards.length, forwards, error });

/** `-8080` / `+8080,8081`: what one message asked the host to do. */
function summary(line: string): string {
  assert.ok(line.endsWith('\n'));
  const { remove, ports } = JSON.parse(line) as { remove: boolean; ports: Record<string, { HostPort: string }[]> };
  const hostPorts = Object.values(ports).flatMap((bindings) => bindings.map((b) => b.HostPort));
  return `${remove ? '-' : '+'}${hostPorts.join(',')}`;
}

/**
 * A transport that answers each send with the next marble of `script` (`-|` succeeds after a
 * frame, `-#` fails after a frame, `-` never answers) and records `FRAME ±ports` per send and
 * `FRAME cancelled` when the sink gives up on an unanswered one.
 */
function scriptedSend(h: RunHelpers, scheduler: TestScheduler, script: string[]) {
  const calls: string[] = [];
  const send = (line: string): Observable<void> => {
    calls.push(`${String(scheduler.now())} ${summary(line)}`);
    const marble = script.shift();
    assert.ok(marble !== undefined, `unexpected send at ${String(scheduler.now())}: ${line}`);
    const answer = h.cold<never>(marble, undefined, new Error('connect ECONNREFUSED 127.0.0.1:3040'));
    return new Observable<void>((subscriber) => {
      let answered = false;
      const sub = answer.subscribe({
        error: (err: unknown) => {
          answered = true;
          subscriber.error(err);
        },
        complete: () => {
          answered = true;
          subscriber.complete();
        },
      });
      return () => {
        sub.unsubscribe();
        if (!answered) calls.push(`${String(scheduler.now())} cancelled`);
      };
    });
  };
  return { send, calls };
}

function options(scheduler: TestScheduler, send: VtunnelSend, more: Partial<VtunnelSinkOptions> = {}) {
  const logger = recordingLogger();
  const opts: VtunnelSinkOptions = {
    address: '127.0.0.1:3040',
    send,
    connectAddrs: [{ network: 'ip+net', addr: '172.26.112.5/20' }],
    sendTimeoutMs: 50,
    withdrawTimeoutMs: 100,
    resyncMs: 0, // the periodic re-send has tests of its own
    backoff: { initialMs: 10, factor: 2, maxMs: 40, jitter: 0.2 },
    random: () => 0.5,
    scheduler,
    logger: logger.log,
    ...more,
  };
  return { opts, lines: logger.lines };
}

test(
  'an add and then a remove each become one message and one wrote report',
  marbles((h, scheduler) => {
    const { send, calls } = scriptedSend(h, scheduler, ['-|', '-|']);
    const deltas = h.cold('a--b', { a: add(p8080), b: del(p8080) });
    h.expectObservable(deltas.pipe(vtunnelSink(options(scheduler, send).opts))).toBe('-w--x', {
      w: wrote([p8080]),
      x: wrote([], [p8080]),
    });
    h.flush();
    assert.deepEqual(calls, ['0 +8080', '3 -8080']);
  }),
);

test(
  'the line on the wire carries the connect addresses and the exact JSON',
  marbles((h, scheduler) => {
    const lines: string[] = [];
    const send = (line: string) => {
      lines.push(line);
      return EMPTY;
    };
    const http = fwd(8080, { containerPort: 80 });
    h.expectObservable(h.cold('a', { a: add(http) }).pipe(vtunnelSink(options(scheduler, send).opts))).toBe('w', { w: wrote([http]) });
    h.flush();
    assert.deepEqual(lines, [
      '{"remove":false,"ports":{"80/tcp":[{"HostIp":"0.0.0.0","HostPort":"8080"}]},"connectAddrs":[{"network":"ip+net","addr":"172.26.112.5/20"}]}\n',
    ]);
  }),
);

test(
  'a transport that answers synchronously works round after round',
  marbles((h, scheduler) => {
    const calls: string[] = [];
    const send = (line: string) => {
      calls.push(summary(line));
      return EMPTY;
    };
    const deltas = h.cold('ab', { a: add(p8080), b: add(p8081) });
    h.expectObservable(deltas.pipe(vtunnelSink(options(scheduler, send).opts))).toBe('wx', {
      w: wrote([p8080]),
      x: wrote([p8081]),
    });
    h.flush();
    assert.deepEqual(calls, ['+8080', '+8081']);
  }),
);

test(
  'changes that arrive while a write is in flight are coalesced into the next round; an add and remove cancel',
  marbles((h, scheduler) => {
    const { send, calls } = scriptedSend(h, scheduler, ['-----|', '-----|']);
    const deltas = h.cold('ab-cd', { a: add(p8080), b: add(p8081), c: del(p8081), d: add(p8082) });
    h.expectObservable(deltas.pipe(vtunnelSink(options(scheduler, send).opts))).toBe('-----w----x', {
      w: wrote([p8080]),
      x: wrote([p8082]),
    });
    h.flush();
    assert.deepEqual(calls, ['0 +8080', '5 +8082']);
  }),
);

test(
  'a failed write backs off, and the first round that succeeds re-sends the whole desired set',
  marbles((h, scheduler) => {
    const { send, calls } = scriptedSend(h, scheduler, ['-|', '-#', '-#', '-|']);
    const { opts, lines } = options(scheduler, send);
    const deltas = h.cold('a-b', { a: add(p8080), b: add(p8081) });
    h.expectObservable(deltas.pipe(vtunnelSink(opts))).toBe('-w-f 10ms g 20ms x', {
      w: wrote([p8080]),
      f: failed(10),
      g: failed(20),
      // 8080 was on the host before the outage, but the host may have restarted empty
      x: wrote([p8080, p8081]),
    });
    h.flush();
    assert.deepEqual(calls, ['0 +8080', '2 +8081', '13 +8080,8081', '34 +8080,8081']);
    assert.deepEqual(lines(), [
      { level: 40, msg: 'could not add 1 port over the vtunnel (127.0.0.1:3040): connect ECONNREFUSED 127.0.0.1:3040; retrying in 10 ms' },
      { level: 20, msg: 'could not add 2 ports over the vtunnel (127.0.0.1:3040): connect ECONNREFUSED 127.0.0.1:3040; retrying in 20 ms' },
      { level: 30, msg: 'reached the vtunnel peer again; re-sent 2 forwards' },
    ]);
  }),
);

test(
  'after a failure, a forward removed meanwhile is removed from the host before the rest is re-sent',
  marbles((h, scheduler) => {
    const { send, calls } = scriptedSend(h, scheduler, ['-|', '-#', '-|', '-|']);
    const deltas = h.cold('a-b--c', { a: add(p8080), b: add(p8081), c: del(p8080) });
    h.expectObservable(deltas.pipe(vtunnelSink(options(scheduler, send).opts))).toBe('-w-f 11ms x', {
      w: wrote([p8080]),
      f: failed(10),
      x: wrote([p8081], [p8080]),
    });
    h.flush();
    assert.deepEqual(calls, ['0 +8080', '2 +8081', '13 -8080', '14 +8081']);
  }),
);

test(
  'a forward whose add failed is removed on retry if it is no longer wanted (it may have reached the host)',
  marbles((h, scheduler) => {
    const { send, calls } = scriptedSend(h, scheduler, ['-#', '-|']);
    const deltas = h.cold('a-b', { a: add(p8080), b: del(p8080) });
    h.expectObservable(deltas.pipe(vtunnelSink(options(scheduler, send).opts))).toBe('-f 10ms x', {
      f: failed(10),
      x: wrote([], [p8080]),
    });
    h.flush();
    assert.deepEqual(calls, ['0 +8080', '11 -8080']);
  }),
);

test(
  'a state over maxMessageBytes goes as several messages in turn; one that fails fails the round, and the retry re-sends it all',
  marbles((h, scheduler) => {
    const p8083 = fwd(8083);
    const { send, calls } = scriptedSend(h, scheduler, ['-|', '-#', '-|', '-|', '-|', '-|']);
    const { connectAddrs } = options(scheduler, send).opts;
    // Room for two of these forwards (each is charged 52 bytes) and not three.
    const maxMessageBytes = Buffer.byteLength(encodePortMapping(false, [], typeof connectAddrs === 'function' ? connectAddrs() : connectAddrs)) + 110;
    const { opts } = options(scheduler, send, { maxMessageBytes });
    const deltas = h.cold('a 19ms |', { a: add(p8080, p8081, p8082, p8083) });
    h.expectObservable(deltas.pipe(vtunnelSink(opts))).toBe('--f 11ms w 7ms (y|)', {
      f: failed(10),
      w: wrote([p8080, p8081, p8082, p8083]),
      y: withdrawn(4),
    });
    h.flush();
    assert.deepEqual(calls, ['0 +8080,8081', '1 +8082,8083', '12 +8080,8081', '13 +8082,8083', '20 -8080,8081', '21 -8082,8083']);
  }),
);

test(
  'a send that never answers fails after sendTimeoutMs and is cancelled',
  marbles((h, scheduler) => {
    const { send, calls } = scriptedSend(h, scheduler, ['-', '-|']);
    const deltas = h.cold('a', { a: add(p8080) });
    h.expectObservable(deltas.pipe(vtunnelSink(options(scheduler, send).opts))).toBe('50ms f 10ms w', {
      f: failed(10, 'no answer from the vtunnel peer within 50 ms'),
      w: wrote([p8080]),
    });
    h.flush();
    assert.deepEqual(calls, ['0 +8080', '50 cancelled', '60 +8080']);
  }),
);

test(
  'back-off doubles up to maxMs with jitter applied, and a success starts it over',
  marbles((h, scheduler) => {
    // random() = 0 scales every delay by 1 - jitter = 0.8: 8, 16, 32, 32 (40 capped)
    const { send, calls } = scriptedSend(h, scheduler, ['#', '#', '#', '#', '|', '#', '|']);
    const deltas = h.cold('a 199ms b', { a: add(p8080), b: add(p8081) });
    const { opts } = options(scheduler, send, { random: () => 0 });
    h.expectObservable(deltas.pipe(vtunnelSink(opts))).toBe('a 7ms b 15ms c 31ms d 31ms w 111ms e 7ms x', {
      a: failed(8),
      b: failed(16),
      c: failed(32),
      d: failed(32),
      w: wrote([p8080]),
      e: failed(8),
      x: wrote([p8080, p8081]),
    });
    h.flush();
    assert.deepEqual(calls, ['0 +8080', '8 +8080', '24 +8080', '56 +8080', '88 +8080', '200 +8081', '208 +8080,8081']);
  }),
);

test(
  'when the input completes, everything published is withdrawn in one message, then the sink completes',
  marbles((h, scheduler) => {
    const { send, calls } = scriptedSend(h, scheduler, ['-|', '-|', '-|']);
    const deltas = h.cold('a-b--|', { a: add(p8080), b: add(p8081) });
    h.expectObservable(deltas.pipe(vtunnelSink(options(scheduler, send).opts))).toBe('-w-x--(y|)', {
      w: wrote([p8080]),
      x: wrote([p8081]),
      y: withdrawn(2),
    });
    h.flush();
    assert.deepEqual(calls, ['0 +8080', '2 +8081', '5 -8080,8081']);
  }),
);

test(
  'completion while a write is in flight lets it finish, then withdraws what it added',
  marbles((h, scheduler) => {
    const { send, calls } = scriptedSend(h, scheduler, ['---|', '---|']);
    const deltas = h.cold('a|', { a: add(p8080) });
    h.expectObservable(deltas.pipe(vtunnelSink(options(scheduler, send).opts))).toBe('---w--(y|)', {
      w: wrote([p8080]),
      y: withdrawn(1),
    });
    h.flush();
    assert.deepEqual(calls, ['0 +8080', '3 -8080']);
  }),
);

test(
  'completion during back-off withdraws at once, including an add that failed',
  marbles((h, scheduler) => {
    const { send, calls } = scriptedSend(h, scheduler, ['-#', '-|']);
    const deltas = h.cold('a--|', { a: add(p8080) });
    h.expectObservable(deltas.pipe(vtunnelSink(options(scheduler, send).opts))).toBe('-f--(y|)', {
      f: failed(10),
      y: withdrawn(1),
    });
    h.flush();
    assert.deepEqual(calls, ['0 +8080', '3 -8080']);
  }),
);

test(
  'completion with nothing published reports withdrawn 0 and sends nothing',
  marbles((h, scheduler) => {
    const { send, calls } = scriptedSend(h, scheduler, []);
    const deltas = h.cold<PortDelta>('--|');
    h.expectObservable(deltas.pipe(vtunnelSink(options(scheduler, send).opts))).toBe('--(y|)', { y: withdrawn(0) });
    h.flush();
    assert.deepEqual(calls, []);
  }),
);

test(
  'withdrawing retries while the peer is away, and gives up after withdrawTimeoutMs with a warning',
  marbles((h, scheduler) => {
    const { send, calls } = scriptedSend(h, scheduler, ['-|', '-#', '-#', '-#', '-#', '-#']);
    const { opts, lines } = options(scheduler, send);
    const deltas = h.cold('a--|', { a: add(p8080) });
    h.expectObservable(deltas.pipe(vtunnelSink(opts))).toBe('-w--a 10ms b 20ms c 40ms d 25ms (g|)', {
      w: wrote([p8080]),
      g: abandoned([p8080], 'connect ECONNREFUSED 127.0.0.1:3040'),
      a: failed(10),
      b: failed(20),
      c: failed(40),
      d: failed(40),
    });
    h.flush();
    assert.deepEqual(calls, ['0 +8080', '3 -8080', '14 -8080', '35 -8080', '76 -8080']);
    assert.deepEqual(lines().at(-1), {
      level: 40,
      msg:
        'gave up withdrawing 1 forward from the vtunnel peer (127.0.0.1:3040) after 100 ms ' +
        '(last error: connect ECONNREFUSED 127.0.0.1:3040); the host may keep them until it restarts',
    });
  }),
);

test(
  'a withdraw that hangs is cancelled at withdrawTimeoutMs, so shutdown never waits on a gone host',
  marbles((h, scheduler) => {
    const { send, calls } = scriptedSend(h, scheduler, ['|', '-']);
    const { opts } = options(scheduler, send, { sendTimeoutMs: 5_000 });
    const deltas = h.cold('a|', { a: add(p8080) });
    h.expectObservable(deltas.pipe(vtunnelSink(opts))).toBe('w 100ms (g|)', { w: wrote([p8080]), g: abandoned([p8080], 'no answer within 100 ms') });
    h.flush();
    assert.deepEqual(calls, ['0 +8080', '1 -8080', '101 cancelled']);
  }),
);

test(
  'an error on the input propagates and cancels the write in flight',
  marbles((h, scheduler) => {
    const { send, calls } = scriptedSend(h, scheduler, ['-----|']);
    const deltas = h.cold('a-#', { a: add(p8080) }, new Error('merge failed'));
    h.expectObservable(deltas.pipe(vtunnelSink(options(scheduler, send).opts))).toBe('--#', {}, new Error('merge failed'));
    h.flush();
    assert.deepEqual(calls, ['0 +8080', '2 cancelled']);
  }),
);

test(
  'unsubscribing cancels the write in flight and the retry timer',
  marbles((h, scheduler) => {
    const { send, calls } = scriptedSend(h, scheduler, ['-#', '---|']);
    const deltas = h.cold('a', { a: add(p8080) });
    h.expectObservable(deltas.pipe(vtunnelSink(options(scheduler, send).opts)), '^ 12ms !').toBe('-f', { f: failed(10) });
    h.flush();
    // the retry at 11 starts a send that would answer at 14; unsubscribing at 13 cancels it
    assert.deepEqual(calls, ['0 +8080', '11 +8080', '13 cancelled']);
  }),
);

test(
  'a synchronous input and a synchronous transport: written, withdrawn and completed at once',
  marbles((h, scheduler) => {
    const calls: string[] = [];
    const send = (line: string) => {
      calls.push(summary(line));
      return EMPTY;
    };
    h.expectObservable(of(add(p8080)).pipe(vtunnelSink(options(scheduler, send).opts))).toBe('(wy|)', {
      w: wrote([p8080]),
      y: withdrawn(1),
    });
    h.flush();
    assert.deepEqual(calls, ['+8080', '-8080']);
  }),
);

test(
  'idle and in sync, the whole state is re-sent every resyncMs (a host end that restarted empty gets it back); a change restarts the wait',
  marbles((h, scheduler) => {
    const { send, calls } = scriptedSend(h, scheduler, ['-|', '-|', '-|', '-|', '-|']);
    const deltas = h.cold('a 29ms b', { a: add(p8080), b: add(p8081) });
    const { opts } = options(scheduler, send, { resyncMs: 20 });
    const resent = (count: number): SinkReport => ({ sink: 'vtunnel', type: 'resent', count });
    // +8080 answered at 1; re-sent at 21 (answered 22); b at 30 cuts the next wait short (due at 42);
    // +8081 answered at 31, so the next re-send is at 51
    h.expectObservable(deltas.pipe(vtunnelSink(opts)), '^ 60ms !').toBe('-w 20ms r 8ms v 20ms s', {
      w: wrote([p8080]),
      r: resent(1),
      v: wrote([p8081]),
      s: resent(2),
    });
    h.flush();
    assert.deepEqual(calls, ['0 +8080', '21 +8080', '30 +8081', '51 +8080,8081']);
  }),
);

test(
  'nothing published, nothing re-sent; a failed re-send backs off like any round and re-arms after it succeeds',
  marbles((h, scheduler) => {
    const { send, calls } = scriptedSend(h, scheduler, ['-|', '-|', '-|', '-#', '-|', '-|']);
    const deltas = h.cold('a--b 50ms c', { a: add(p8080), b: del(p8080), c: add(p8081) });
    const { opts } = options(scheduler, send, { resyncMs: 20 });
    // empty from 4 to 54: no re-send. +8081 at 54 (answered 55); re-send at 75 fails at 76,
    // retried after 10 at 86 (answered 87, a wrote: a retry is a repair, not a routine re-send);
    // re-armed from there: the next re-send at 107
    h.expectObservable(deltas.pipe(vtunnelSink(opts)), '^ 110ms !').toBe('-w--x 50ms v 20ms f 10ms y 20ms r', {
      w: wrote([p8080]),
      x: wrote([], [p8080]),
      v: wrote([p8081]),
      f: failed(10),
      y: wrote([p8081]),
      r: { sink: 'vtunnel', type: 'resent', count: 1 },
    });
    h.flush();
    assert.deepEqual(calls, ['0 +8080', '3 -8080', '54 +8081', '75 +8081', '86 +8081', '107 +8081']);
  }),
);

test(
  'the diagram of vtunnelSink: changes during a round share the next one; completion withdraws everything',
  marbles((h, scheduler) => {
    const { send, calls } = scriptedSend(h, scheduler, ['---|', '---|', '---|']);
    const deltas = h.cold('a-bc----------|', { a: add(p8080), b: add(p8081), c: add(p8082) });
    h.expectObservable(deltas.pipe(vtunnelSink(options(scheduler, send).opts))).toBe('---w--v----------(x|)', {
      w: wrote([p8080]),
      v: wrote([p8081, p8082]),
      x: withdrawn(3),
    });
    h.flush();
    assert.deepEqual(calls, ['0 +8080', '3 +8081,8082', '14 -8080,8081,8082']);
  }),
);

test(
  'a send that throws fails its round like a refused connection: reported, retried, never uncaught',
  marbles((h, scheduler) => {
    let throws = 1;
    const send = (): Observable<void> => {
      if (throws-- > 0) throw new Error('sender blew up');
      return EMPTY;
    };
    const deltas = h.cold('a', { a: add(p8080) });
    h.expectObservable(deltas.pipe(vtunnelSink(options(scheduler, send).opts))).toBe('f 9ms w', {
      f: failed(10, 'sender blew up'),
      w: wrote([p8080]),
    });
  }),
);

test(
  'a connectAddrs function that throws fails its round the same way',
  marbles((h, scheduler) => {
    let throws = 1;
    const connectAddrs = () => {
      if (throws-- > 0) throw new Error('no interfaces');
      return [];
    };
    const deltas = h.cold('a', { a: add(p8080) });
    h.expectObservable(deltas.pipe(vtunnelSink(options(scheduler, () => EMPTY, { connectAddrs }).opts))).toBe('f 9ms w', {
      f: failed(10, 'no interfaces'),
      w: wrote([p8080]),
    });
  }),
);

test(
  'a logger that throws becomes the sink\'s error notification, never an uncaught exception',
  marbles((h, scheduler) => {
    const { opts } = options(scheduler, () => throwError(() => new Error('refused')));
    const log = pino({
      hooks: {
        logMethod: () => {
          throw new Error('logger broke');
        },
      },
    });
    const deltas = h.cold('a', { a: add(p8080) });
    h.expectObservable(deltas.pipe(vtunnelSink({ ...opts, logger: log }))).toBe('#', {}, new Error('logger broke'));
  }),
);
