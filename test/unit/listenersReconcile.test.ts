/**
 * The listener sink's reconcile function, alone. The property: whatever the binder answers, the
 * ports with a placeholder held or being tried are exactly the ports wanted, and after the input
 * ends none is left.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { portKey, type Forward, type PortKey } from '../../src/model.js';
import { initialListenerState, reconcileListeners, type ListenerConfig, type ListenerInput, type ListenerState } from '../../src/sinks/listenersReconcile.js';
import { runs, smallForward } from '../properties/arbitraries.js';

const config: ListenerConfig = { retryMs: 2000, jitter: 0.2 };
const web: Forward = { protocol: 'tcp', hostIp: '0.0.0.0', hostPort: 8080, source: 'iptables', owner: 'r1' };
const inUse = { code: 'EADDRINUSE', message: 'listen EADDRINUSE: address already in use 0.0.0.0:8080' };

test('reconcile listeners: a port in use is noted once, then waited on quietly; binding ends the streak', () => {
  let s: ListenerState = initialListenerState;
  const step = (input: ListenerInput) => {
    const r = reconcileListeners(s, input, config);
    s = r.state;
    return r.commands;
  };
  assert.deepEqual(step({ kind: 'delta', delta: { added: [web], removed: [] } }).map((c) => c.kind), ['hold', 'report']);
  const first = step({ kind: 'bindFailed', key: portKey(web), gen: 1, failure: inUse, random: 0.5 });
  assert.deepEqual(first.map((c) => (c.kind === 'log' ? c.level : c.kind)), ['info', 'wait']);
  assert.deepEqual(step({ kind: 'retry', key: portKey(web), gen: 1 }), [{ kind: 'hold', key: portKey(web), gen: 1, forward: web }]);
  const again = step({ kind: 'bindFailed', key: portKey(web), gen: 1, failure: inUse, random: 0.5 });
  assert.deepEqual(again.map((c) => (c.kind === 'log' ? c.level : c.kind)), ['debug', 'wait']);
  assert.deepEqual(step({ kind: 'bound', key: portKey(web), gen: 1 }).map((c) => c.kind === 'log' && c.msg), ['tcp/0.0.0.0:8080: placeholder listening now']);
  assert.deepEqual(step({ kind: 'bound', key: portKey(web), gen: 1 }), [], 'said once');
});

test('reconcile listeners: an answer about a placeholder closed since is ignored', () => {
  let s = reconcileListeners(initialListenerState, { kind: 'delta', delta: { added: [web], removed: [] } }, config).state;
  s = reconcileListeners(s, { kind: 'delta', delta: { added: [], removed: [web] } }, config).state;
  assert.deepEqual(reconcileListeners(s, { kind: 'bindFailed', key: portKey(web), gen: 1, failure: inUse, random: 0 }, config).commands, []);
  assert.deepEqual(reconcileListeners(s, { kind: 'retry', key: portKey(web), gen: 1 }, config).commands, []);
});

type Event =
  | { kind: 'delta'; added: Forward[]; removed: Forward[] }
  | { kind: 'answer'; index: number; ok: boolean; code: string }
  | { kind: 'retry'; index: number };

test('property: the ports held or being tried are exactly the ports wanted; none after the input ends', () => {
  const event: fc.Arbitrary<Event> = fc.oneof(
    fc.record({ kind: fc.constant('delta' as const), added: fc.array(smallForward, { maxLength: 4 }), removed: fc.array(smallForward, { maxLength: 4 }) }),
    fc.record({ kind: fc.constant('answer' as const), index: fc.nat(), ok: fc.boolean(), code: fc.constantFrom('EADDRINUSE', 'EACCES') }),
    fc.record({ kind: fc.constant('retry' as const), index: fc.nat() }),
  );
  fc.assert(
    fc.property(fc.array(event, { maxLength: 40 }), (events) => {
      let s: ListenerState = initialListenerState;
      const wanted = new Map<PortKey, Forward>();
      /** What the runner has going per port: the latest command's generation (a hold or a wait). */
      const live = new Map<PortKey, { gen: number; kind: 'hold' | 'wait' }>();
      const feed = (input: ListenerInput): void => {
        const r = reconcileListeners(s, input, config);
        s = r.state;
        for (const c of r.commands) {
          if (c.kind === 'close') live.delete(c.key);
          if (c.kind === 'hold' || c.kind === 'wait') {
            assert.ok(!(c.kind === 'hold' && live.get(c.key)?.kind === 'hold' && live.get(c.key)?.gen !== c.gen), 'a new hold of a held port closes the old first');
            live.set(c.key, { gen: c.gen, kind: c.kind });
          }
        }
      };
      for (const e of events) {
        if (e.kind === 'delta') {
          for (const f of e.removed) wanted.delete(portKey(f));
          for (const f of e.added) wanted.set(portKey(f), f);
          feed({ kind: 'delta', delta: { added: e.added, removed: e.removed } });
        } else {
          const entries = [...live];
          const picked = entries[e.index % Math.max(1, entries.length)];
          if (picked === undefined) continue;
          const [key, { gen, kind }] = picked;
          if (e.kind === 'retry' && kind === 'wait') feed({ kind: 'retry', key, gen });
          if (e.kind === 'answer' && kind === 'hold') {
            feed(e.ok ? { kind: 'bound', key, gen } : { kind: 'bindFailed', key, gen, failure: { code: e.code, message: 'x' }, random: 0.3 });
          }
        }
        assert.deepEqual([...live.keys()].sort(), [...wanted.keys()].sort());
      }
      feed({ kind: 'stop' });
      assert.equal(live.size, 0);
    }),
    runs(300),
  );
});
