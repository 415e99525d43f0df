import { Observable, type MonoTypeOperatorFunction } from 'rxjs';

/** A notification waiting for the one being delivered to finish. */
type Pending<T> = { readonly kind: 'next'; readonly value: T } | { readonly kind: 'error'; readonly error: unknown } | { readonly kind: 'complete' };

/**
 * Delivers one notification at a time: one that arrives while the one before it is still being
 * delivered (a reducer's effect feeding a result straight back into the reducer's input) waits
 * until that delivery returns, then goes in order. Otherwise it passes at once, in the same turn.
 *
 * What `observeOn(queueScheduler)` does, without a scheduled action (and its subscription) per
 * value: the reconcile loops pass every binding of a burst through here twice, and those actions
 * were a good part of the garbage a burst of 1,600 made.
 *
 *   source:   a----b|   a's delivery feeds x back in, synchronously
 *   feedback: x         (x arrives during a)
 *   out:      (ax)-b|   x waits for a to return, then goes before anything after it
 */
export function trampoline<T>(): MonoTypeOperatorFunction<T> {
  return (source) =>
    new Observable<T>((subscriber) => {
      const queue: Pending<T>[] = [];
      let delivering = false;
      const emit = (pending: Pending<T>): void => {
        if (pending.kind === 'next') subscriber.next(pending.value);
        else if (pending.kind === 'error') subscriber.error(pending.error);
        else subscriber.complete();
      };
      const deliver = (pending: Pending<T>): void => {
        if (delivering) {
          queue.push(pending);
          return;
        }
        delivering = true;
        try {
          emit(pending);
          // `queue` grows while this runs: whatever a delivery feeds back goes after it
          for (let i = 0; i < queue.length && !subscriber.closed; i++) emit(queue[i]!);
        } finally {
          queue.length = 0;
          delivering = false;
        }
      };
      return source.subscribe({
        next: (value) => { deliver({ kind: 'next', value }); },
        error: (error: unknown) => { deliver({ kind: 'error', error }); },
        complete: () => { deliver({ kind: 'complete' }); },
      });
    });
}
