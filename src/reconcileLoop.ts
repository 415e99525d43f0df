/**
 * The pieces every reducer-driven sink runs its outputs with (the vtunnel and listener sinks, the
 * host side's bindings): a pure reducer yields commands; effects feed their results back as
 * inputs; the rest are outputs, a value to emit, a log line or the end.
 */
import { concatMap, defer, EMPTY, filter, groupBy, ignoreElements, merge, mergeMap, type Observable, observeOn, of, queueScheduler, scan, Subject, takeWhile, tap, type OperatorFunction } from 'rxjs';
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

/**
 * Runs the output commands: `valueOf` picks what to emit (a report, an event), `done` becomes the
 * end marker, a log command is logged, and anything else emits nothing.
 */
export function runOutputs<C extends { readonly kind: string }, O>(log: Logger, valueOf: (command: C) => O | undefined): OperatorFunction<C, O | typeof done> {
  return mergeMap((command) => {
    const value = valueOf(command);
    if (value !== undefined) return of(value);
    if (command.kind === 'done') return of(done);
    if (isLog(command)) log[command.level](command.fields, command.msg);
    return EMPTY;
  });
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
 * give back are folded one at a time (`queueScheduler`, so the reducer never re-enters itself);
 * each step's keyed commands run per key (`switchPerKey`), its other commands are outputs; the
 * `done` command ends the loop, and every effect still running with it.
 */
export function keyedLoop<I, C extends { readonly kind: string }, K extends C & { readonly key: string }, S, O>(inputs$: Observable<I>, loop: KeyedLoop<I, C, K, S, O>): Observable<O> {
  return defer(() => {
    const feedback = new Subject<I>();
    const first: { readonly state: S; readonly commands: readonly C[] } = { state: loop.initial, commands: [] };
    return merge(feedback, inputs$).pipe(
      observeOn(queueScheduler),
      scan((step, input: I) => loop.reduce(step.state, input), first),
      tap((step) => loop.onState?.(step.state)),
      concatMap((step) => step.commands),
      groupBy((command) => loop.keyed(command)),
      mergeMap((commands$): Observable<O | typeof done> =>
        commands$.key ? commands$.pipe(filter(loop.keyed), switchPerKey(loop.run), feedInto(feedback)) : commands$.pipe(runOutputs(loop.log, loop.output)),
      ),
      untilDone(),
    );
  });
}
