import assert from 'node:assert/strict';
import { test } from 'node:test';
import { map } from 'rxjs';
import { portSetOf, type PortDelta } from '../src/model.js';
import { renderTable, tableSink } from '../src/sinks/table.js';
import { EventEmitter } from 'node:events';
import { fwd, marbles, recordingLogger } from './helpers.js';

const web = fwd(8080, { owner: 'abcdef0123456789', containerPort: 80 });
const dns = fwd(53, { protocol: 'udp', hostIp: '127.0.0.1', owner: 'rule' , source: 'iptables' });

function capture(isTTY: boolean): { out: { isTTY: boolean; write: (t: string) => void }; text: () => string } {
  const chunks: string[] = [];
  return { out: { isTTY, write: (t) => chunks.push(t) }, text: () => chunks.join('') };
}

test('table sink: JSON lines off a terminal, one per change, and removals of all on withdraw', marbles(({ cold, expectObservable, flush }) => {
  const { out, text } = capture(false);
  const deltas = cold<PortDelta>('a-b-|', { a: { added: [web, dns], removed: [] }, b: { added: [], removed: [dns] } });
  expectObservable(deltas.pipe(tableSink(out), map((r) => r.type))).toBe('a-a-(w|)', { a: 'wrote', w: 'withdrawn' });
  flush();
  const lines = text().trim().split('\n').map((l) => JSON.parse(l) as { event: string; hostPort: number });
  assert.deepEqual(lines.map((l) => `${l.event} ${String(l.hostPort)}`), ['add 8080', 'add 53', 'remove 53', 'remove 8080']);
}));

test('table sink: redraws the whole table on a terminal', marbles(({ cold, expectObservable, flush }) => {
  const { out, text } = capture(true);
  const deltas = cold<PortDelta>('a|', { a: { added: [web], removed: [] } });
  expectObservable(deltas.pipe(tableSink(out), map((r) => r.type))).toBe('a(w|)', { a: 'wrote', w: 'withdrawn' });
  flush();
  const frames = text().split('\x1b[H\x1b[2J').filter(Boolean);
  assert.equal(frames.length, 2);
  assert.match(frames[0]!, /0 ports forwarded/);
  assert.match(frames[1]!, /^tcp +0\.0\.0\.0 +8080 +80 +docker +abcdef012345$/m);
}));

test('renderTable orders rows by port and aligns columns', () => {
  assert.equal(
    renderTable(portSetOf([web, dns])),
    [
      'PROTO  HOST IP    HOST PORT  TO PORT  SOURCE    OWNER',
      'udp    127.0.0.1  53         -        iptables  rule',
      'tcp    0.0.0.0    8080       80       docker    abcdef012345',
      '',
      '2 ports forwarded',
      '',
    ].join('\n'),
  );
});

/** An output that fails as a closed pipe does: the error comes as an event, after the write. */
class ClosingOutput extends EventEmitter {
  readonly chunks: string[] = [];
  writable = true;
  write(text: string): boolean {
    this.chunks.push(text);
    return true;
  }
}

test('table sink: an output that fails (EPIPE) ends the table, said once, without an error', marbles(({ cold, expectObservable, flush }, scheduler) => {
  const out = new ClosingOutput();
  const { log, lines } = recordingLogger();
  const deltas = cold<PortDelta>('a-b-c', { a: { added: [web], removed: [] }, b: { added: [dns], removed: [] }, c: { added: [], removed: [web] } });
  scheduler.schedule(() => out.emit('error', Object.assign(new Error('write EPIPE'), { code: 'EPIPE' })), 1);
  expectObservable(deltas.pipe(tableSink(out, log), map((r) => r.type))).toBe('a|', { a: 'wrote' });
  flush();
  assert.equal(out.chunks.length, 1, 'nothing written after the output failed');
  assert.deepEqual(lines().map((l) => l.msg), ["the table's output is gone (write EPIPE); no longer showing the table, forwarding goes on"]);
  // an error the output emits later, with no table running, ends nothing either
  out.emit('error', new Error('write EPIPE'));
}));

test('table sink: an output already closed ends the table at its next write', marbles(({ cold, expectObservable }) => {
  const out = new ClosingOutput();
  out.writable = false;
  const { log } = recordingLogger();
  expectObservable(cold<PortDelta>('-a-b', { a: { added: [web], removed: [] }, b: { added: [dns], removed: [] } }).pipe(tableSink(out, log), map((r) => r.type))).toBe('-|');
}));

test('table sink: a write that throws ends the table', marbles(({ cold, expectObservable }) => {
  const out = { write: (): never => { throw new Error('EBADF'); } };
  const { log } = recordingLogger();
  expectObservable(cold<PortDelta>('-a', { a: { added: [web], removed: [] } }).pipe(tableSink(out, log), map((r) => r.type))).toBe('-|');
}));
