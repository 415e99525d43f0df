import Docker from 'dockerode';
import { createInterface } from 'node:readline';
import { Observable } from 'rxjs';
import { moduleLogger, type Logger } from '../src/log.js';
import { EVENTS_OPEN, type DockerClient, type DockerContainerInspect, type DockerContainerSummary, type DockerEvent } from './docker.js';

const eventFilters = { type: ['container' as const], event: ['start', 'die', 'stop', 'destroy'] };

/**
 * The real engine behind `DockerClient`, through dockerode. Without options dockerode follows
 * `DOCKER_HOST`, else `/var/run/docker.sock`.
 */
export function dockerodeClient(options?: Docker.DockerOptions, log: Logger = moduleLogger('docker')): DockerClient {
  const docker = new Docker(options);
  return {
    events: () =>
      new Observable<typeof EVENTS_OPEN | DockerEvent>((subscriber) => {
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
      }),
    listContainers: () => abortable((abortSignal) => docker.listContainers({ abortSignal }) as Promise<DockerContainerSummary[]>),
    inspect: (id) => abortable((abortSignal) => docker.getContainer(id).inspect({ abortSignal }) as Promise<DockerContainerInspect>),
  };
}

/**
 * One request as an Observable. Unsubscribing before the answer (the stream's timeout, a
 * reconnect) aborts the HTTP request, so a hung dockerd does not collect a request per attempt.
 */
function abortable<T>(call: (abortSignal: AbortSignal) => Promise<T>): Observable<T> {
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

function destroy(stream: NodeJS.ReadableStream): void {
  (stream as NodeJS.ReadableStream & { destroy?: () => void }).destroy?.();
}
