import { test } from 'node:test';
import { toPortSet } from '../operators/toPortSet.js';
import { portSetOf, remove, snapshot, upsert } from '../src/model.js';
import { fwd, marbles, poison, poisoned } from './helpers.js';

const http = fwd(8080, { owner: 'c1' });
const dns = fwd(53, { protocol: 'udp', owner: 'c1' });
const web = fwd(80, { owner: 'c2' });

test('toPortSet folds upserts and removals into the set of wanted ports', marbles(({ cold, expectObservable }) => {
  const events = cold('a-b-c-d', {
    a: upsert('c1', [http]),
    b: upsert('c2', [web]),
    c: upsert('c1', [http, dns]),
    d: remove('c2'),
  });
  expectObservable(events.pipe(toPortSet())).toBe('a-b-c-d', {
    a: portSetOf([http]),
    b: portSetOf([http, web]),
    c: portSetOf([http, web, dns]),
    d: portSetOf([http, dns]),
  });
}));

test('toPortSet: a snapshot replaces every owner, so owners gone while disconnected drop out', marbles(({ cold, expectObservable }) => {
  const events = cold('a-b-c', {
    a: snapshot([['c1', [http]], ['c2', [web]]]),
    b: snapshot([['c2', [web]]]),
    c: snapshot([]),
  });
  expectObservable(events.pipe(toPortSet())).toBe('a-b-c', {
    a: portSetOf([http, web]),
    b: portSetOf([web]),
    c: portSetOf([]),
  });
}));

test('toPortSet keeps a key claimed by two owners until both are gone', marbles(({ cold, expectObservable }) => {
  const same = fwd(8080, { owner: 'c2' });
  const events = cold('a-b-c-d', { a: upsert('c1', [http]), b: upsert('c2', [same]), c: remove('c1'), d: remove('c2') });
  expectObservable(events.pipe(toPortSet())).toBe('a-b-c-d', {
    a: portSetOf([http]),
    b: portSetOf([http]),
    c: portSetOf([same]),
    d: portSetOf([]),
  });
}));

test('toPortSet: removing an unknown owner changes nothing', marbles(({ cold, expectObservable }) => {
  const events = cold('a-b', { a: upsert('c1', [http]), b: remove('nobody') });
  expectObservable(events.pipe(toPortSet())).toBe('a-b', { a: portSetOf([http]), b: portSetOf([http]) });
}));

test('toPortSet: the doc comment diagram', marbles(({ cold, expectObservable }) => {
  const events = cold('--s-----u-----r-----s--', { s: snapshot([['c1', [http]]]), u: upsert('c2', [web]), r: remove('c1') });
  expectObservable(events.pipe(toPortSet())).toBe('--A-----B-----C-----D--', {
    A: portSetOf([http]),
    B: portSetOf([http, web]),
    C: portSetOf([web]),
    D: portSetOf([http]),
  });
}));

test('toPortSet: a forward that cannot be keyed is an error notification', marbles(({ cold, expectObservable }) => {
  const events = cold('ab', { a: upsert('c1', [http]), b: upsert('c2', [poisoned(9, { owner: 'c2' })]) });
  expectObservable(events.pipe(toPortSet())).toBe('a#', { a: portSetOf([http]) }, poison);
}));
