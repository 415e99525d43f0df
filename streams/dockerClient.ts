import type Docker from 'dockerode';
import http from 'node:http';
import { createInterface } from 'node:readline';
import { defer, from, Observable, switchMap } from 'rxjs';
import { abortable } from './abortable.js';
import { moduleLogger, type Logger } from '../src/log.js';
import { EVENTS_OPEN, type DockerClient, type DockerContainerInspect, type DockerContainerSummary, type DockerEvent } from './docker.js';

const eventFilters = { type: ['container' as const], event: ['start', 'die', 'stop', 'destroy'] };

/**
 * Where dockerode connects: a unix socket, or a TCP host and port. The subset of dockerode's own
 * options that portstream passes on, named here so that the package's types need no @types.
 */
export interface DockerConnection {
  /** A unix socket path, e.g. `/var/run/docker.sock`. */
  readonly socketPath?: string | undefined;
  readonly host?: string | undefined;
  readonly port?: number | string | undefined;
  readonly protocol?: 'http' | 'https' | undefined;
  /** Milliseconds before a request without an answer fails (dockerode's own, beside ours). */
  readonly timeout?: number | undefined;
}

/** Where `dockerodeClient` connects, and where it logs. */
export interface DockerodeClientOptions extends DockerConnection {
  /** Where it logs, through a child naming its module; without one it logs nothing. */
  readonly logger?: Logger | undefined;
}

/**
 * The real engine behind `DockerClient`, through dockerode. Without options dockerode follows
 * `DOCKER_HOST`, else `/var/run/docker.sock`. dockerode (with ssh2) takes ~100 ms to import, so it
 * is loaded at the first request, not with this module.
 */
export function dockerodeClient(options: DockerodeClientOptions = {}): DockerClient {
  const { logger, ...connection } = options;
  const log = moduleLogger('docker', logger);
  let loading: Promise<Engine> | undefined;
  let loaded: Engine | undefined;
  // Once loaded, the engine is used as it is: a promise would put a microtask hop on every request.
  const withEngine = <T>(use: (engine: Engine) => Observable<T>): Observable<T> =>
    defer(() =>
      loaded
        ? use(loaded)
        : from((loading ??= import('dockerode').then(async ({ default: Docker }) => (loaded = await engineOf(new Docker(definedOnly(connection))))))).pipe(switchMap(use)),
    );
  return {
    events: () => withEngine(({ docker }) => engineEvents(docker, log)),
    listContainers: () =>
      withEngine(({ docker, get }) => (get ? get<DockerContainerSummary[]>('/containers/json') : abortable((signal) => docker.listContainers({ abortSignal: signal }) as Promise<DockerContainerSummary[]>))),
    inspect: (id) =>
      withEngine(({ docker, get }) => {
        const path = `/containers/${encodeURIComponent(id)}/json`;
        return get ? get<DockerContainerInspect>(path) : abortable((signal) => docker.getContainer(id).inspect({ abortSignal: signal }) as Promise<DockerContainerInspect>);
      }),
  };
}

/** dockerode, and a direct GET on its unix socket when it has one (see `unixGetter`). */
interface Engine {
  readonly docker: Docker;
  readonly get: (<T>(path: string) => Observable<T>) | undefined;
}

/**
 * With no socket named (no options, no `DOCKER_HOST`), docker-modem's `socketPath` is not a string
 * but a function that resolves the default one (`~/.docker/run/docker.sock` if it exists, else
 * `/var/run/docker.sock`); it is resolved here once, so the direct GETs serve that case too.
 */
async function engineOf(docker: Docker): Promise<Engine> {
  const configured = (docker.modem as { socketPath?: unknown }).socketPath;
  const socketPath: unknown = typeof configured === 'function' ? await (configured as () => unknown)() : configured;
  return { docker, get: typeof socketPath === 'string' ? unixGetter(socketPath) : undefined };
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
    docker.getEvents({ filters: eventFilters, abortSignal: request.signal }).then(
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

/** Bound on one reply: a list of thousands of containers is a few MiB. */
const maxReplyBytes = 64 * 1024 * 1024;

/**
 * GET on dockerd's unix socket over kept-alive connections, as an Observable: one value, the
 * parsed reply; unsubscribing before it destroys the request. The inspect after a start is on the
 * add path, where every step counts: docker-modem formats each request's options with
 * util.inspect (even with its debug output off), and an AbortController and a promise per request
 * cost more than the request's own `destroy`. A failure carries the HTTP status as `statusCode`,
 * as dockerode's do.
 */
function unixGetter(socketPath: string): <T>(path: string) => Observable<T> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
  return <T>(path: string) =>
    new Observable<T>((subscriber) => {
      let settled = false;
      const fail = (error: Error): void => {
        settled = true;
        subscriber.error(error);
      };
      const request = http.get({ socketPath, path, agent, headers: { accept: 'application/json' } }, (response) => {
        const chunks: Buffer[] = [];
        let size = 0;
        response.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > maxReplyBytes) request.destroy(new Error(`dockerd's reply to GET ${path} is over ${String(maxReplyBytes)} bytes`));
          else chunks.push(chunk);
        });
        response.on('error', fail);
        response.on('end', () => {
          const body = Buffer.concat(chunks).toString('utf8');
          const status = response.statusCode ?? 0;
          if (status !== 200) {
            fail(Object.assign(new Error(`dockerd answered ${String(status)} to GET ${path}: ${body.trim().slice(0, 200)}`), { statusCode: status }));
            return;
          }
          let value: T;
          try {
            value = JSON.parse(body) as T;
          } catch (error: unknown) {
            fail(error instanceof Error ? error : new Error(String(error)));
            return;
          }
          settled = true;
          subscriber.next(value);
          subscriber.complete();
        });
      });
      request.on('error', fail);
      return () => {
        if (!settled) request.destroy();
      };
    });
}

function destroy(stream: NodeJS.ReadableStream): void {
  (stream as NodeJS.ReadableStream & { destroy?: () => void }).destroy?.();
}
