import { test } from 'node:test';
import { coalesceDeltas } from '../operators/coalesceDeltas.js';
import type { Forward, PortDelta } from '../src/model.js';
import { fwd, marbles, poison, poisoned } from './helpers.js';

const add = (...f: Forward[]): PortDelta => ({ added: f, removed: [] });
const del = (...f: Forward[]): PortDelta => ({ added: [], removed: f });
const [p1, p2, p3] = [fwd(1001), fwd(1002), fwd(1003)];

test('coalesceDeltas passes a lone change at once', marbles(({ cold, expectObservable }, scheduler) => {
  const deltas = cold('a 20ms b', { a: add(p1), b: del(p1) });
  expectObservable(deltas.pipe(coalesceDeltas(5, scheduler))).toBe('a 20ms b', { a: add(p1), b: del(p1) });
}));

test('coalesceDeltas folds a burst into the first change and one more write', marbles(({ cold, expectObservable }, scheduler) => {
  const deltas = cold('abc', { a: add(p1), b: add(p2), c: add(p3) });
  expectObservable(deltas.pipe(coalesceDeltas(5, scheduler))).toBe('a----x', { a: add(p1), x: add(p2, p3) });
}));

test('coalesceDeltas: an add and a remove of one key inside the window cancel out', marbles(({ cold, expectObservable }, scheduler) => {
  const deltas = cold('abcd', { a: add(p1), b: add(p2), c: del(p2), d: add(p3) });
  expectObservable(deltas.pipe(coalesceDeltas(5, scheduler))).toBe('a----x', { a: add(p1), x: add(p3) });
}));

test('coalesceDeltas: a remove then re-add inside the window leaves the published port alone', marbles(({ cold, expectObservable }, scheduler) => {
  const burst = cold('abc', { a: add(p1, p2), b: del(p1), c: add(p1) });
  expectObservable(burst.pipe(coalesceDeltas(5, scheduler))).toBe('a----', { a: add(p1, p2) });
}));

test('coalesceDeltas keeps windows open while changes keep coming, then goes quiet', marbles(({ cold, expectObservable }, scheduler) => {
  const deltas = cold('a--b--c------d', { a: add(p1), b: add(p2), c: add(p3), d: del(p1) });
  // a passes; b lands in a's window (closes at 5), c in the next (closes at 10), d in the one that
  // c's flush opened (closes at 15); after that a window finds nothing and the operator is idle again
  expectObservable(deltas.pipe(coalesceDeltas(5, scheduler))).toBe('a----b----c----d', {
    a: add(p1),
    b: add(p2),
    c: add(p3),
    d: del(p1),
  });
}));

test('coalesceDeltas flushes what is pending when its input completes', marbles(({ cold, expectObservable }, scheduler) => {
  const deltas = cold('ab|', { a: add(p1), b: add(p2) });
  expectObservable(deltas.pipe(coalesceDeltas(5, scheduler))).toBe('a-(b|)', { a: add(p1), b: add(p2) });
}));

test('coalesceDeltas passes an error at once, dropping nothing emitted before it', marbles(({ cold, expectObservable }, scheduler) => {
  const deltas = cold('a-#', { a: add(p1) });
  expectObservable(deltas.pipe(coalesceDeltas(5, scheduler))).toBe('a-#', { a: add(p1) });
}));

test('coalesceDeltas widens its window while a burst goes on, up to maxWindowMs, and starts small again after quiet', marbles(({ cold, expectObservable }, scheduler) => {
  const deltas = cold('a-b-c-d-e-f-g-------------h', { a: add(p1), b: add(p2), c: add(p3), d: del(p1), e: del(p2), f: add(p1), g: add(p2), h: del(p3) });
  // windows: 0–2 (b), 2–6 (c d), 6–10 (e f: p2 removed, p1 re-added), 10–14 (g), 14–18 finds nothing; h passes at once
  expectObservable(deltas.pipe(coalesceDeltas(2, scheduler, 4))).toBe('a-b---x---y---z-----------h', {
    a: add(p1),
    b: add(p2),
    x: { added: [p3], removed: [p1] },
    y: { added: [p1], removed: [p2] },
    z: add(p2),
    h: del(p3),
  });
}));

test('coalesceDeltas: the doc comment diagrams', marbles(({ cold, expectObservable }, scheduler) => {
  const [a, b, c, d, e, f, g] = [1, 2, 3, 4, 5, 6, 7].map((n) => add(fwd(2000 + n))) as [PortDelta, PortDelta, PortDelta, PortDelta, PortDelta, PortDelta, PortDelta];
  const values = { a, b, c, d, e, f, g };
  const folded = (...deltas: PortDelta[]): PortDelta => ({ added: deltas.flatMap((x) => x.added), removed: [] });
  expectObservable(cold('--a------b-c-d------|', values).pipe(coalesceDeltas(5, scheduler))).toBe('--a------b----x-----|', { ...values, x: folded(c, d) });
  expectObservable(cold('a-b-c-d-e-f-g----|', values).pipe(coalesceDeltas(2, scheduler, 4))).toBe('a-b---x---y---g--|', {
    ...values,
    x: folded(c, d),
    y: folded(e, f),
  });
}));

test('coalesceDeltas: a forward that cannot be keyed is an error notification, not an uncaught throw', marbles(({ cold, expectObservable }, scheduler) => {
  const deltas = cold('ab', { a: add(p1), b: add(poisoned(9)) });
  expectObservable(deltas.pipe(coalesceDeltas(5, scheduler))).toBe('a#', { a: add(p1) }, poison);
}));
