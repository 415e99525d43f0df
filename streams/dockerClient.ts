import type Docker from 'dockerode';
import { createInterface } from 'node:readline';
import { defer, from, Observable, switchMap } from 'rxjs';
import { abortable } from './abortable.js';
import { moduleLogger, type Logger } from '../src/log.js';
import { EVENTS_OPEN, type DockerClient, type DockerContainerInspect, type DockerContainerSummary, type DockerEvent } from './docker.js';
import { dockerEventFilters, dockerSocketClient, dockerSocketFromEnv } from './dockerSocket.js';

/**
 * Where the engine is: a unix socket, or a TCP host and port (through dockerode). The subset of
 * dockerode's own options that portstream passes on, named here so that the package's types need
 * no @types.
 */
export interface DockerConnection {
  /** A unix socket path, e.g. `/var/run/docker.sock`. */
  readonly socketPath?: string | undefined;
  readonly host?: string | undefined;
  readonly port?: number | string | undefined;
  readonly protocol?: 'http' | 'https' | undefined;
  /** Milliseconds before a request without an answer fails: dockerode's own, used on TCP only (the docker stream bounds every request itself). */
  readonly timeout?: number | undefined;
}

/** Where `dockerodeClient` connects, and where it logs. */
export interface DockerodeClientOptions extends DockerConnection {
  /** Where it logs, through a child naming its module; without one it logs nothing. */
  readonly logger?: Logger | undefined;
}

/**
 * The real engine behind `DockerClient`. On a unix socket (`socketPath`, `DOCKER_HOST=unix://…`,
 * or no `DOCKER_HOST` at all) it speaks to dockerd with node:http alone (`dockerSocketClient`);
 * dockerode is loaded, at the first request, only for what needs it: a TCP host, TLS or
 * `DOCKER_HOST=tcp://…` / `ssh://…`.
 */
export function dockerodeClient(options: DockerodeClientOptions = {}): DockerClient {
  const { logger, ...connection } = options;
  const log = moduleLogger('docker', logger);
  const remote = connection.host !== undefined || connection.port !== undefined || connection.protocol !== undefined;
  if (!remote) {
    if (connection.socketPath !== undefined) return dockerSocketClient(connection.socketPath, log);
    if (dockerSocketFromEnv() !== undefined) return dockerSocketClient(() => dockerSocketFromEnv() ?? '/var/run/docker.sock', log);
  }
  let loading: Promise<Docker> | undefined;
  const withDocker = <T>(use: (docker: Docker) => Observable<T>): Observable<T> =>
    defer(() => from((loading ??= import('dockerode').then(({ default: Dockerode }) => new Dockerode(definedOnly(connection)))))).pipe(switchMap(use));
  return {
    events: () => withDocker((docker) => engineEvents(docker, log)),
    listContainers: () => withDocker((docker) => abortable((signal) => docker.listContainers({ abortSignal: signal }) as Promise<DockerContainerSummary[]>)),
    inspect: (id) => withDocker((docker) => abortable((signal) => docker.getContainer(id).inspect({ abortSignal: signal }) as Promise<DockerContainerInspect>)),
  };
}

/** dockerode reads `'socketPath' in options`, so keys set to undefined are left out. */
function definedOnly(options: DockerConnection): Docker.DockerOptions | undefined {
  const set = Object.entries(options).filter(([, v]) => v !== undefined);
  // With no options at all dockerode follows DOCKER_HOST; an empty object would not.
  return set.length === 0 ? undefined : Object.fromEntries(set);
}

function engineEvents(docker: Docker, log: Logger): Observable<typeof EVENTS_OPEN | DockerEvent> {
  return new Observable<typeof EVENTS_OPEN | DockerEvent>((subscriber) => {
    let stream: NodeJS.ReadableStream | undefined;
    let closed = false;
    // A dockerd that hangs before answering would otherwise keep this request open for good.
    const request = new AbortController();
    docker.getEvents({ filters: { type: [...dockerEventFilters.type], event: [...dockerEventFilters.event] }, abortSignal: request.signal }).then(
      (s) => {
        stream = s;
        if (closed) {
          destroy(s);
          return;
        }
        // Without an error listener a killed dockerd surfaces as an uncaught ECONNRESET.
        s.on('error', (err: Error) => { subscriber.error(err); });
        s.on('close', () => { subscriber.complete(); });
        subscriber.next(EVENTS_OPEN);
        const lines = createInterface({ input: s, crlfDelay: Infinity });
        lines.on('line', (line) => {
          if (line.trim() === '') return;
          try {
            subscriber.next(JSON.parse(line) as DockerEvent);
          } catch {
            log.warn({ line: line.slice(0, 200) }, 'ignoring a Docker event line that is not JSON');
          }
        });
        lines.on('close', () => { subscriber.complete(); });
        // readline re-raises an aborted response (dockerd killed) on itself; unhandled, that
        // would crash the agent with an uncaught ECONNRESET.
        lines.on('error', (err: Error) => { subscriber.error(err); });
      },
      (err: unknown) => { subscriber.error(err); },
    );
    return () => {
      closed = true;
      if (stream) destroy(stream);
      else request.abort();
    };
  });
}

function destroy(stream: NodeJS.ReadableStream): void {
  (stream as NodeJS.ReadableStream & { destroy?: () => void }).destroy?.();
}
