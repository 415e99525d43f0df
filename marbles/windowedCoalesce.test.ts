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
