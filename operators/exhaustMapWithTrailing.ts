import { defer, finalize, Observable, type ObservableInput, type OperatorFunction, type Subscription } from 'rxjs';

/**
 * Runs `project` for a value unless a run is already going; the values that arrive while it runs
 * fold into one more run, for the latest of them, started when the current one ends. So at most
 * one run at a time (unlike `mergeMap`), none cut short (unlike `switchMap`), no trigger lost
 * (unlike `exhaustMap`) and no queue (unlike `concatMap`): the right shape for "re-read the
 * state", where one read after a burst of changes sees all of them.
 *
 *   values:  -a-bc-----------d---|
 *   runs:     ---x                     each run emits once, 3 frames after it starts, and completes
 *                ---y                  b and c came during a's run: one run, for c, when it ends
 *                            ---z
 *   out:     ----x--y-----------z|
 *
 * Completes when the source has completed and no run is going or owed; an error of the source
 * or of a run is passed on at once, and so is a throw in `project` (as `exhaustMap` does).
 */
export function exhaustMapWithTrailing<T, R>(project: (value: T) => ObservableInput<R>): OperatorFunction<T, R> {
  return (source$) =>
    new Observable<R>((subscriber) => {
      let running: Subscription | undefined;
      let owed: { value: T } | undefined;
      let sourceDone = false;

      const start = (value: T): void => {
        let completed = false;
        // defer turns a throw in project (or an input `from` cannot take) into an error
        const run = defer(() => project(value))
          // the next run starts once this one is torn down, so two never overlap even briefly
          .pipe(finalize(() => { if (completed) afterRun(); }))
          .subscribe({
            next: (result) => {
              subscriber.next(result);
            },
            error: (err: unknown) => {
              subscriber.error(err);
            },
            complete: () => {
              completed = true;
            },
          });
        // a run that completed synchronously has already moved on
        if (!run.closed) running = run;
      };

      const afterRun = (): void => {
        running = undefined;
        if (owed) {
          const next = owed.value;
          owed = undefined;
          start(next);
        } else if (sourceDone) {
          subscriber.complete();
        }
      };

      const subscription = source$.subscribe({
        next: (value) => {
          if (running) owed = { value };
          else start(value);
        },
        error: (err: unknown) => {
          subscriber.error(err);
        },
        complete: () => {
          sourceDone = true;
          if (!running && !owed) subscriber.complete();
        },
      });
      return () => {
        subscription.unsubscribe();
        running?.unsubscribe();
      };
    });
}
