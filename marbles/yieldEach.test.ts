import { test } from 'node:test';
import { yieldEach } from '../operators/yieldEach.js';
import { marbles } from './helpers.js';

test('yieldEach: the doc comment diagram: each value waits for its own wait, behind the ones before it', marbles(({ cold, expectObservable }) => {
  expectObservable(cold('-a-b-----|').pipe(yieldEach(() => cold('--x|')))).toBe('---a-b---|');
}));

test('yieldEach: a burst leaves in order, one wait apart, and completion waits for the last value', marbles(({ cold, expectObservable }) => {
  // a wait that would go on emitting counts once
  expectObservable(cold('(abc|)').pipe(yieldEach(() => cold('-xxxx')))).toBe('-ab(c|)');
}));

test('yieldEach: an error passes at once, ahead of values still waiting', marbles(({ cold, expectObservable }) => {
  expectObservable(cold('a#').pipe(yieldEach(() => cold('---x')))).toBe('-#');
}));
