import { Observable } from 'rxjs';

/**
 * Emits once (then completes) after the event loop has next polled for I/O. Work that waits for
 * it lets a connect or write started now finish first: Node makes a TCP connection in a
 * `nextTick` and learns that it is open only when the loop next polls, so everything synchronous
 * before that poll, and every `setImmediate` and due timer, is time on that message's path.
 *
 * One `setImmediate` runs in the check phase of this turn of the loop, before that poll; a
 * second one, queued from the first, runs in the check phase of the next turn, after it. With
 * immediates pending the poll does not block, so the wait is a few microseconds when idle.
 */
export function ioPolled(): Observable<void> {
  return new Observable<void>((subscriber) => {
    let handle = setImmediate(() => {
      handle = setImmediate(() => {
        subscriber.next();
        subscriber.complete();
      });
    });
    return () => {
      clearImmediate(handle);
    };
  });
}
