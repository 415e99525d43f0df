import { existsSync } from 'node:fs';
import http from 'node:http';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { Observable } from 'rxjs';
import type { Logger } from '../src/log.js';
import { EVENTS_OPEN, type DockerClient, type DockerContainerInspect, type DockerContainerSummary, type DockerEvent } from './docker.js';

/** The events the docker stream acts on; dockerd sends no others. */
export const dockerEventFilters = { type: ['container'], event: ['create', 'start', 'die', 'stop', 'destroy'] } as const;

/** Bound on one reply: a list of thousands of containers is a few MiB. */
const maxReplyBytes = 64 * 1024 * 1024;

/**
 * The unix socket to reach dockerd on, as the Docker CLI and dockerode find it: `DOCKER_HOST`
 * when it is `unix://PATH`; without `DOCKER_HOST`, `~/.docker/run/docker.sock` when it exists
 * (Docker Desktop's per-user socket), else `/var/run/docker.sock`. Undefined for any other
 * `DOCKER_HOST` (tcp://, ssh://, ...), which only dockerode speaks.
 */
export function dockerSocketFromEnv(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const host = env['DOCKER_HOST'];
  if (host === undefined || host === '' || host === 'unix://') {
    const user = join(homedir(), '.docker', 'run', 'docker.sock');
    return existsSync(user) ? user : '/var/run/docker.sock';
  }
  return host.startsWith('unix://') ? host.slice('unix://'.length) : undefined;
}

/**
 * `DockerClient` on dockerd's unix socket with node:http alone. This is the common case (a VM's
 * own dockerd), and it keeps dockerode off it: dockerode loads docker-modem, gRPC and protobufjs
 * for features portstream never uses, 20 MB of resident memory and 170 ms of start-up, and
 * docker-modem formats every request's options with util.inspect, on the add path. `socketPath`
 * is asked again for each event stream, so a socket that appears later (Docker Desktop's) is found.
 *
 * GETs share a few kept-alive connections; the event stream has one of its own. Unsubscribing
 * destroys a request still running. A reply other than 200 fails with the status as `statusCode`,
 * as dockerode's failures carry it.
 */
export function dockerSocketClient(socketPath: string | (() => string), log: Logger): DockerClient {
  const pathOf = typeof socketPath === 'string' ? () => socketPath : socketPath;
  let socket = pathOf();
  const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
  return {
    events: () => {
      const now = pathOf();
      if (now !== socket) agent.destroy(); // its kept-alive connections go to the old socket
      socket = now;
      return socketEvents(socket, log);
    },
    listContainers: () => socketGet<DockerContainerSummary[]>(socket, '/containers/json', agent),
    inspect: (id) => socketGet<DockerContainerInspect>(socket, `/containers/${encodeURIComponent(id)}/json`, agent),
  };
}

/** One GET: one value, the parsed reply. No promise: the inspect is on the add path. */
function socketGet<T>(socketPath: string, path: string, agent: http.Agent): Observable<T> {
  return new Observable<T>((subscriber) => {
    let settled = false;
    const fail = (error: unknown): void => {
      settled = true;
      subscriber.error(error);
    };
    const request = http.get({ socketPath, path, agent, headers: { accept: 'application/json' } }, (response) => {
      readReply(response, path, request, (error, body) => {
        if (error !== undefined) {
          fail(error);
          return;
        }
        let value: T;
        try {
          value = JSON.parse(body) as T;
        } catch (parseError: unknown) {
          fail(parseError);
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

/**
 * Calls `done` with the whole body of a reply, or with its failure: a status other than 200 (with
 * `statusCode`), an aborted reply, or one over `maxReplyBytes` (which also ends the request).
 */
function readReply(response: http.IncomingMessage, path: string, request: http.ClientRequest, done: (error: Error | undefined, body: string) => void): void {
  const chunks: Buffer[] = [];
  let size = 0;
  response.on('data', (chunk: Buffer) => {
    size += chunk.length;
    if (size > maxReplyBytes) request.destroy(new Error(`dockerd's reply to GET ${path} is over ${String(maxReplyBytes)} bytes`));
    else chunks.push(chunk);
  });
  response.on('error', (error) => { done(error, ''); });
  response.on('end', () => {
    const body = Buffer.concat(chunks).toString('utf8');
    const status = response.statusCode ?? 0;
    if (status === 200) done(undefined, body);
    else done(Object.assign(new Error(`dockerd answered ${String(status)} to GET ${path}: ${body.trim().slice(0, 200)}`), { statusCode: status }), body);
  });
}

/**
 * `GET /events` on its own connection: EVENTS_OPEN once dockerd has answered 200, then each event
 * (one JSON object a line). The stream's end is a completion, a reset or other status an error.
 * A line that is not JSON is logged and skipped.
 */
function socketEvents(socketPath: string, log: Logger): Observable<typeof EVENTS_OPEN | DockerEvent> {
  return new Observable<typeof EVENTS_OPEN | DockerEvent>((subscriber) => {
    const path = `/events?filters=${encodeURIComponent(JSON.stringify(dockerEventFilters))}`;
    const request = http.get({ socketPath, path, agent: false, headers: { accept: 'application/json' } }, (response) => {
      if (response.statusCode !== 200) {
        readReply(response, '/events', request, (error) => { subscriber.error(error); });
        return;
      }
      subscriber.next(EVENTS_OPEN);
      response.setEncoding('utf8');
      let buffered = '';
      response.on('data', (chunk: string) => {
        buffered += chunk;
        for (let end = buffered.indexOf('\n'); end >= 0; end = buffered.indexOf('\n')) {
          const line = buffered.slice(0, end).trim();
          buffered = buffered.slice(end + 1);
          if (line !== '') emitEvent(line, subscriber, log);
        }
      });
      response.on('error', (error) => { subscriber.error(error); });
      response.on('end', () => { subscriber.complete(); });
      response.on('close', () => { subscriber.complete(); }); // after an error this is a no-op
    });
    request.on('error', (error) => { subscriber.error(error); });
    return () => {
      request.destroy();
    };
  });
}

function emitEvent(line: string, subscriber: { next(event: DockerEvent): void }, log: Logger): void {
  let event: unknown;
  try {
    event = JSON.parse(line);
  } catch {
    log.warn({ line: line.slice(0, 200) }, 'ignoring a Docker event line that is not JSON');
    return;
  }
  if (typeof event === 'object' && event !== null && !Array.isArray(event)) subscriber.next(event);
  else log.warn({ line: line.slice(0, 200) }, 'ignoring a Docker event line that is not a JSON object');
}
