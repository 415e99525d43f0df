import { defer, from, switchMap, type Observable } from 'rxjs';
import type { Logger } from '../src/log.js';
import type { ContainerdClient } from './containerd.js';

/** How `grpcContainerdClient` bounds its calls and logs. */
export interface GrpcContainerdClientOptions {
  /** Where it logs, through a child naming its module; without one it logs nothing. */
  readonly logger?: Logger | undefined;
  /** Deadline of each unary call (default 15 s), so a hung containerd cannot stall the stream. */
  readonly callTimeoutMs?: number | undefined;
  /** How long to wait for the subscription's marker to come back before giving up (default 10 s). */
  readonly markerTimeoutMs?: number | undefined;
}

/** The real containerd behind `ContainerdClient`, through grpc-js on containerd's unix socket. */
export interface GrpcContainerdClient extends ContainerdClient {
  /** Closes the gRPC channel (the agent never needs this; tests and benchmarks do). */
  close(): void;
}

/**
 * `grpcContainerdClient` as the package exports it: the same client, but grpc-js, proto-loader and
 * the vendored protos (together ~100 ms and several MB) load at the first call, not on import, so
 * a user who never reaches containerd never pays for them. The first call that fails to load them
 * errors like any other call, and the stream backs off and retries it.
 */
export function grpcContainerdClient(socketPath: string, opts: GrpcContainerdClientOptions = {}): GrpcContainerdClient {
  let real: Promise<GrpcContainerdClient> | undefined;
  let closed = false;
  const load = (): Promise<GrpcContainerdClient> =>
    (real ??= import('./containerdClient.js').then((m) => {
      const client = m.grpcContainerdClient(socketPath, opts);
      if (closed) client.close();
      return client;
    }));
  const via = <T>(call: (client: GrpcContainerdClient) => Observable<T>): Observable<T> => defer(() => from(load())).pipe(switchMap(call));
  return {
    events: () => via((c) => c.events()),
    namespaces: () => via((c) => c.namespaces()),
    tasks: (namespace) => via((c) => c.tasks(namespace)),
    container: (namespace, id) => via((c) => c.container(namespace, id)),
    networkConfig: (stateDir) => via((c) => c.networkConfig(stateDir)),
    close: () => {
      closed = true;
      void real?.then((c) => { c.close(); });
    },
  };
}
