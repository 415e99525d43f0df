import { defer, from, type Observable } from 'rxjs';
import { nativeAddon } from '../native/addon.js';

/** Whether this build can speak AF_VSOCK; the CLI checks it at start-up. */
export function vsockAvailable(): Error | undefined {
  try {
    nativeAddon();
    return undefined;
  } catch (error) {
    return error as Error;
  }
}

/**
 * One message per AF_VSOCK connection to `cid:port`, as the TCP sender does over TCP: connect,
 * write, half-close, succeed when the peer closes. The work runs on a libuv worker thread and is
 * bounded by `timeoutMs`; unsubscribing cannot stop a connection already in flight, but the
 * timeout ends it.
 */
export function vsockSender(cid: number, port: number, timeoutMs: number): (line: string) => Observable<void> {
  const native = nativeAddon();
  return (line) => defer(() => from(native.send(cid, port, Buffer.from(line, 'utf8'), timeoutMs)));
}
