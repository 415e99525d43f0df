import assert from 'node:assert/strict';
import { test } from 'node:test';
import { coalesceTriggers } from '../operators/coalesceTriggers.js';
import { marbles } from './helpers.js';

test('coalesceTriggers passes a lone trigger at once', marbles(({ cold, expectObservable }, scheduler) => {
  expectObservable(cold('a 20ms b').pipe(coalesceTriggers(5, scheduler))).toBe('a 20ms b');
}));

test('coalesceTriggers folds what comes inside the window into the latest, emitted when it closes', marbles(({ cold, expectObservable }, scheduler) => {
  // the doc comment's first diagram
  expectObservable(cold('--a------bcd------|').pipe(coalesceTriggers(5, scheduler))).toBe('--a------b----d---|');
}));

test('coalesceTriggers widens its window while a burst goes on, up to the maximum, then starts small again', marbles(({ cold, expectObservable }, scheduler) => {
  // the doc comment's second diagram: windows 0–2 (b), 2–6 (c d → d), 6–10 (e f → f), 10–14 (g), 14–18 empty
  expectObservable(cold('a-b-c-d-e-f-g-------h|').pipe(coalesceTriggers(2, scheduler, 4))).toBe('a-b---d---f---g-----h|');
}));

test('coalesceTriggers turns a thousand triggers in one instant into two emissions', marbles(({ cold, expectObservable }, scheduler) => {
  const burst = cold(`-(${'c'.repeat(1000)})`);
  expectObservable(burst.pipe(coalesceTriggers(5, scheduler))).toBe('-c----c');
}));

test('coalesceTriggers keeps a long burst to a few emissions', marbles(({ cold, flush }, scheduler) => {
  // one trigger every frame for 1000 frames, window 2 growing to 64
  const at: number[] = [];
  cold('c'.repeat(1000)).pipe(coalesceTriggers(2, scheduler, 64)).subscribe(() => at.push(scheduler.now()));
  flush();
  // windows end at 2, 6, 14, 30, 62, 126, then every 64 frames until the one after the last trigger (999)
  const expected = [0, 2, 6, 14, 30, 62, 126];
  while (expected.at(-1)! < 999) expected.push(expected.at(-1)! + 64);
  assert.deepEqual(at, expected);
  assert.equal(at.length, 21);
}));

test('coalesceTriggers flushes the pending trigger when its input completes, and passes errors at once', marbles(({ cold, expectObservable }, scheduler) => {
  expectObservable(cold('ab|').pipe(coalesceTriggers(5, scheduler))).toBe('a-(b|)');
  expectObservable(cold('ab#').pipe(coalesceTriggers(5, scheduler))).toBe('a-#');
}));

test('coalesceTriggers: unsubscribing cancels the open window', marbles(({ cold, expectObservable, expectSubscriptions }, scheduler) => {
  const triggers = cold('ab');
  expectObservable(triggers.pipe(coalesceTriggers(5, scheduler)), '^--!').toBe('a');
  expectSubscriptions(triggers.subscriptions).toBe('^--!');
}));

test('coalesceTriggers: an error of its input is passed on at once', marbles(({ cold, expectObservable }, scheduler) => {
  // its fold only keeps the latest value and cannot throw; windowedCoalesce's tests cover a fold that does
  expectObservable(cold('ab#').pipe(coalesceTriggers(5, scheduler))).toBe('a-#');
}));
