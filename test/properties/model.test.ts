/**
 * Properties of the model's diff: applying `diff(a, b)` to `a` gives `b`, and `diff` is the
 * inverse of `applyDelta` (a delta that adds only new keys and removes only present ones is
 * exactly what the diff of before and after gives back).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { applyDelta, diff, isEmptyDelta, portKey, type Forward, type PortSet } from '../../src/model.js';
import { keysOf, runs, smallForward, smallPortSet } from './arbitraries.js';

test('applying diff(a, b) to a gives b', () => {
  fc.assert(
    fc.property(smallPortSet, smallPortSet, (a, b) => {
      const delta = diff(a, b);
      const result = applyDelta(a, delta);
      assert.deepEqual(keysOf(result), keysOf(b));
      // what the diff adds is b's forward for that key, not a copy or another owner's
      for (const f of delta.added) assert.equal(result.get(portKey(f)), b.get(portKey(f)));
      // a key both sets hold is left alone: the diff neither adds nor removes it
      for (const f of [...delta.added, ...delta.removed]) assert.ok(!(a.has(portKey(f)) && b.has(portKey(f))), `${portKey(f)} is in both`);
    }),
    runs(1200),
  );
});

test('diff of a set with itself (or an equal copy) is empty; diff(b, a) is diff(a, b) reversed', () => {
  fc.assert(
    fc.property(smallPortSet, smallPortSet, (a, b) => {
      assert.ok(isEmptyDelta(diff(a, a)));
      assert.ok(isEmptyDelta(diff(a, new Map(a))));
      const forward = diff(a, b);
      const backward = diff(b, a);
      assert.deepEqual(keysOf(forward.added.map(portKey)), keysOf(backward.removed.map(portKey)));
      assert.deepEqual(keysOf(forward.removed.map(portKey)), keysOf(backward.added.map(portKey)));
      // sizes add up, and nothing is listed twice
      assert.equal(b.size, a.size + forward.added.length - forward.removed.length);
      assert.equal(new Set(forward.added.map(portKey)).size, forward.added.length);
      assert.equal(new Set(forward.removed.map(portKey)).size, forward.removed.length);
    }),
    runs(900),
  );
});

/** A set and a delta that fits it: removes some of its keys, adds keys it does not hold. */
const setAndDelta = smallPortSet.chain((a) =>
  fc
    .record({
      removed: fc.subarray([...a.values()]),
      added: fc.uniqueArray(smallForward.filter((f) => !a.has(portKey(f))), { selector: portKey, maxLength: 20 }),
    })
    .map((delta) => ({ a, delta })),
);

test('diff is the inverse of applyDelta: diff(a, applyDelta(a, d)) gives d back', () => {
  fc.assert(
    fc.property(setAndDelta, ({ a, delta }) => {
      const b = applyDelta(a, delta);
      const back = diff(a, b);
      assert.deepEqual(keysOf(back.added.map(portKey)), keysOf(delta.added.map(portKey)));
      assert.deepEqual(keysOf(back.removed.map(portKey)), keysOf(delta.removed.map(portKey)));
      assert.deepEqual(new Set(back.added), new Set(delta.added));
      assert.deepEqual(new Set(back.removed), new Set(delta.removed));
      // and applying the reverse undoes it
      assert.deepEqual(keysOf(applyDelta(b, { added: delta.removed, removed: delta.added })), keysOf(a));
    }),
    runs(900),
  );
});

test('portKey tells forwards apart exactly by protocol, host IP and host port', () => {
  const triple = fc.record({
    protocol: fc.constantFrom('tcp' as const, 'udp' as const),
    hostIp: fc.oneof(fc.ipV4(), fc.ipV6()),
    hostPort: fc.integer({ min: 1, max: 65535 }),
  });
  fc.assert(
    fc.property(triple, triple, (x, y) => {
      const same = x.protocol === y.protocol && x.hostIp === y.hostIp && x.hostPort === y.hostPort;
      assert.equal(portKey(x) === portKey(y), same, `${portKey(x)} vs ${portKey(y)}`);
    }),
    runs(900),
  );
  // owner, source and container port are not part of the identity
  const f: Forward = { protocol: 'tcp', hostIp: '::', hostPort: 80, source: 'docker', owner: 'a' };
  const g: Forward = { ...f, source: 'iptables', owner: 'b', containerPort: 8080 };
  assert.equal(portKey(f), portKey(g));
  const set: PortSet = new Map([[portKey(f), f]]);
  assert.ok(isEmptyDelta(diff(set, new Map([[portKey(g), g]]))));
});
