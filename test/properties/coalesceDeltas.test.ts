/**
 * Properties of `coalesceDeltas`, in virtual time (`VirtualTimeScheduler`, the clock behind
 * RxJS's TestScheduler): whatever the timing, the published set after the coalesced stream is
 * the one after the raw stream; every coalesced write shows a state the raw stream really went
 * through (a prefix of it, never going back); a change after a quiet period passes at once; and
 * there are never more writes than inputs.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { Subject, VirtualTimeScheduler } from 'rxjs';
import { coalesceDeltas } from '../../operators/coalesceDeltas.js';
import { refCountClaims } from '../../operators/mergeDeltas.js';
import { diff, emptyPortSet, isEmptyDelta, type Forward, type PortDelta, type PortKey, type PortSet } from '../../src/model.js';
import { applyChecked, failures, keysOf, runs, smallForward, smallPortSet } from './arbitraries.js';

interface Timed {
  readonly at: number;
  readonly delta: PortDelta;
}

/** Deltas as the merge emits them: the diffs between consecutive sets, at non-decreasing times. */
const timedDiffs: fc.Arbitrary<Timed[]> = fc
  .array(fc.tuple(smallPortSet, fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 3 }), fc.integer({ min: 0, max: 60 }))), { maxLength: 40 })
  .map((steps) => {
    const out: Timed[] = [];
    let before: PortSet = emptyPortSet;
    let at = 0;
    for (const [after, gap] of steps) {
      at += gap;
      const delta = diff(before, after);
      before = after;
      if (!isEmptyDelta(delta)) out.push({ at, delta });
    }
    return out;
  });

/** Deltas as the merge emits them from arbitrary claims (repeats, unclaimed removals, several sources). */
const timedMergeOutput: fc.Arbitrary<Timed[]> = fc
  .array(
    fc.record({
      gap: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 60 })),
      added: fc.array(smallForward, { maxLength: 5 }),
      removed: fc.array(smallForward, { maxLength: 5 }),
    }),
    { maxLength: 40 },
  )
  .map((steps) => {
    const out: Timed[] = [];
    const input = new Subject<PortDelta>();
    let at = 0;
    const sub = input.pipe(refCountClaims()).subscribe((delta) => out.push({ at, delta }));
    for (const { gap, added, removed } of steps) {
      at += gap;
      input.next({ added, removed });
    }
    sub.unsubscribe();
    return out;
  });

const windows = fc.record({ windowMs: fc.integer({ min: 1, max: 20 }), growth: fc.integer({ min: 0, max: 4 }) }).map(({ windowMs, growth }) => ({
  windowMs,
  maxWindowMs: windowMs * 2 ** growth,
}));

function check(timeline: readonly Timed[], windowMs: number, maxWindowMs: number): void {
  const scheduler = new VirtualTimeScheduler();
  const input = new Subject<PortDelta>();
  const { caught, rethrow } = failures();

  // the raw stream's states, one per input, in order
  const raw: PortKey[][] = [[]];
  const rawSet = new Map<PortKey, Forward>();
  for (const { delta } of timeline) {
    applyChecked(rawSet, delta, 'raw input');
    raw.push(keysOf(rawSet));
  }

  const coalesced = new Map<PortKey, Forward>();
  let writes = 0;
  let completed = false;
  let matched = 0; // the raw state the latest write showed
  let delivered = 0; // how many inputs were handed to the operator
  const subscription = input.pipe(coalesceDeltas(windowMs, scheduler, maxWindowMs)).subscribe({
    next: caught((delta: PortDelta) => {
      writes++;
      assert.ok(!isEmptyDelta(delta), 'an empty write');
      applyChecked(coalesced, delta, `write at ${String(scheduler.now())}`);
      // the state after this write is one the raw stream went through: not before the state the
      // previous write showed, not after what has been delivered so far
      const keys = keysOf(coalesced);
      let at = -1;
      for (let i = matched; i <= delivered; i++) {
        if (raw[i]!.length === keys.length && raw[i]!.every((k, j) => k === keys[j])) {
          at = i;
          break;
        }
      }
      assert.ok(at >= 0, `write at ${String(scheduler.now())} shows ${JSON.stringify(keys)}, no state of the raw stream since input ${String(matched)}`);
      matched = at;
    }),
    complete: () => (completed = true),
  });

  // A burst's last input is drained by the window open at its arrival (at most maxWindowMs), and
  // the window after that drains nothing: 2 × maxWindowMs after an input the coalescer is quiet.
  let lastInputAt = -Infinity;
  for (const { at, delta } of timeline) {
    scheduler.schedule(() => {
      const quiet = scheduler.now() - lastInputAt > 2 * maxWindowMs;
      const before = writes;
      delivered++;
      input.next(delta);
      if (quiet) assert.equal(writes, before + 1, `the input at ${String(at)}, after a quiet period, was held back`);
      lastInputAt = scheduler.now();
    }, at);
  }
  const end = (timeline.at(-1)?.at ?? 0) + maxWindowMs * 4;
  scheduler.schedule(() => {
    input.complete();
  }, end);
  scheduler.flush();
  subscription.unsubscribe();
  rethrow();

  assert.ok(completed, 'completion was not passed on');
  assert.deepEqual(keysOf(coalesced), raw.at(-1), 'the net effect differs from the raw stream');
  assert.ok(writes <= timeline.length, `${String(writes)} writes for ${String(timeline.length)} inputs`);
}

test('coalesceDeltas keeps the net effect: diffs of random sets at random times', () => {
  fc.assert(
    fc.property(timedDiffs, windows, (timeline, { windowMs, maxWindowMs }) => {
      check(timeline, windowMs, maxWindowMs);
    }),
    runs(900),
  );
});

test("coalesceDeltas keeps the net effect: the merge's output from random claims", () => {
  fc.assert(
    fc.property(timedMergeOutput, windows, (timeline, { windowMs, maxWindowMs }) => {
      check(timeline, windowMs, maxWindowMs);
    }),
    runs(900),
  );
});

test('coalesceDeltas: completing mid-window drains what is pending', () => {
  fc.assert(
    fc.property(timedDiffs, fc.integer({ min: 100, max: 1000 }), (timeline, windowMs) => {
      // every input arrives at time 0, inside the first window, and the source completes at once
      const scheduler = new VirtualTimeScheduler();
      const published = new Map<PortKey, Forward>();
      const expected = new Map<PortKey, Forward>();
      const input = new Subject<PortDelta>();
      let writes = 0;
      const { caught, rethrow } = failures();
      input.pipe(coalesceDeltas(windowMs, scheduler, windowMs * 8)).subscribe(
        caught((delta: PortDelta) => {
          writes++;
          applyChecked(published, delta, 'coalesced');
        }),
      );
      for (const { delta } of timeline) {
        applyChecked(expected, delta, 'raw');
        input.next(delta);
      }
      input.complete();
      rethrow();
      assert.deepEqual(keysOf(published), keysOf(expected));
      assert.ok(writes <= Math.min(2, timeline.length), `${String(writes)} writes`);
      assert.equal(scheduler.actions.length, 0, 'a window timer outlived completion');
    }),
    runs(600),
  );
});
