import { test } from 'node:test';
import { toPortDeltas } from '../operators/toPortDeltas.js';
import { remove, snapshot, upsert } from '../src/model.js';
import { fwd, marbles, poison, poisoned } from './helpers.js';

const http = fwd(8080, { owner: 'c1' });
const dns = fwd(53, { protocol: 'udp', owner: 'c1' });
const web = fwd(80, { owner: 'c2' });
const http2 = fwd(8080, { owner: 'c2', containerPort: 81 });

test('toPortDeltas: each upsert and remove becomes what it changed; an event that changes nothing emits nothing', marbles(({ cold, expectObservable }) => {
  const events = cold('a-b-c-d-e-f', {
    a: upsert('c1', [http]),
    b: upsert('c2', [web]),
    c: upsert('c1', [http, dns]),
    d: upsert('c1', [http, dns]), // the same again
    e: remove('c2'),
    f: remove('c9'), // never seen
  });
  expectObservable(events.pipe(toPortDeltas())).toBe('a-b-c---e--', {
    a: { added: [http], removed: [] },
    b: { added: [web], removed: [] },
    c: { added: [dns], removed: [] },
    e: { added: [], removed: [web] },
  });
}));

test('toPortDeltas: a snapshot replaces every owner, so owners gone while disconnected are removed', marbles(({ cold, expectObservable }) => {
  const events = cold('a-b-c', {
    a: snapshot([['c1', [http, dns]], ['c2', [web]]]),
    b: snapshot([['c2', [web]]]),
    c: snapshot([]),
  });
  expectObservable(events.pipe(toPortDeltas())).toBe('a-b-c', {
    a: { added: [http, dns, web], removed: [] },
    b: { added: [], removed: [http, dns] },
    c: { added: [], removed: [web] },
  });
}));

test('toPortDeltas: a key claimed by two owners is added once, published with the first claim, and removed with the last', marbles(({ cold, expectObservable }) => {
  const events = cold('a-b-c-d', { a: upsert('c1', [http]), b: upsert('c2', [http2]), c: remove('c1'), d: remove('c2') });
  // after c1 goes, c2's claim (container port 81) is what is published, and what d removes
  expectObservable(events.pipe(toPortDeltas())).toBe('a-----d', {
    a: { added: [http], removed: [] },
    d: { added: [], removed: [http2] },
  });
}));

test('toPortDeltas: an owner that drops one port and gains another changes just those', marbles(({ cold, expectObservable }) => {
  const events = cold('a-b', { a: upsert('c1', [http, dns]), b: upsert('c1', [dns, web]) });
  expectObservable(events.pipe(toPortDeltas())).toBe('a-b', {
    a: { added: [http, dns], removed: [] },
    b: { added: [web], removed: [http] },
  });
}));

test('toPortDeltas passes errors and completion through', marbles(({ cold, expectObservable }) => {
  expectObservable(cold('a-#', { a: upsert('c1', [http]) }).pipe(toPortDeltas())).toBe('a-#', { a: { added: [http], removed: [] } });
  expectObservable(cold('a-|', { a: upsert('c1', [http]) }).pipe(toPortDeltas())).toBe('a-|', { a: { added: [http], removed: [] } });
}));

test('toPortDeltas: a throw while applying an event is an error notification, as in scan, not a crash from a timer', marbles(({ cold, expectObservable }) => {
  const broken = Object.defineProperty({ ...web }, 'hostPort', {
    get(): never {
      throw new Error('no port here');
    },
  });
  const events = cold('a-b-c', { a: upsert('c1', [http]), b: upsert('c2', [broken]), c: remove('c1') });
  expectObservable(events.pipe(toPortDeltas())).toBe('a-#', { a: { added: [http], removed: [] } }, new Error('no port here'));
}));

test('toPortDeltas: the doc comment diagram', marbles(({ cold, expectObservable }) => {
  const events = cold('--s-----u-----u-----r--', { s: snapshot([['c1', [http]]]), u: upsert('c2', [web]), r: remove('c1') });
  expectObservable(events.pipe(toPortDeltas())).toBe('--a-----b-----------c--', {
    a: { added: [http], removed: [] },
    b: { added: [web], removed: [] },
    c: { added: [], removed: [http] },
  });
}));

test('toPortDeltas: a forward that cannot be keyed is an error notification', marbles(({ cold, expectObservable }) => {
  const events = cold('ab', { a: upsert('c1', [http]), b: upsert('c2', [poisoned(9, { owner: 'c2' })]) });
  expectObservable(events.pipe(toPortDeltas())).toBe('a#', { a: { added: [http], removed: [] } }, poison);
}));
