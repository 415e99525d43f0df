import {
  catchError,
  concatMap,
  concatWith,
  defer,
  EMPTY,
  from,
  map,
  mergeMap,
  Observable,
  of,
  throwError,
  toArray,
  type SchedulerLike,
} from 'rxjs';
import { moduleLogger, type Logger } from '../src/log.js';
import { remove, snapshot, upsert, type Forward, type SourceEvent } from '../src/model.js';
import { reconnectWithBackoff, retryLogLevel, type BackoffOptions } from '../operators/reconnectWithBackoff.js';
import type { Parsed } from './dockerPorts.js';
import { networkConfigFile, portsFromLabel, portsFromNetworkConfig, portsSourceOf } from './nerdctlPorts.js';
import { errorMessage } from '../src/errors.js';
import type { ConnectionReporter } from '../src/status/observer.js';

/** The event topics portstream follows, with the payload each carries (decoded from the envelope's `Any`). */
export type ContainerdEvent =
  | { readonly namespace: string; readonly topic: '/tasks/start'; readonly event: { readonly container_id: string } }
  | { readonly namespace: string; readonly topic: '/tasks/exit'; readonly event: { readonly container_id: string; readonly id: string } }
  | { readonly namespace: string; readonly topic: '/containers/update'; readonly event: { readonly id: string; readonly labels: Readonly<Record<string, string>> } }
  | { readonly namespace: string; readonly topic: '/containers/delete'; readonly event: { readonly id: string } };

/** The topic of an event portstream follows. */
export type ContainerdTopic = ContainerdEvent['topic'];
/** The topics `events()` subscribes to. */
export const containerdTopics: readonly ContainerdTopic[] = ['/tasks/start', '/tasks/exit', '/containers/update', '/containers/delete'];

/**
 * A task from `Tasks.List`: its container and whether it runs. containerd 1.6 fills in only `id`
 * (the container's ID) and leaves `container_id` empty; either one names the container.
 */
export interface ContainerdTask {
  readonly container_id: string;
  readonly id: string;
  readonly status: ContainerdTaskStatus;
}

/** A task's state, as containerd's `containerd.v1.types.Status` enum names it. */
export type ContainerdTaskStatus = 'UNKNOWN' | 'CREATED' | 'RUNNING' | 'STOPPED' | 'PAUSED' | 'PAUSING';
/** A container from `Containers.Get`: its labels are where nerdctl writes the ports. */
export interface ContainerdContainer {
  readonly id: string;
  readonly labels: Readonly<Record<string, string>>;
}

/** Emitted by `events()` once the subscription is known to be live, before any event it passes on. */
export const CONTAINERD_EVENTS_OPEN = Symbol('containerd events open');

/**
 * What the containerd stream needs of containerd. `events()` subscribes in every namespace, must
 * emit CONTAINERD_EVENTS_OPEN once the subscription is live, then each event, and error or
 * complete when the connection ends. `namespace` is sent as the `containerd-namespace` metadata.
 * `container` fails with gRPC code 5 (NOT_FOUND) for a container that is not there.
 * `networkConfig` reads `<stateDir>/network-config.json`: undefined when there is no such file.
 * `grpcContainerdClient` is the real one; tests script their own.
 */
export interface ContainerdClient {
  /** `Events.Subscribe` in every namespace: CONTAINERD_EVENTS_OPEN once live, then each event. */
  events(): Observable<typeof CONTAINERD_EVENTS_OPEN | ContainerdEvent>;
  /** `Namespaces.List`: every namespace's name, once. */
  namespaces(): Observable<readonly string[]>;
  /** `Tasks.List` in `namespace`, once. */
  tasks(namespace: string): Observable<readonly ContainerdTask[]>;
  /** `Containers.Get` of `id` in `namespace`, once; NOT_FOUND when it is gone. */
  container(namespace: string, id: string): Observable<ContainerdContainer>;
  /** `<stateDir>/network-config.json`'s text, once; undefined when there is no such file. */
  networkConfig(stateDir: string): Observable<string | undefined>;
}

