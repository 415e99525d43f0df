/**
 * `toPortDeltas()` is `toPortSet()` then `diffPortSets()` fused: for any sequence of source
 * events, both emit the same number of deltas, and each pair holds the same forwards (the very
 * same objects, so the same owner and container port), in any order.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { Subject } from 'rxjs';
import { diffPortSets } from '../../operators/diffPortSets.js';
import { toPortDeltas } from '../../operators/toPortDeltas.js';
import { toPortSet } from '../../operators/toPortSet.js';
import { portKey, remove, snapshot, upsert, type Forward, type PortDelta, type SourceEvent } from '../../src/model.js';
import { runs } from './arbitraries.js';

const owners = ['c1', 'c2', 'c3', 'c4'] as const;

/** Forwards of one owner from a universe of 6 keys, with a container port that varies, so claims collide and change value. */
const claim = (owner: string): fc.Arbitrary<Forward> =>
  fc.record({
    protocol: fc.constantFrom('tcp' as const, 'udp' as const),
    hostIp: fc.constantFrom('0.0.0.0', '::', '127.0.0.1'),
    hostPort: fc.constant(8080),
    containerPort: fc.integer({ min: 1, max: 3 }),
    source: fc.constant('docker'),
    owner: fc.constant(owner),
  });

const forwardsOf = (owner: string): fc.Arbitrary<Forward[]> => fc.array(claim(owner), { maxLength: 4 });

const event: fc.Arbitrary<SourceEvent> = fc.oneof(
  { weight: 5, arbitrary: fc.constantFrom(...owners).chain((o) => forwardsOf(o).map((fs) => upsert(o, fs))) },
  { weight: 3, arbitrary: fc.constantFrom(...owners, 'never-seen').map((o) => remove(o)) },
  {
    weight: 1,
    arbitrary: fc
      .shuffledSubarray([...owners])
      .chain((os) => fc.tuple(...os.map((o) => forwardsOf(o).map((fs) => [o, fs] as const))))
      .map((entries) => snapshot(entries)),
  },
);

function run(events: readonly SourceEvent[], fused: boolean): PortDelta[] {
  const input = new Subject<SourceEvent>();
  const out: PortDelta[] = [];
  (fused ? input.pipe(toPortDeltas()) : input.pipe(toPortSet(), diffPortSets())).subscribe((d) => out.push(d));
  for (const e of events) input.next(e);
  return out;
}

const byKey = (fs: readonly Forward[]): Forward[] => [...fs].sort((a, b) => portKey(a).localeCompare(portKey(b)));

test('toPortDeltas emits exactly what toPortSet → diffPortSets emits, for any sequence of events', () => {
  fc.assert(
    fc.property(fc.array(event, { maxLength: 30 }), (events) => {
      const fused = run(events, true);
      const composed = run(events, false);
      assert.equal(fused.length, composed.length, 'as many deltas');
      fused.forEach((d, i) => {
        // the same objects: the published claim is the same owner's, with the same container port
        assert.deepEqual(byKey(d.added), byKey(composed[i]!.added), `delta ${String(i)}: added`);
        assert.deepEqual(byKey(d.removed), byKey(composed[i]!.removed), `delta ${String(i)}: removed`);
        for (const [j, f] of byKey(d.added).entries()) assert.equal(f, byKey(composed[i]!.added)[j]);
        for (const [j, f] of byKey(d.removed).entries()) assert.equal(f, byKey(composed[i]!.removed)[j]);
      });
    }),
    runs(2000),
  );
});
