import { defer, EMPTY, groupBy, mergeMap, Subject, switchMap, type ObservableInput, type OperatorFunction } from 'rxjs';

/**
 * Runs each key's commands one at a time, a new one replacing what the key was doing (`groupBy`
 * key, then `switchMap`); a `close` command ends what the key was doing, and its group.
 *
 *   commands:  a-b---c-x---a--     a, b, c for one key (each emits its name after 1 frame, c after 2);
 *   output:    -a-b---------a-     x closes the key: c is cut off, and a later a starts it afresh
 *
 * The group ends on a signal of its own rather than a duration that watches the group: RxJS's
 * `groupBy` counts such a watcher as a live subscriber, and would then never let go of its source
 * when unsubscribed.
 */
export function switchPerKey<C extends { readonly kind: string; readonly key: string }, R>(run: (command: C) => ObservableInput<R>): OperatorFunction<C, R> {
  return (commands$) =>
    defer(() => {
      const closers = new Map<string, Subject<void>>();
      const close = (key: string): typeof EMPTY => {
        const closer = closers.get(key);
        closers.delete(key);
        closer?.next();
        return EMPTY;
      };
      return commands$.pipe(
        groupBy((c) => c.key, {
          duration: (group) => {
            const closer = new Subject<void>();
            closers.set(group.key, closer);
            return closer;
          },
        }),
        mergeMap((group) => group.pipe(switchMap((c) => (c.kind === 'close' ? defer(() => close(c.key)) : run(c))))),
      );
    });
}
