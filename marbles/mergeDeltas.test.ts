import { test } from 'node:test';
import { mergeDeltas, refCountClaims } from '../operators/mergeDeltas.js';
import type { PortDelta } from '../src/model.js';
import { fwd, marbles, poison, poisoned } from './helpers.js';

const fromDocker = fwd(80, { source: 'docker' });
const fromIptables = fwd(80, { source: 'iptables', owner: 'rule-1' });
const other = fwd(443, { source: 'iptables', owner: 'rule-2' });

test('mergeDeltas adds a port on its first claim and removes it with its last', marbles(({ cold, expectObservable }) => {
  const docker = cold('a-----r----', { a: { added: [fromDocker], removed: [] }, r: { added: [], removed: [fromDocker] } });
  const iptables = cold('--a------r-', { a: { added: [fromIptables, other], removed: [] }, r: { added: [], removed: [fromIptables, other] } });
  expectObservable(mergeDeltas(docker, iptables)).toBe('a-b------c-', {
    a: { added: [fromDocker], removed: [] },
    b: { added: [other], removed: [] },
    c: { added: [], removed: [fromDocker, other] },
  });
}));

test('mergeDeltas: one source reconnecting does not disturb the ports another source claims', marbles(({ cold, expectObservable }) => {
  // docker re-lists after a reconnect: its own port goes, iptables' claim on another port stays
  const docker = cold('a---r', { a: { added: [fromDocker], removed: [] }, r: { added: [], removed: [fromDocker] } });
  const iptables = cold('-a---', { a: { added: [other], removed: [] } });
  expectObservable(mergeDeltas(docker, iptables)).toBe('ab--r', {
    a: { added: [fromDocker], removed: [] },
    b: { added: [other], removed: [] },
    r: { added: [], removed: [fromDocker] },
  });
}));

test('refCountClaims ignores repeated adds and removals of unclaimed ports, so counts never go negative', marbles(({ cold, expectObservable }) => {
  const deltas = cold('a-a-r-r-a', {
    a: { added: [fromDocker], removed: [] },
    r: { added: [], removed: [fromDocker] },
  });
  expectObservable(deltas.pipe(refCountClaims())).toBe('a---r---a', {
    a: { added: [fromDocker], removed: [] },
    r: { added: [], removed: [fromDocker] },
  });
}));

test('refCountClaims passes completion and errors through', marbles(({ cold, expectObservable }) => {
  expectObservable(cold('a|', { a: { added: [fromDocker], removed: [] } }).pipe(refCountClaims())).toBe('a|', {
    a: { added: [fromDocker], removed: [] },
  });
  expectObservable(cold<PortDelta>('#').pipe(refCountClaims())).toBe('#');
}));

test('mergeDeltas: the doc comment diagram', marbles(({ cold, expectObservable }) => {
  const docker = cold('-a------r------', { a: { added: [fromDocker], removed: [] }, r: { added: [], removed: [fromDocker] } });
  const iptables = cold('----b---------s', { b: { added: [fromIptables], removed: [] }, s: { added: [], removed: [fromIptables] } });
  expectObservable(mergeDeltas(docker, iptables)).toBe('-a------------s', {
    a: { added: [fromDocker], removed: [] },
    s: { added: [], removed: [fromDocker] },
  });
}));

test('refCountClaims: a forward that cannot be keyed is an error notification, and the input is let go', marbles(({ cold, expectObservable, expectSubscriptions }) => {
  const deltas = cold<PortDelta>('ab-', { a: { added: [fromDocker], removed: [] }, b: { added: [poisoned(81)], removed: [] } });
  expectObservable(deltas.pipe(refCountClaims())).toBe('a#', { a: { added: [fromDocker], removed: [] } }, poison);
  expectSubscriptions(deltas.subscriptions).toBe('^!');
}));