/** How `containerdEvents` logs, backs off and scans. */
export interface ContainerdStreamOptions {
  /** Where it logs, through a child naming its module; without one it logs nothing. */
  readonly logger?: Logger | undefined;
  readonly backoff?: BackoffOptions | undefined;
  readonly scheduler?: SchedulerLike | undefined;
  /** How many `Containers.Get` calls the start-up scan keeps in flight (default 8). */
  readonly lookupConcurrency?: number | undefined;
  /** Told when the backend is reached and when it is lost (the agent's status, docs/status.md). */
  readonly connection?: ConnectionReporter | undefined;
}

/** A forward's owner: containerd's IDs are unique only within a namespace. */
export function ownerOf(namespace: string, containerId: string): string {
  return `${namespace}/${containerId}`;
}

/** Task states in which the container's network, and so its published ports, exists. */
const alive: ReadonlySet<string> = new Set(['RUNNING', 'PAUSED', 'PAUSING']);
const grpcNotFound = 5;

/**
 * containerd as a stream of source events, across every namespace. It subscribes to the events
 * first and lists only once the subscription is live, so nothing between the two is missed
 * (events that arrive during the list wait behind it). The list is the start-up scan: every
 * namespace, its running tasks, and each task's container for its labels. After the snapshot it
 * follows task starts and exits (an exec process exiting is not the container exiting), label
 * updates of running containers, and container deletions. Any end of the event stream (grpc-js
 * reports containerd going away as UNAVAILABLE or CANCELLED; a stream that just completes counts
 * too) is a reconnect with back-off and a fresh snapshot, so tasks that ended meanwhile drop out.
 * Owners are `namespace/id`.
 *
 *   containerd:  --O--[scan]--start(a)--exit(a, exec)--update(a)--exit(a)--X   X = containerd gone
 *   events:      ----------s-----u(a)--------------------u(a)-------r(a)-----(back-off)--s--...
 */
export function containerdEvents(client: ContainerdClient, opts: ContainerdStreamOptions = {}): Observable<SourceEvent> {
  const log = moduleLogger('containerd', opts.logger);
  const concurrency = opts.lookupConcurrency ?? 8;
  let connected = false;
  return defer(() => {
    // Owners whose task runs, as this connection has seen them: a label update matters only for those.
    const running = new Set<string>();
    const ctx: Ctx = { client, log, running };
    return client.events().pipe(
      concatWith(throwError(() => new Error('the event stream ended'))),
      concatMap((event) => {
        if (event === CONTAINERD_EVENTS_OPEN) {
          if (!connected) log.info('connected to containerd; scanning every namespace for running tasks');
          connected = true;
          opts.connection?.connected();
          return scan(ctx, concurrency);
        }
        return handle(ctx, event);
      }),
    );
  }).pipe(
    reconnectWithBackoff({
      ...opts.backoff,
      ...(opts.scheduler && { scheduler: opts.scheduler }),
      onRetry: (error, attempt, delayMs) => {
        const what = connected ? 'lost containerd' : 'cannot reach containerd';
        log[retryLogLevel(attempt)]({ attempt, delayMs }, `${what} (${errorMessage(error)}); reconnecting and re-listing in ${String(delayMs)} ms`);
        connected = false;
        opts.connection?.disconnected(error);
      },
    }),
  );
}

interface Ctx {
  readonly client: ContainerdClient;
  readonly log: Logger;
  readonly running: Set<string>;
}

/** The start-up scan (and every re-list): namespaces, then their live tasks, then each task's container. */
function scan(ctx: Ctx, concurrency: number): Observable<SourceEvent> {
  const { client } = ctx;
  return client.namespaces().pipe(
    concatMap((namespaces) => from(namespaces)),
    concatMap((namespace) =>
      client.tasks(namespace).pipe(
        concatMap((tasks) => from(tasks.filter((t) => alive.has(t.status)).map((t) => ({ namespace, id: t.container_id || t.id })))),
      ),
    ),
    mergeMap(
      ({ namespace, id }) =>
        client.container(namespace, id).pipe(
          mergeMap((container) => portsOf(ctx, namespace, id, container.labels)),
          map((forwards) => [ownerOf(namespace, id), forwards] as const),
          // a task whose container is gone by now is not running any more
          catchError((error: unknown) => (grpcCode(error) === grpcNotFound ? EMPTY : throwError(() => error))),
        ),
      concurrency,
    ),
    toArray(),
    map((entries) => {
      const sorted = [...entries].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
      ctx.running.clear();
      for (const [owner] of sorted) ctx.running.add(owner);
      return snapshot(sorted);
    }),
  );
}

