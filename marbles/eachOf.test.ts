import assert from 'node:assert/strict';
import { test } from 'node:test';
import { takeWhile, tap } from 'rxjs';
import { eachOf } from '../src/reconcileLoop.js';
import { marbles } from './helpers.js';

test('eachOf: the doc comment diagram: each array’s items at once, in order; an empty one emits nothing', marbles(({ cold, expectObservable }) => {
  const steps = cold('-a--b-c|', { a: [1, 2], b: [], c: [3] });
  expectObservable(steps.pipe(eachOf((items: number[]) => items))).toBe('-(xy)-z|', { x: 1, y: 2, z: 3 });
}));

test('eachOf: a throw in the projection is the error notification, and nothing after it is read', marbles(({ cold, expectObservable, flush }) => {
  let asked = 0;
  const steps = cold('-a-b-c|', { a: 1, b: 2, c: 3 });
  const out = steps.pipe(
    eachOf((n: number) => {
      asked++;
      if (n === 2) throw new Error('bad step');
      return [n];
    }),
  );
  expectObservable(out).toBe('-x-#', { x: 1 }, new Error('bad step'));
  flush();
  assert.equal(asked, 2);
}));

test('eachOf: a downstream that stops partway through an array gets nothing more', marbles(({ cold, expectObservable, flush }) => {
  const seen: number[] = [];
  const steps = cold('-a|', { a: [1, 2, 3] });
  // takeWhile as the loops end (untilDone): it completes at 2, and the 3 is never delivered
  const out = steps.pipe(
    eachOf((items: number[]) => items),
    tap((n) => seen.push(n)),
    takeWhile((n) => n < 2),
  );
  expectObservable(out).toBe('-(x|)', { x: 1 });
  flush();
  assert.deepEqual(seen, [1, 2]);
}));
