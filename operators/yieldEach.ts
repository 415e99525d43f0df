import { concatMap, map, take, type MonoTypeOperatorFunction, type Observable } from 'rxjs';

/**
 * Passes each value on once `wait()` has emitted, in order: a value waits for the ones before it.
 * The agent feeds its secondary routes (the loopback forwarders, the table) through it with
 * `ioPolled`, so that a message the primary sink has just started leaves before their work runs.
 * Completion waits for the values still waiting; an error passes at once.
 *
 *   source:  -a-b-----|
 *   wait:    --x|                (each value's own wait: 2 frames)
 *   out:     ---a-b----|         b waited behind a, then for its own 2 frames
 */
export function yieldEach<T>(wait: () => Observable<unknown>): MonoTypeOperatorFunction<T> {
  return concatMap((value: T) =>
    wait().pipe(
      take(1),
      map(() => value),
    ),
  );
}
