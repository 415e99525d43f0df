import assert from 'node:assert/strict';
import { test } from 'node:test';
import { merge, type Observable, Subject, tap } from 'rxjs';
import { trampoline } from '../operators/trampoline.js';
import { marbles } from './helpers.js';

/** `source` through `trampoline`, with `reply(value)` fed straight back in while `value` is delivered. */
function loop(source: Observable<string>, reply: (value: string) => string | undefined): { out: Observable<string>; order: string[] } {
  const feedback = new Subject<string>();
  const order: string[] = [];
  // the loop ends with its source, as the reconcile loops' do
  const out = merge(feedback, source.pipe(tap({ complete: () => { feedback.complete(); } }))).pipe(
    trampoline(),
    tap((value) => {
      order.push(`in ${value}`);
      const back = reply(value);
      if (back !== undefined) feedback.next(back);
      order.push(`out ${value}`);
    }),
  );
  return { out, order };
}

test('trampoline: the doc comment diagram: what a delivery feeds back waits for it to return, then goes first', marbles(({ cold, expectObservable, flush }) => {
  const { out, order } = loop(cold('a----b|'), (v) => (v === 'a' ? 'x' : undefined));
  expectObservable(out).toBe('(ax)-b|');
  flush();
  // x was delivered after a's delivery returned, never inside it
  assert.deepEqual(order, ['in a', 'out a', 'in x', 'out x', 'in b', 'out b']);
}));

test('trampoline: a chain of replies is delivered in order, each after the one before it returned', marbles(({ cold, expectObservable, flush }) => {
  const { out, order } = loop(cold('(a|)'), (v) => ({ a: 'b', b: 'c' })[v]);
  expectObservable(out).toBe('(abc|)');
  flush();
  assert.deepEqual(order, ['in a', 'out a', 'in b', 'out b', 'in c', 'out c']);
}));

test('trampoline: values that do not overlap pass at once, in the same frame', marbles(({ cold, expectObservable }) => {
  expectObservable(cold('-a-b-c|').pipe(trampoline())).toBe('-a-b-c|');
}));

test('trampoline: an end that comes during a delivery waits behind what came before it', () => {
  const input = new Subject<string>();
  const seen: string[] = [];
  input.pipe(trampoline()).subscribe({
    next: (v) => {
      seen.push(`in ${v}`);
      if (v === 'a') {
        input.next('x');
        input.complete();
      }
      seen.push(`out ${v}`);
    },
    complete: () => seen.push('|'),
  });
  input.next('a');
  assert.deepEqual(seen, ['in a', 'out a', 'in x', 'out x', '|']);
});

test('trampoline: an error passes like a value, in its turn', marbles(({ cold, expectObservable }) => {
  expectObservable(cold('a-#').pipe(trampoline())).toBe('a-#');
}));

test('trampoline: nothing is delivered once the subscriber has unsubscribed', () => {
  const source = new Subject<string>();
  const seen: string[] = [];
  const feedback = new Subject<string>();
  const subscription = merge(feedback, source)
    .pipe(trampoline())
    .subscribe((v) => {
      seen.push(v);
      if (v === 'a') {
        feedback.next('x');
        subscription.unsubscribe();
      }
    });
  source.next('a');
  assert.deepEqual(seen, ['a']);
});
