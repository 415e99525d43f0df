import { from, Observable, Subscription, type ObservableInput, type OperatorFunction } from 'rxjs';

/**
 * Runs each key's commands one at a time, a new one replacing what the key was doing (as
 * `groupBy` key, then `switchMap`, would); a `close` command ends what the key was doing. It
 * completes when its input has completed and every key's run has; a throw in `run` is its error.
 *
 *   commands:  a-b---c-x---a--     a, b, c for one key (each emits its name after 1 frame, c after 2);
 *   output:    -a-b---------a-     x closes the key: c is cut off, and a later a starts it afresh
 *
 * Written out rather than composed from `groupBy` and `switchMap`: a key costs one Map entry and
 * the subscription to its run, where a group with its duration Subject, its `switchMap` and their
 * subscribers cost about 4 KB of heap. The listener sink keeps a key per placeholder, thousands of
 * them for as long as the agent runs.
 */
export function switchPerKey<C extends { readonly kind: string; readonly key: string }, R>(run: (command: C) => ObservableInput<R>): OperatorFunction<C, R> {
  return (commands$) =>
    new Observable<R>((subscriber) => {
      const running = new Map<string, Subscription>();
      let inputDone = false;
      const stop = (key: string): void => {
        const current = running.get(key);
        running.delete(key);
        current?.unsubscribe();
      };
      const start = (command: C): void => {
        // The entry is in place before subscribing: a run may complete while it is subscribed to.
        const own = new Subscription();
        running.set(command.key, own);
        own.add(
          from(run(command)).subscribe({
            next: (value) => { subscriber.next(value); },
            error: (error: unknown) => { subscriber.error(error); },
            complete: () => {
              if (running.get(command.key) === own) running.delete(command.key);
              if (inputDone && running.size === 0) subscriber.complete();
            },
          }),
        );
      };
      const input = commands$.subscribe({
        next: (command) => {
          stop(command.key);
          if (command.kind === 'close') return;
          try {
            start(command);
          } catch (error: unknown) {
            subscriber.error(error);
          }
        },
        error: (error: unknown) => { subscriber.error(error); },
        complete: () => {
          inputDone = true;
          if (running.size === 0) subscriber.complete();
        },
      });
      return () => {
        input.unsubscribe();
        for (const run of running.values()) run.unsubscribe();
        running.clear();
      };
    });
}
