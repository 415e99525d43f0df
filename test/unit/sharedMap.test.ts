import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { emptyShared, sharedEntries, sharedGet, sharedHas, sharedUpdate, type SharedMap } from '../../src/sharedMap.js';
import { runs } from '../properties/arbitraries.js';

test('property: a SharedMap holds what a Map given the same writes holds, and never changes a map it was given', () => {
  const write = fc.array(fc.tuple(fc.integer({ min: 0, max: 60 }), fc.option(fc.integer(), { nil: undefined })), { maxLength: 30 });
  fc.assert(
    fc.property(fc.array(write, { maxLength: 40 }), (batches) => {
      const model = new Map<number, number>();
      let shared: SharedMap<number, number> = emptyShared();
      for (const batch of batches) {
        const before = shared;
        const beforeEntries = [...sharedEntries(before)];
        shared = sharedUpdate(shared, batch);
        assert.deepEqual([...sharedEntries(before)], beforeEntries, 'the old map is unchanged');
        for (const [k, v] of batch) {
          if (v === undefined) model.delete(k);
          else model.set(k, v);
        }
        assert.equal(shared.size, model.size);
        assert.deepEqual(new Map(sharedEntries(shared)), model);
        for (let k = 0; k <= 60; k++) {
          assert.equal(sharedGet(shared, k), model.get(k));
          assert.equal(sharedHas(shared, k), model.has(k));
        }
      }
    }),
    runs(200),
  );
});

test('SharedMap: changes are compacted into the base once there are more than about √size', () => {
  let shared: SharedMap<number, number> = emptyShared();
  for (let i = 0; i < 5000; i++) shared = sharedUpdate(shared, [[i, i]]);
  assert.equal(shared.size, 5000);
  assert.ok(shared.changes.size <= Math.ceil(Math.sqrt(2 * 5000)), `changes ${String(shared.changes.size)}`);
});
