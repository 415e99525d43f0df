/**
 * Properties of the merge (`refCountClaims` / `mergeDeltas`), checked against a model of claims:
 * a claim is (source, port key), so repeated adds and removals of unclaimed ports change nothing.
 *
 * - After every input delta the published set (the merge's output applied in order) is exactly
 *   the set of keys with at least one live claim.
 * - The output never adds a key that is published, never removes one that is not (so a count
 *   never goes negative), and never emits an empty delta.
 * - Releasing every claim, in any order and any batching, leaves the empty set.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { Subject, type Observable } from 'rxjs';
import { mergeDeltas, refCountClaims } from '../../operators/mergeDeltas.js';
import { diffPortSets } from '../../operators/diffPortSets.js';
import { toPortSet } from '../../operators/toPortSet.js';
import { applyDelta, emptyPortSet, portKey, remove, snapshot, upsert, type Forward, type PortDelta, type PortKey, type PortSet, type SourceEvent } from '../../src/model.js';
import { applyChecked, failures, keysOf, runs, smallForward, sources, tinyForward } from './arbitraries.js';

/** Claims as the model keeps them: key -> the sources that claim it. */
type Claims = Map<PortKey, Set<string>>;

function claimModel(claims: Claims, delta: PortDelta): void {
  // the merge handles a delta's removals before its additions
  for (const f of delta.removed) {
    const key = portKey(f);
    claims.get(key)?.delete(f.source);
    if (claims.get(key)?.size === 0) claims.delete(key);
  }
  for (const f of delta.added) {
    const key = portKey(f);
    const set = claims.get(key) ?? new Set<string>();
    set.add(f.source);
    claims.set(key, set);
  }
}

/** Feeds `deltas` through `operator` synchronously and checks the published set after each one. */
function runMerge(deltas: readonly PortDelta[]): { published: Map<PortKey, Forward>; claims: Claims } {
  const input = new Subject<PortDelta>();
  const published = new Map<PortKey, Forward>();
  // the same output applied with the model's own applyDelta, as sinks and tests do
  let viaModel: PortSet = emptyPortSet;
  const claims: Claims = new Map();
  let step = 0;
  const { caught, rethrow } = failures();
  const subscription = input.pipe(refCountClaims()).subscribe(
    caught((out: PortDelta) => {
      assert.ok(out.added.length + out.removed.length > 0, `step ${String(step)}: an empty delta`);
      applyChecked(published, out, `step ${String(step)}`);
      viaModel = applyDelta(viaModel, out);
    }),
  );
  for (const delta of deltas) {
    input.next(delta);
    rethrow();
    claimModel(claims, delta);
    assert.deepEqual(keysOf(published), keysOf(claims.keys()), `step ${String(step)}: published set vs live claims`);
    assert.deepEqual(keysOf(viaModel), keysOf(claims.keys()), `step ${String(step)}: applyDelta of the output vs live claims`);
    step++;
  }
  subscription.unsubscribe();
  return { published, claims };
}

/** Deltas from several sources in any interleaving, with repeats and removals of unclaimed ports. */
const anyDelta: fc.Arbitrary<PortDelta> = fc.oneof(fc.constant(smallForward), fc.constant(tinyForward)).chain((forward) =>
  fc.record({
    added: fc.array(forward, { maxLength: 6 }),
    removed: fc.array(forward, { maxLength: 6 }),
  }),
);

test('merge: the published set is always the set of keys with a live claim; nothing is added twice or removed unpublished', () => {
  fc.assert(
    fc.property(fc.array(anyDelta, { maxLength: 40 }), (deltas) => {
      runMerge(deltas);
    }),
    runs(900),
  );
});

test('merge: adding claims and then removing all of them, in any order and batching, gives the empty set', () => {
  const scenario = fc
    .array(smallForward, { minLength: 1, maxLength: 40 })
    .chain((claims) =>
      fc.record({
        adds: fc.shuffledSubarray(claims, { minLength: claims.length, maxLength: claims.length }),
        removes: fc.shuffledSubarray(claims, { minLength: claims.length, maxLength: claims.length }),
        addBatch: fc.integer({ min: 1, max: 5 }),
        removeBatch: fc.integer({ min: 1, max: 5 }),
      }),
    );
  fc.assert(
    fc.property(scenario, ({ adds, removes, addBatch, removeBatch }) => {
      const batches = (fs: readonly Forward[], size: number, kind: 'added' | 'removed'): PortDelta[] => {
        const out: PortDelta[] = [];
        for (let i = 0; i < fs.length; i += size) {
          const part = fs.slice(i, i + size);
          out.push(kind === 'added' ? { added: part, removed: [] } : { added: [], removed: part });
        }
        return out;
      };
      const { published, claims } = runMerge([...batches(adds, addBatch, 'added'), ...batches(removes, removeBatch, 'removed')]);
      assert.equal(published.size, 0, `left published: ${keysOf(published).join(', ')}`);
      assert.equal(claims.size, 0);
    }),
    runs(900),
  );
});

test('mergeDeltas over separate source streams: published = the union of what each source claims', () => {
  // each source's deltas come from its own raw events through toPortSet and diffPortSets, as in
  // the agent; the events are upserts and removals of owners, and snapshots (a reconnect)
  const owner = fc.constantFrom('o1', 'o2', 'o3', 'o4');
  const event = (source: string): fc.Arbitrary<SourceEvent> => {
    const forwards = fc.array(smallForward.map((f) => ({ ...f, source })), { maxLength: 4 });
    return fc.oneof(
      { weight: 4, arbitrary: fc.tuple(owner, forwards).map(([o, fs]) => upsert(o, fs.map((f) => ({ ...f, owner: o })))) },
      { weight: 3, arbitrary: owner.map((o) => remove(o)) },
      { weight: 1, arbitrary: fc.array(fc.tuple(owner, forwards), { maxLength: 3 }).map((owners) => snapshot(owners)) },
    );
  };
  const step = fc.oneof(...sources.map((source) => event(source).map((e) => ({ source, event: e }))));
  fc.assert(
    fc.property(fc.array(step, { maxLength: 60 }), (steps) => {
      const inputs = new Map(sources.map((s) => [s, new Subject<SourceEvent>()] as const));
      const current = new Map<string, Map<string, readonly Forward[]>>(sources.map((s) => [s, new Map()]));
      const streams: Observable<PortDelta>[] = [...inputs.values()].map((events$) => events$.pipe(toPortSet(), diffPortSets()));
      const published = new Map<PortKey, Forward>();
      const { caught, rethrow } = failures();
      const subscription = mergeDeltas(...streams).subscribe(
        caught((delta: PortDelta) => {
          applyChecked(published, delta, 'mergeDeltas');
        }),
      );
      for (const { source, event } of steps) {
        inputs.get(source)!.next(event);
        rethrow();
        const owners = current.get(source)!;
        if (event.type === 'snapshot') current.set(source, new Map(event.owners));
        else if (event.type === 'upsert') owners.set(event.owner, event.forwards);
        else owners.delete(event.owner);
        const truth = new Set([...current.values()].flatMap((o) => [...o.values()].flat().map(portKey)));
        assert.deepEqual(keysOf(published), keysOf(truth));
      }
      // every source lets go of everything: nothing stays published
      for (const events$ of inputs.values()) events$.next(snapshot([]));
      rethrow();
      assert.equal(published.size, 0);
      subscription.unsubscribe();
    }),
    runs(600),
  );
});
