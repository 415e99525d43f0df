import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { defer, from, type Observable } from 'rxjs';

interface VsockAddon {
  send(cid: number, port: number, data: Buffer, timeoutMs: number): Promise<void>;
}

let addon: VsockAddon | Error | undefined;

/** The native addon (native/vsock.c, native/sockdiag.c), built by `npm install` (node-gyp). */
export function loadAddon(): VsockAddon {
  if (addon === undefined) {
    const require = createRequire(import.meta.url);
    // From src/sinks/ under tsx, or from dist/src/sinks/ when compiled.
    const candidates = ['../../build/Release/vsock.node', '../../../build/Release/vsock.node'];
    const found = candidates.find((path) => existsSync(new URL(path, import.meta.url)));
    try {
      addon = require(found ?? candidates[0]!) as VsockAddon;
    } catch (error) {
      addon = new Error(
        `AF_VSOCK support is not built (${error instanceof Error ? error.message.split('\n')[0] ?? '' : String(error)}); ` +
          'run `npm install` on a machine with a C compiler, or use a TCP vtunnel peer (HOST:PORT)',
      );
    }
  }
  if (addon instanceof Error) throw addon;
  return addon;
}

/** Whether this build can speak AF_VSOCK; the CLI checks it at start-up. */
export function vsockAvailable(): Error | undefined {
  try {
    loadAddon();
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
  const native = loadAddon();
  return (line) => defer(() => from(native.send(cid, port, Buffer.from(line, 'utf8'), timeoutMs)));
}
