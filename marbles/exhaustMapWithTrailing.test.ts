import assert from 'node:assert/strict';
import { test } from 'node:test';
import { of, tap, type Observable } from 'rxjs';
import { exhaustMapWithTrailing } from '../operators/exhaustMapWithTrailing.js';
import { marbles, type RunHelpers } from './helpers.js';

/** A run that takes 3 frames and then emits the value in upper case and completes. */
const slowUpper = (cold: RunHelpers['cold']) => (v: string): Observable<string> => cold('---(r|)', { r: v.toUpperCase() });

test('exhaustMapWithTrailing runs at once when idle, and folds what comes during a run into one more run for the latest', marbles(({ cold, expectObservable }) => {
  // a runs 1–4; b and c arrive meanwhile → one run for c, 4–7; d runs alone; the output completes
  // with the source, since no run is going or owed then
  const values = cold('-a-bc-----------d---|');
  expectObservable(values.pipe(exhaustMapWithTrailing(slowUpper(cold)))).toBe('----A--C-----------D|');
}));

test('exhaustMapWithTrailing never runs two at once and never loses the last value', marbles(({ cold, flush }, scheduler) => {
  let running = 0;
  let most = 0;
  const ran: string[] = [];
  const project = (v: string): Observable<string> => {
    ran.push(v);
    return cold('--(r|)', { r: v }).pipe(
      tap({
        subscribe: () => {
          running++;
          most = Math.max(most, running);
        },
        finalize: () => {
          running--;
        },
      }),
    );
  };
  const out: string[] = [];
  cold('abcdefg|').pipe(exhaustMapWithTrailing(project)).subscribe((v) => out.push(`${v}@${String(scheduler.now())}`));
  flush();
  assert.equal(most, 1);
  assert.deepEqual(ran, ['a', 'c', 'e', 'g']);
  assert.deepEqual(out, ['a@2', 'c@4', 'e@6', 'g@8']);
}));

test('exhaustMapWithTrailing waits for the running and the owed run before completing', marbles(({ cold, expectObservable }) => {
  expectObservable(cold('ab|').pipe(exhaustMapWithTrailing(slowUpper(cold)))).toBe('---A--(B|)');
}));

test('exhaustMapWithTrailing handles runs that complete at once', marbles(({ cold, expectObservable }) => {
  expectObservable(cold('a---b---(c|)').pipe(exhaustMapWithTrailing((v) => of(v, v)))).toBe('(aa)(bb)(cc|)');
}));

test('exhaustMapWithTrailing passes an error of a run or of the source at once, and stops the run', marbles(({ cold, expectObservable, expectSubscriptions }) => {
  expectObservable(cold('a').pipe(exhaustMapWithTrailing(() => cold('-#')))).toBe('-#');
  const run = cold('-----r');
  expectObservable(cold('a-#').pipe(exhaustMapWithTrailing(() => run))).toBe('--#');
  expectSubscriptions(run.subscriptions).toBe('^-!');
}));

test('exhaustMapWithTrailing: the doc comment diagram', marbles(({ cold, expectObservable }) => {
  const name: Record<string, string> = { a: 'x', b: 'b', c: 'y', d: 'z' };
  const values = cold('-a-bc-----------d---|');
  expectObservable(values.pipe(exhaustMapWithTrailing((v) => cold('---(r|)', { r: name[v] })))).toBe('----x--y-----------z|');
}));

test('exhaustMapWithTrailing: a throw in project is an error notification, as in exhaustMap', marbles(({ cold, expectObservable, expectSubscriptions }) => {
  const boom = new Error('boom');
  const thrower = (): Observable<string> => {
    throw boom;
  };
  expectObservable(of(1).pipe(exhaustMapWithTrailing(thrower))).toBe('#', undefined, boom);
  // the throw of a later, owed run ends the source's subscription too
  const values = cold('ab---c');
  let runs = 0;
  const project = (v: string): Observable<string> => {
    if (++runs === 2) throw boom;
    return cold('--(r|)', { r: v });
  };
  expectObservable(values.pipe(exhaustMapWithTrailing(project))).toBe('--(a#)', { a: 'a' }, boom);
  expectSubscriptions(values.subscriptions).toBe('^-!');
}));
