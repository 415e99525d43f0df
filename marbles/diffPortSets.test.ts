import { test } from 'node:test';
import { diffPortSets } from '../operators/diffPortSets.js';
import { portSetOf } from '../src/model.js';
import { fwd, marbles, poison, poisoned } from './helpers.js';

const http = fwd(8080);
const dns = fwd(53, { protocol: 'udp' });
const dns6 = fwd(53, { protocol: 'udp', hostIp: '::' });

test('diffPortSets emits only what changed', marbles(({ cold, expectObservable }) => {
  const sets = cold('a-b-b-c', { a: portSetOf([http]), b: portSetOf([http, dns]), c: portSetOf([]) });
  expectObservable(sets.pipe(diffPortSets())).toBe('a-b---c', {
    a: { added: [http], removed: [] },
    b: { added: [dns], removed: [] },
    c: { added: [], removed: [http, dns] },
  });
}));

test('diffPortSets tells IPv4 and IPv6 bindings, and tcp and udp, apart', marbles(({ cold, expectObservable }) => {
  const tcp53 = fwd(53);
  const sets = cold('a-b', { a: portSetOf([dns]), b: portSetOf([dns6, tcp53]) });
  expectObservable(sets.pipe(diffPortSets())).toBe('a-b', {
    a: { added: [dns], removed: [] },
    b: { added: [dns6, tcp53], removed: [dns] },
  });
}));

test('diffPortSets emits nothing for an empty first set and passes completion and errors', marbles(({ cold, expectObservable }) => {
  expectObservable(cold('a-|', { a: portSetOf([]) }).pipe(diffPortSets())).toBe('--|');
  expectObservable(cold('a-#', { a: portSetOf([http]) }).pipe(diffPortSets())).toBe('a-#', {
    a: { added: [http], removed: [] },
  });
}));

test('diffPortSets: the doc comment diagram', marbles(({ cold, expectObservable }) => {
  const sets = cold('--A-----B-----B-----C--', { A: portSetOf([http]), B: portSetOf([http, dns]), C: portSetOf([dns6]) });
  expectObservable(sets.pipe(diffPortSets())).toBe('--a-----b-----------c--', {
    a: { added: [http], removed: [] },
    b: { added: [dns], removed: [] },
    c: { added: [dns6], removed: [http, dns] },
  });
}));

test('diffPortSets: a set it cannot read is an error notification', marbles(({ cold, expectObservable }) => {
  const unreadable = new Map([['tcp/0.0.0.0:9', poisoned(9)]]);
  // the diff itself reads no forward; a set whose iteration throws stands for any failure inside it
  const broken = Object.assign(new Map(), { [Symbol.iterator]: () => { throw poison; } });
  expectObservable(cold('ab', { a: unreadable, b: broken }).pipe(diffPortSets())).toBe('a#', { a: { added: [unreadable.get('tcp/0.0.0.0:9')!], removed: [] } }, poison);
}));
