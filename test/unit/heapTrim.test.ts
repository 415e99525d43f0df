import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { trimHeapPeriodically } from '../../src/heapTrim.js';
import { nativeAddon } from '../../src/native/addon.js';

test('heapTrim: trims after the first delay, then at each interval, until stopped', async () => {
  let count = 0;
  const calls = (): number => count;
  const stop = trimHeapPeriodically({ firstMs: 20, everyMs: 20, addon: () => ({ trimHeap: () => (count++, true) }) });
  await sleep(10);
  assert.equal(calls(), 0, 'nothing before the first delay');
  await sleep(90);
  stop();
  const seen = calls();
  assert.ok(seen >= 2, `trimmed ${String(seen)} times`);
  await sleep(60);
  assert.equal(calls(), seen, 'no trim after stop');
});

test('heapTrim: without the addon, or with one that has no trimHeap, it stops trying', async () => {
  let asked = 0;
  trimHeapPeriodically({
    firstMs: 5,
    everyMs: 5,
    addon: () => {
      asked++;
      throw new Error('no addon');
    },
  });
  let askedOld = 0;
  trimHeapPeriodically({ firstMs: 5, everyMs: 5, addon: () => (askedOld++, {}) });
  await sleep(60);
  assert.equal(asked, 1);
  assert.equal(askedOld, 1);
});

test('heapTrim: the real addon has trimHeap, and it answers whether anything went back', (t) => {
  let addon;
  try {
    addon = nativeAddon();
  } catch (error) {
    t.skip(`no addon: ${String(error)}`);
    return;
  }
  assert.equal(typeof addon.trimHeap(), 'boolean');
});
