import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatLogLine, logPane, paneLines } from '../../src/sinks/logPane.js';

test('formatLogLine: time, level, module, message and the error of a pino line; anything else as it is', () => {
  const time = Date.UTC(2026, 0, 2, 3, 4, 5);
  assert.equal(formatLogLine(JSON.stringify({ level: 40, time, module: 'vtunnel', msg: 'could not add', err: { message: 'ECONNREFUSED' } }) + '\n'), '03:04:05 WARN  vtunnel: could not add (ECONNREFUSED)');
  assert.equal(formatLogLine(JSON.stringify({ level: 30, time, msg: 'plain' })), '03:04:05 INFO  plain');
  assert.equal(formatLogLine('not json\n'), 'not json');
});

test('logPane: lines go to the fallback until someone listens, then only to the listener; the last few are kept', () => {
  const fallback: string[] = [];
  const pane = logPane({ write: (t) => fallback.push(t) });
  const line = (msg: string): string => JSON.stringify({ level: 30, time: 0, msg }) + '\n';
  pane.destination.write(line('before'));
  assert.equal(fallback.length, 1);
  let seen: readonly string[] = [];
  const sub = pane.lines$.subscribe((lines) => (seen = lines));
  assert.deepEqual(seen, ['00:00:00 INFO  before']);
  for (let i = 0; i < paneLines + 2; i++) pane.destination.write(line(`n${String(i)}`));
  assert.equal(fallback.length, 1, 'nothing reached the fallback while the table listened');
  assert.equal(seen.length, paneLines);
  assert.equal(seen.at(-1), `00:00:00 INFO  n${String(paneLines + 1)}`);
  sub.unsubscribe();
  pane.destination.write(line('after'));
  assert.equal(fallback.length, 2);
});
