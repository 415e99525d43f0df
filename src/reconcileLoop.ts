/**
 * The pieces every reducer-driven sink runs its outputs with (the vtunnel and listener sinks, the
 * host side's bindings): a pure reducer yields commands; effects feed their results back as
 * inputs; the rest are outputs, a value to emit, a log line or the end.
 */
import { defer, filter, groupBy, ignoreElements, map, merge, mergeMap, Observable, scan, Subject, takeWhile, tap, type OperatorFunction } from 'rxjs';
import { trampoline } from '../operators/trampoline.js';
import { switchPerKey } from './switchPerKey.js';
import type { Logger } from './log.js';

/** A log line a reducer asks for (reducers never log themselves, so they stay pure). */
export interface LogCommand {
  readonly kind: 'log';
  readonly level: 'debug' | 'info' | 'warn';
  readonly fields: Readonly<Record<string, unknown>>;
  readonly msg: string;
}

/** The marker that a reducer has finished; `untilDone` ends the loop at it. */
export const done = Symbol('done');

/** Feeds what an effect gave back into the reducer's inputs; emits nothing itself. */
export function feedInto<I>(feedback: Subject<I>): OperatorFunction<I, never> {
  return (inputs$) =>
    inputs$.pipe(
      tap((input) => {
        feedback.next(input);
      }),
      ignoreElements(),
    );
}

/** What an output command that emits nothing maps to, before it is filtered out. */
const nothing = Symbol('nothing');

/**
 * Runs the output commands: `valueOf` picks what to emit (a report, an event), `done` becomes the
 * end marker, a log command is logged, and anything else emits nothing. A `map` and a `filter`,
 * not a `mergeMap`: every binding of a burst has a few outputs, and an inner subscription for
 * each was most of the garbage a burst of 1,600 made.
 */
export function runOutputs<C extends { readonly kind: string }, O>(log: Logger, valueOf: (command: C) => O | undefined): OperatorFunction<C, O | typeof done> {
  return (commands$) =>
    commands$.pipe(
      map((command): O | typeof done | typeof nothing => {
        const value = valueOf(command);
        if (value !== undefined) return value;
        if (command.kind === 'done') return done;
        if (isLog(command)) log[command.level](command.fields, command.msg);
        return nothing;
      }),
      filter((out): out is O | typeof done => out !== nothing),
    );
}

/**
 * `concatMap` over arrays, without an inner subscription per array: each of `itemsOf(value)` is
 * emitted in order, at once. A burst of 1,600 bindings is 1,600 steps of two or three commands
 * each, and subscribing to each step's array made a good part of its garbage. A throw in
 * `itemsOf` becomes the error notification.
 *
 *   steps:  -a--b-c|      a = [1, 2], b = [], c = [3]
 *   out:    -(12)-3|      (a group takes as many frames as it has characters)
 */
export function eachOf<T, R>(itemsOf: (value: T) => readonly R[]): OperatorFunction<T, R> {
  return (source) =>
    new Observable<R>((subscriber) =>
      source.subscribe({
        next: (value) => {
          let items: readonly R[];
          try {
            items = itemsOf(value);
          } catch (error: unknown) {
            subscriber.error(error);
            return;
          }
          for (const item of items) subscriber.next(item);
        },
        error: (error: unknown) => { subscriber.error(error); },
        complete: () => { subscriber.complete(); },
      }),
    );
}

/** Emits the loop's outputs until the end marker, which completes it (and ends every effect still running). */
export function untilDone<O>(): OperatorFunction<O | typeof done, O> {
  return takeWhile((out): out is O => out !== done);
}

function isLog(command: { readonly kind: string }): command is LogCommand {
  return command.kind === 'log';
}

/** A reducer whose effects run per key, as `keyedLoop` runs it. */
export interface KeyedLoop<I, C extends { readonly kind: string }, K extends C & { readonly key: string }, S, O> {
  readonly initial: S;
  readonly reduce: (state: S, input: I) => { readonly state: S; readonly commands: readonly C[] };
  /** The commands that belong to one key (open, wait, close...); the rest are outputs. */
  readonly keyed: (command: C) => command is K;
  /** One key's command: what it gives back is fed in again; a new command for the key replaces it. */
  readonly run: (command: K) => Observable<I>;
  /** The value an output command emits, if any (`runOutputs`). */
  readonly output: (command: C) => O | undefined;
  readonly log: Logger;
  /** Told each state as it is reached, before its commands run (the host side reads the latest). */
  readonly onState?: ((state: S) => void) | undefined;
}

/**
 * The loop the listener sink and the host side's bindings share: `inputs$` and what the effects
 * give back are folded one at a time (`trampoline`, so the reducer never re-enters itself);
 * each step's keyed commands run per key (`switchPerKey`), its other commands are outputs; the
 * `done` command ends the loop, and every effect still running with it.
 */
export function keyedLoop<I, C extends { readonly kind: string }, K extends C & { readonly key: string }, S, O>(inputs$: Observable<I>, loop: KeyedLoop<I, C, K, S, O>): Observable<O> {
  return defer(() => {
    const feedback = new Subject<I>();
    const first: { readonly state: S; readonly commands: readonly C[] } = { state: loop.initial, commands: [] };
    return merge(feedback, inputs$).pipe(
      trampoline(),
      scan((step, input: I) => loop.reduce(step.state, input), first),
      tap((step) => loop.onState?.(step.state)),
      eachOf((step) => step.commands),
      groupBy((command) => loop.keyed(command)),
      mergeMap((commands$): Observable<O | typeof done> =>
        commands$.key ? commands$.pipe(filter(loop.keyed), switchPerKey(loop.run), feedInto(feedback)) : commands$.pipe(runOutputs(loop.log, loop.output)),
      ),
      untilDone(),
    );
  });
}