function handle(ctx: Ctx, e: ContainerdEvent): Observable<SourceEvent> {
  const { running, log } = ctx;
  switch (e.topic) {
    case '/tasks/start': {
      const id = e.event.container_id;
      const owner = ownerOf(e.namespace, id);
      running.add(owner);
      return ctx.client.container(e.namespace, id).pipe(
        mergeMap((container) => portsOf(ctx, e.namespace, id, container.labels)),
        map((forwards) => upsert(owner, forwards)),
        catchError((error: unknown) => {
          if (grpcCode(error) === grpcNotFound) {
            running.delete(owner);
            return of(remove(owner));
          }
          // Not the container's fault (containerd slow, or going away): reconnect and re-list, so
          // its ports are not missing until its next event.
          return throwError(() => new Error(`cannot look up container ${name(e.namespace, id)} after its task started (${errorMessage(error)})`, { cause: error }));
        }),
      );
    }
    case '/tasks/exit': {
      const { container_id: id, id: execId } = e.event;
      if (execId !== '' && execId !== id) {
        log.debug({ container: id, namespace: e.namespace, exec: execId }, 'an exec process exited; the task still runs');
        return EMPTY;
      }
      running.delete(ownerOf(e.namespace, id));
      return of(remove(ownerOf(e.namespace, id)));
    }
    case '/containers/update': {
      const owner = ownerOf(e.namespace, e.event.id);
      // a container without a running task publishes nothing, whatever its labels say
      if (!running.has(owner)) return EMPTY;
      return portsOf(ctx, e.namespace, e.event.id, e.event.labels).pipe(map((forwards) => upsert(owner, forwards)));
    }
    case '/containers/delete': {
      const owner = ownerOf(e.namespace, e.event.id);
      running.delete(owner);
      return of(remove(owner));
    }
  }
}

/**
 * A container's forwards from its labels: `nerdctl/ports`, else the state directory's
 * network-config.json. What cannot be understood earns one log line naming the container and
 * its namespace; the rest still counts.
 */
function portsOf(ctx: Ctx, namespace: string, id: string, labels: Readonly<Record<string, string>>): Observable<readonly Forward[]> {
  const owner = ownerOf(namespace, id);
  const source = portsSourceOf(labels);
  switch (source.kind) {
    case 'none':
      return of([]);
    case 'label':
      return of(logProblems(ctx.log, namespace, id, portsFromLabel(owner, source.json)));
    case 'state-dir':
      return ctx.client.networkConfig(source.dir).pipe(
        map((text) => (text === undefined ? [] : logProblems(ctx.log, namespace, id, portsFromNetworkConfig(owner, text)))),
        catchError((error: unknown) =>
          of(logProblems(ctx.log, namespace, id, { forwards: [], problems: [`cannot read ${source.dir}/${networkConfigFile} (${errorMessage(error)})`] })),
        ),
      );
  }
}

function logProblems(log: Logger, namespace: string, id: string, parsed: Parsed): readonly Forward[] {
  if (parsed.problems.length > 0) {
    const n = parsed.forwards.length;
    const rest = n === 0 ? 'it has no valid ports to forward' : `forwarding its ${String(n)} valid port${n === 1 ? '' : 's'}`;
    log.warn({ container: id, namespace }, `container ${name(namespace, id)}: ${parsed.problems.join('; ')}; ${rest}`);
  }
  return parsed.forwards;
}

/** `id in namespace ns`, with a 64-hex ID shortened the way docker and nerdctl show them. */
function name(namespace: string, id: string): string {
  const short = /^[0-9a-f]{64}$/.test(id) ? id.slice(0, 12) : id;
  return `${short} in namespace ${namespace}`;
}

function grpcCode(error: unknown): number | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'number' ? code : undefined;
}

