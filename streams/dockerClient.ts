import Docker from 'dockerode';
import { createInterface } from 'node:readline';
import { Observable } from 'rxjs';
import { abortable } from './abortable.js';
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
    listContainers: () => abortable((signal) => docker.listContainers({ abortSignal: signal }) as Promise<DockerContainerSummary[]>),
    inspect: (id) => abortable((signal) => docker.getContainer(id).inspect({ abortSignal: signal }) as Promise<DockerContainerInspect>),
  };
}

function destroy(stream: NodeJS.ReadableStream): void {
  (stream as NodeJS.ReadableStream & { destroy?: () => void }).destroy?.();
}
