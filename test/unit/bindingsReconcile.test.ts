/**
 * The host side's binding manager as a pure function, alone. The property: whatever the proxies
 * answer, the bindings with a proxy open or being retried are exactly those added and not removed
 * since, and after the input ends none is left.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { initialBindingState, reconcileBindings, type BindingInput, type BindingState } from '../../src/host/bindingsReconcile.js';
import { bindingKey } from '../../src/host/targets.js';
import type { HostBinding, VmAddress } from '../../src/wire/parsePortMapping.js';
import { runs } from '../properties/arbitraries.js';

const vm: VmAddress = { ip: '172.26.112.5', prefix: 20, family: 4 };
const vm2: VmAddress = { ip: '172.26.112.9', prefix: 20, family: 4 };
const http: HostBinding = { protocol: 'tcp', hostIp: '0.0.0.0', hostPort: 8080, containerPort: 80 };
const none = new Set<string>();

test('reconcile bindings: a re-sent add is a no-op; a new VM address retargets without reopening', () => {
  let s: BindingState = initialBindingState;
  const step = (input: BindingInput) => {
    const r = reconcileBindings(s, input);
    s = r.state;
    return r.commands.map((c) => (c.kind === 'event' ? c.event.type : c.kind));
  };
  assert.deepEqual(step({ kind: 'mapping', mapping: { remove: false, bindings: [http], connectAddrs: [vm] }, local: none }), ['open']);
  assert.deepEqual(step({ kind: 'listening', key: bindingKey(http), gen: 1 }), ['log', 'bound']);
  assert.deepEqual(step({ kind: 'mapping', mapping: { remove: false, bindings: [http], connectAddrs: [vm] }, local: none }), ['log']);
  assert.deepEqual(step({ kind: 'mapping', mapping: { remove: false, bindings: [http], connectAddrs: [vm2] }, local: none }), ['log', 'retargeted']);
  assert.equal(s.active.size, 1);
  assert.deepEqual(step({ kind: 'stop' }), ['close', 'done']);
});

test('property: the bindings with a proxy open or retried are exactly those added and not removed; none after the end', () => {
  const binding = fc.record({
    protocol: fc.constantFrom('tcp' as const, 'udp' as const),
    hostIp: fc.constantFrom('0.0.0.0', '127.0.0.1'),
    hostPort: fc.integer({ min: 1, max: 4 }),
    containerPort: fc.constant(80),
  });
  type Event = { kind: 'mapping'; remove: boolean; bindings: HostBinding[]; vm: VmAddress } | { kind: 'answer'; index: number; outcome: 'listening' | 'failed' | 'ended' | 'retry' };
  const event: fc.Arbitrary<Event> = fc.oneof(
    fc.record({ kind: fc.constant('mapping' as const), remove: fc.boolean(), bindings: fc.array(binding, { maxLength: 4 }), vm: fc.constantFrom(vm, vm2) }),
    fc.record({ kind: fc.constant('answer' as const), index: fc.nat(), outcome: fc.constantFrom('listening' as const, 'failed' as const, 'ended' as const, 'retry' as const) }),
  );
  fc.assert(
    fc.property(fc.array(event, { maxLength: 40 }), (events) => {
      let s: BindingState = initialBindingState;
      const wanted = new Set<string>();
      const live = new Map<string, { gen: number; kind: 'open' | 'wait' }>();
      const feed = (input: BindingInput): void => {
        const r = reconcileBindings(s, input, { initialMs: 10, maxMs: 40 });
        s = r.state;
        for (const c of r.commands) {
          if (c.kind === 'close') live.delete(c.key);
          if (c.kind === 'open' || c.kind === 'wait') live.set(c.key, { gen: c.gen, kind: c.kind });
        }
      };
      for (const e of events) {
        if (e.kind === 'mapping') {
          for (const b of e.bindings) {
            if (e.remove) wanted.delete(bindingKey(b));
            else wanted.add(bindingKey(b));
          }
          feed({ kind: 'mapping', mapping: { remove: e.remove, bindings: e.bindings, connectAddrs: [e.vm] }, local: none });
        } else {
          const entries = [...live];
          const picked = entries[e.index % Math.max(1, entries.length)];
          if (picked === undefined) continue;
          const [key, { gen, kind }] = picked;
          if (kind === 'wait' && e.outcome === 'retry') feed({ kind: 'retry', key, gen });
          if (kind === 'open' && e.outcome === 'listening') feed({ kind: 'listening', key, gen });
          if (kind === 'open' && e.outcome === 'failed') feed({ kind: 'openFailed', key, gen, error: 'taken', random: 0.5 });
          if (kind === 'open' && e.outcome === 'ended') {
            feed({ kind: 'ended', key, gen });
            wanted.delete(key); // forgotten until the next add
          }
        }
        assert.deepEqual([...live.keys()].sort(), [...wanted].sort());
      }
      feed({ kind: 'stop' });
      assert.equal(live.size, 0);
    }),
    runs(300),
  );
});
