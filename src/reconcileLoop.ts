/**
 * The pieces every reducer-driven sink runs its outputs with (the vtunnel and listener sinks, the
 * host side's bindings): a pure reducer yields commands; effects feed their results back as
 * inputs; the rest are outputs, a value to emit, a log line or the end.
 */
import { EMPTY, ignoreElements, mergeMap, of, takeWhile, tap, type OperatorFunction, type Subject } from 'rxjs';
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
