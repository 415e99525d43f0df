import { test } from 'node:test';
import { switchPerKey } from '../src/switchPerKey.js';
import { marbles } from './helpers.js';

type Cmd = { readonly kind: 'run' | 'close'; readonly key: string; readonly name: string };
const run = (name: string, key = 'k'): Cmd => ({ kind: 'run', key, name });
const close = (key = 'k'): Cmd => ({ kind: 'close', key, name: 'x' });

test('switchPerKey: the diagram: each command replaces the one before; close ends the key, which can start again', marbles((h) => {
  const a = h.cold('-a');
  const b = h.cold('-b');
  const c = h.cold('--c');
  const a2 = h.cold('-a');
  const plays: Record<string, ReturnType<typeof h.cold>[]> = { a: [a, a2], b: [b], c: [c] };
  const commands = h.hot('a-b---c-x---a--', { a: run('a'), b: run('b'), c: run('c'), x: close() });
  h.expectObservable(commands.pipe(switchPerKey((cmd: Cmd) => plays[cmd.name]!.shift()!))).toBe('-a-b---------a');
  h.expectSubscriptions(c.subscriptions).toBe('------^-!');
}));

test('switchPerKey: keys run side by side; unsubscribing lets go of the source and of every key', marbles((h) => {
  const one = h.cold('-1');
  const two = h.cold('--2');
  const commands = h.hot('ab----', { a: run('one', 'k1'), b: run('two', 'k2') });
  const plays: Record<string, ReturnType<typeof h.cold>> = { one, two };
  h.expectObservable(commands.pipe(switchPerKey((cmd: Cmd) => plays[cmd.name]!)), '^---!').toBe('-1-2');
  h.expectSubscriptions(commands.subscriptions).toBe('^---!');
  h.expectSubscriptions(one.subscriptions).toBe('^---!');
}));

test('switchPerKey: it completes once its input has and every key has finished', marbles((h) => {
  const one = h.cold('-1|');
  const two = h.cold('----2|');
  const plays: Record<string, ReturnType<typeof h.cold>> = { one, two };
  const commands = h.hot('ab|', { a: run('one', 'k1'), b: run('two', 'k2') });
  h.expectObservable(commands.pipe(switchPerKey((cmd: Cmd) => plays[cmd.name]!))).toBe('-1---2|');
}));

test('switchPerKey: a run that throws is its error, never an uncaught exception', marbles((h) => {
  const commands = h.hot('-a-', { a: run('a') });
  h.expectObservable(commands.pipe(switchPerKey((): never => {
    throw new Error('boom');
  }))).toBe('-#', undefined, new Error('boom'));
  h.expectSubscriptions(commands.subscriptions).toBe('^!');
}));
