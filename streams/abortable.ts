import { Observable } from 'rxjs';

/**
 * One request as an Observable. Unsubscribing before the answer (a timeout, a reconnect) aborts
 * the request, so retrying against an engine or API server that hangs does not collect an open
 * request per attempt.
 */
export function abortable<T>(call: (signal: AbortSignal) => Promise<T>): Observable<T> {
  return new Observable<T>((subscriber) => {
    const request = new AbortController();
    let settled = false;
    call(request.signal).then(
      (value) => {
        settled = true;
        subscriber.next(value);
        subscriber.complete();
      },
      (err: unknown) => {
        settled = true;
        subscriber.error(err);
      },
    );
    return () => {
      if (!settled) request.abort();
    };
  });
}
