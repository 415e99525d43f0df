import assert from 'node:assert/strict';
import { test } from 'node:test';
import { defer, take } from 'rxjs';
import { backoffDelay, defaultBackoff, reconnectWithBackoff, retryLogLevel } from '../operators/reconnectWithBackoff.js';
import { marbles } from './helpers.js';

const noJitter = { initialMs: 10, maxMs: 40, factor: 2, jitter: 0, stableMs: 100 };

test('backoffDelay grows exponentially up to its cap', () => {
  assert.deepEqual([1, 2, 3, 4, 5].map((n) => backoffDelay(n, noJitter)), [10, 20, 40, 40, 40]);
});

test('the default ceiling keeps every wait, jitter included, well inside the 5 s recovery target', () => {
  const longest = Math.max(...Array.from({ length: 40 }, (_, i) => backoffDelay(i + 1))) * (1 + defaultBackoff.jitter);
  assert.equal(longest, 2_400);
});

test('retryLogLevel warns for the first retries of an outage, then once in thirty', () => {
  const warned = Array.from({ length: 90 }, (_, i) => i + 1).filter((n) => retryLogLevel(n) === 'warn');
  assert.deepEqual(warned, [1, 2, 3, 30, 60, 90]);
});

test('reconnectWithBackoff waits longer after each quick failure, up to maxMs', marbles(({ cold, expectObservable, expectSubscriptions }, scheduler) => {
  const source = cold('a#');
  const out = source.pipe(reconnectWithBackoff({ ...noJitter, scheduler }));
  // fail at 1, wait 10 → 11; fail at 12, wait 20 → 32; fail at 33, wait 40 → 73; fail at 74, wait 40 → 114
  expectObservable(out, '^ 120ms !').toBe('a 10ms a 20ms a 40ms a 40ms a', { a: 'a' });
  expectSubscriptions(source.subscriptions).toBe([
    '^!',
    '11ms ^!',
    '32ms ^!',
    '73ms ^!',
    '114ms ^!',
  ]);
}));

test('reconnectWithBackoff resets the count only after a stable period, not on the first value', marbles(({ cold, expectObservable, expectSubscriptions }, scheduler) => {
  // each subscription emits at once (a snapshot) and then fails: values alone must not reset the back-off
  const quick = cold('a-#');
  expectObservable(quick.pipe(reconnectWithBackoff({ ...noJitter, scheduler })), '^ 40ms !').toBe('a 11ms a 21ms a', { a: 'a' });
  expectSubscriptions(quick.subscriptions).toBe(['^-!', '12ms ^-!', '34ms ^-!']);
}));

test('reconnectWithBackoff starts from initialMs again after a subscription outlived stableMs', marbles(({ cold, expectObservable }, scheduler) => {
  // attempt 1 fails fast; attempt 2 stays up 150 frames (> stableMs) before failing; attempt 3 fails fast
  const attempts = [cold('a#'), cold('a 149ms #'), cold('a#')];
  let n = 0;
  const flaky = defer(() => attempts[Math.min(n++, attempts.length - 1)]!);
  // 0: a, fail at 1, wait 10 → 11: a, fails at 161 after a stable run, so wait 10 again (not 20) → 171: a
  expectObservable(flaky.pipe(reconnectWithBackoff({ ...noJitter, scheduler })), '^ 175ms !').toBe('a 10ms a 159ms a', { a: 'a' });
}));

test('reconnectWithBackoff scales each delay by its jitter', marbles(({ cold, expectObservable }, scheduler) => {
  const randoms = [1, 0, 0.5];
  let i = 0;
  const delays: number[] = [];
  const out = cold('#').pipe(
    reconnectWithBackoff({
      ...noJitter,
      jitter: 0.5,
      random: () => randoms[i++] ?? 0.5,
      onRetry: (_error, _attempt, delayMs) => delays.push(delayMs),
      scheduler,
    }),
  );
  // delays: 10·1.5 = 15 → 15; 20·0.5 = 10 → 25; 40·1 = 40 → 65
  expectObservable(out, '^ 70ms !').toBe('');
  scheduler.flush();
  assert.deepEqual(delays.slice(0, 3), [15, 10, 40]);
}));

test('reconnectWithBackoff: the doc comment diagram', marbles(({ cold, expectObservable }, scheduler) => {
  const source = cold('a-#');
  expectObservable(source.pipe(reconnectWithBackoff({ initialMs: 2, factor: 2, maxMs: 8, jitter: 0, scheduler }), take(5))).toBe('a---a-----a---------a---------(a|)');
}));

test('reconnectWithBackoff: a throw in onRetry is an error notification', marbles(({ cold, expectObservable }, scheduler) => {
  const boom = new Error('boom');
  const onRetry = (): void => {
    throw boom;
  };
  expectObservable(cold('a-#').pipe(reconnectWithBackoff({ ...noJitter, scheduler, onRetry }))).toBe('a-#', { a: 'a' }, boom);
}));
