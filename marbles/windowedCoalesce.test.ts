import { test } from 'node:test';
import { windowedCoalesce, type WindowFold } from '../operators/windowedCoalesce.js';
import { marbles } from './helpers.js';

/** Folds by summing: the window emits the total of what it swallowed. */
const sum = (): WindowFold<number> => {
  let total: number | undefined;
  return {
    fold: (n) => (total = (total ?? 0) + n),
    drain: () => {
      const drained = total === undefined ? undefined : { value: total };
      total = undefined;
      return drained;
    },
  };
};

test('windowedCoalesce passes the first value, folds the rest per window, widening up to the max', marbles(({ cold, expectObservable }, scheduler) => {
  const values = cold('a-b-c-d-e-f-g-------h|', { a: 1, b: 2, c: 3, d: 4, e: 5, f: 6, g: 7, h: 8 });
  expectObservable(values.pipe(windowedCoalesce(sum, 2, scheduler, 4))).toBe('a-b---x---y---g-----h|', {
    a: 1, b: 2, x: 7, y: 11, g: 7, h: 8,
  });
}));

test('windowedCoalesce: a pending value that is itself undefined still counts as pending', marbles(({ cold, expectObservable }, scheduler) => {
  const latest = (): WindowFold<undefined> => {
    let pending = false;
    return {
      fold: () => (pending = true),
      drain: () => (pending ? ((pending = false), { value: undefined }) : undefined),
    };
  };
  const triggers = cold('ab', { a: undefined, b: undefined });
  expectObservable(triggers.pipe(windowedCoalesce(latest, 3, scheduler))).toBe('a--b', { a: undefined, b: undefined });
}));

test('windowedCoalesce drains at completion and passes errors', marbles(({ cold, expectObservable }, scheduler) => {
  expectObservable(cold('ab|', { a: 1, b: 2 }).pipe(windowedCoalesce(sum, 5, scheduler))).toBe('a-(b|)', { a: 1, b: 2 });
  expectObservable(cold('a#', { a: 1 }).pipe(windowedCoalesce(sum, 5, scheduler))).toBe('a#', { a: 1 });
}));

test('windowedCoalesce: the doc comment diagram', marbles(({ cold, expectObservable }, scheduler) => {
  const values = cold('a-b-c-d-e-f-g----|', { a: 1, b: 2, c: 3, d: 4, e: 5, f: 6, g: 7 });
  expectObservable(values.pipe(windowedCoalesce(sum, 2, scheduler, 4))).toBe('a-b---x---y---g--|', { a: 1, b: 2, x: 7, y: 11, g: 7 });
}));

test('windowedCoalesce: a throw in fold or drain is an error notification, and the source is let go', marbles(({ cold, expectObservable, expectSubscriptions }, scheduler) => {
  const boom = new Error('boom');
  const throwing = (where: 'fold' | 'drain'): (() => WindowFold<number>) => () => {
    const inner = sum();
    return {
      fold: (n) => {
        if (where === 'fold') fail(boom);
        inner.fold(n);
      },
      drain: () => (where === 'drain' ? fail(boom) : inner.drain()),
    };
  };
  const folded = cold('ab---', { a: 1, b: 2 });
  expectObservable(folded.pipe(windowedCoalesce(throwing('fold'), 3, scheduler))).toBe('a#', { a: 1 }, boom);
  expectSubscriptions(folded.subscriptions).toBe('^!');
  // the drain runs in the scheduler's action, when the window closes
  const drained = cold('ab---', { a: 1, b: 2 });
  expectObservable(drained.pipe(windowedCoalesce(throwing('drain'), 3, scheduler))).toBe('a--#', { a: 1 }, boom);
  expectSubscriptions(drained.subscriptions).toBe('^--!');
  // and at completion
  expectObservable(cold('a|', { a: 1 }).pipe(windowedCoalesce(throwing('drain'), 3, scheduler))).toBe('a#', { a: 1 }, boom);
}));

function fail(error: Error): never {
  throw error;
}
