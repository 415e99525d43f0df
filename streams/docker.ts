import {
  asyncScheduler,
  catchError,
  concat,
  concatMap,
  concatWith,
  connect,
  defaultIfEmpty,
  defer,
  EMPTY,
  filter,
  from,
  ignoreElements,
  map,
  merge,
  mergeMap,
  Observable,
  of,
  ReplaySubject,
  share,
  Subject,
  switchMap,
  take,
  tap,
  throwError,
  timeout,
  type MonoTypeOperatorFunction,
  type SchedulerLike,
} from 'rxjs';
import { moduleLogger, type Logger } from '../src/log.js';
import { remove, snapshot, upsert, type Forward, type SourceEvent } from '../src/model.js';
import { reconnectWithBackoff, retryLogLevel, type BackoffOptions } from '../operators/reconnectWithBackoff.js';
import { portsFromInspect, portsFromList, type InspectPorts, type ListPort, type Parsed } from './dockerPorts.js';
import { StartPredictor, type BindingsInspect } from './dockerPredict.js';
import { errorMessage } from '../src/errors.js';
import { ioPolled } from '../src/ioPolled.js';
import type { ConnectionReporter } from '../src/status/observer.js';

/** The slice of a Docker event that portstream reads. */
export interface DockerEvent {
  readonly Type?: string;
  readonly Action?: string;
  readonly Actor?: { readonly ID?: string };
  readonly id?: string;
  readonly timeNano?: number;
}

/** The slice of an entry of Docker's container list that portstream reads. */
export interface DockerContainerSummary {
  readonly Id: string;
  readonly Ports?: readonly ListPort[] | null;
}

/** The slice of a container inspect that portstream reads. */
export interface DockerContainerInspect extends BindingsInspect {
  readonly Id: string;
  readonly State?: { readonly Running?: boolean };
  readonly NetworkSettings?: { readonly Ports?: InspectPorts | null };
}

/** Emitted by `events()` once the event stream is open, before any event. */
export const EVENTS_OPEN = Symbol('docker events open');

/**
 * What the docker stream needs of an engine. `events()` must emit EVENTS_OPEN once subscribed
 * for real, then each event, and error or complete when the connection ends. `dockerodeClient`
 * is the real one; tests script their own.
 */
export interface DockerClient {
  /** `GET /events` for container creates, starts and stops: EVENTS_OPEN once open, then each event. */
  events(): Observable<typeof EVENTS_OPEN | DockerEvent>;
  /** `GET /containers/json`: the running containers, once. */
  listContainers(): Observable<readonly DockerContainerSummary[]>;
  /** `GET /containers/ID/json`: one container, once; errors when it is gone. */
  inspect(id: string): Observable<DockerContainerInspect>;
}

/** How `dockerEvents` logs, backs off and bounds its requests. */
export interface DockerStreamOptions {
  /** Where it logs, through a child naming its module; without one it logs nothing. */
  readonly logger?: Logger | undefined;
  readonly backoff?: BackoffOptions | undefined;
  /** Bound on one list or inspect: a hung engine is treated as a lost one (reconnect, re-list). */
  readonly requestTimeoutMs?: number | undefined;
  readonly scheduler?: SchedulerLike | undefined;
  /** Told when the backend is reached and when it is lost (the agent's status, docs/status.md). */
  readonly connection?: ConnectionReporter | undefined;
  /**
   * What the inspect that confirms a predicted start waits for first (its first value): by
   * default `ioPolled`, so that the messages carrying the predicted ports leave before the
   * inspect's request is built. Tests pass a timer in virtual time.
   */
  readonly confirmAfter?: (() => Observable<unknown>) | undefined;
}

/** The values `dockerEvents` uses for the options left out. */
export const dockerDefaults = { requestTimeoutMs: 15_000 } as const;

const removals: ReadonlySet<string> = new Set(['die', 'stop', 'destroy']);

/**
 * The Docker engine as a stream of source events. It opens the event stream before listing so
 * that nothing between the two is missed (events that arrive during the list wait behind it),
 * emits a snapshot from the list, then one event per container change. Any end of the
 * connection is a reconnect with back-off, and so is a list or inspect that fails, or an event
 * stream, list or inspect that gets no answer within `requestTimeoutMs` (the request is then
 * aborted); every reconnect starts with a fresh snapshot, so containers that died meanwhile drop
 * out and none that started is missed.
 *
 *   engine:  --O--[list]--start(c1)--die(c1)--X   O = events open, X = dockerd gone
 *   events:  ----------s-----u(c1)-----r(c1)-----(back-off)--s--...
 */
export function dockerEvents(client: DockerClient, opts: DockerStreamOptions = {}): Observable<SourceEvent> {
  const log = moduleLogger('docker', opts.logger);
  const scheduler = opts.scheduler ?? asyncScheduler;
  const bounded = boundedBy(opts.requestTimeoutMs ?? dockerDefaults.requestTimeoutMs, scheduler);
  const confirmAfter = opts.confirmAfter ?? ioPolled;
  let connected = false;
  return defer(() => {
    // per connection: a restarted engine may expand host IPs differently
    const handling: Handling = { log, bounded, predictor: new StartPredictor(), creating: new Map(), confirmAfter, listed: new Subject() };
    return client.events().pipe(
      bounded('the event stream'), // to open; events themselves may be hours apart
      concatWith(throwError(() => new Error('the event stream ended'))),
      connect((events) =>
        merge(
          events.pipe(
            concatMap((event) => {
              if (event !== EVENTS_OPEN) return handle(client, event, handling);
              if (!connected) log.info('connected to the Docker engine; listing containers');
              connected = true;
              opts.connection?.connected();
              return listAll(client, handling);
            }),
          ),
          // what the containers already running say about this engine, read after each list
          handling.listed.pipe(switchMap((containers) => learnFromRunning(client, containers, handling))),
          // beside the ordered handling, so that a create's inspect never holds up another start
          events.pipe(
            filter((event): event is DockerEvent => event !== EVENTS_OPEN && event.Action === 'create'),
            mergeMap((event) => rememberCreated(client, event, handling), 4),
          ),
        ),
      ),
    );
  }).pipe(
    reconnectWithBackoff({
      ...opts.backoff,
      ...(opts.scheduler && { scheduler: opts.scheduler }),
      onRetry: (error, attempt, delayMs) => {
        const what = connected ? 'lost the Docker engine' : 'cannot reach the Docker engine';
        log[retryLogLevel(attempt)]({ attempt, delayMs }, `${what} (${errorMessage(error)}); reconnecting and re-listing in ${String(delayMs)} ms`);
        connected = false;
        opts.connection?.disconnected(error);
      },
    }),
  );
}

type Bound = <T>(what: string) => MonoTypeOperatorFunction<T>;

/** A request that gets no answer within `ms` fails, naming what it was waiting for. */
function boundedBy(ms: number, scheduler: SchedulerLike): Bound {
  return (what) =>
    timeout({ first: ms, scheduler, with: () => throwError(() => new Error(`no answer to ${what} within ${String(ms)} ms`)) });
}

function listAll(client: DockerClient, h: Handling): Observable<SourceEvent> {
  return client.listContainers().pipe(
    h.bounded('the container list'),
    tap((containers) => {
      h.listed.next(containers);
    }),
    map((containers) => snapshot(containers.map((c) => [c.Id, logProblems(h.log, c.Id, portsFromList(c.Id, c.Ports))] as const))),
  );
}

/** How many of the containers running at connect are inspected to learn from. */
const learnedAtConnect = 4;

/**
 * Learns from a few containers already running how this engine expands the host IPs they asked
 * for, so that the first start after connecting is published at its event too, and a restart of
 * any of them. Beside the ordered handling, one inspect after another; a failure only means that
 * less is learned.
 */
function learnFromRunning(client: DockerClient, containers: readonly DockerContainerSummary[], h: Handling): Observable<never> {
  const published = containers.filter((c) => c.Ports?.some((p) => p.PublicPort !== undefined) === true).slice(0, learnedAtConnect);
  return from(published).pipe(
    concatMap((c) =>
      client.inspect(c.Id).pipe(
        h.bounded(`the inspect of running container ${c.Id.slice(0, 12)}`),
        tap((inspect) => {
          h.predictor.learn(c.Id, inspect);
        }),
        catchError((error: unknown) => {
          h.log.debug({ container: c.Id }, `cannot inspect running container ${c.Id.slice(0, 12)} to learn from (${errorMessage(error)})`);
          return EMPTY;
        }),
      ),
    ),
    ignoreElements(),
  );
}

/** What handling one event needs besides the client. */
interface Handling {
  readonly log: Logger;
  readonly bounded: Bound;
  readonly predictor: StartPredictor;
  /** The inspects of new containers still on their way, by container. */
  readonly creating: Map<string, Observable<DockerContainerInspect>>;
  readonly confirmAfter: () => Observable<unknown>;
  /** Each container list, for `learnFromRunning`. */
  readonly listed: Subject<readonly DockerContainerSummary[]>;
}

function handle(client: DockerClient, event: DockerEvent, h: Handling): Observable<SourceEvent> {
  if (event.Action === 'create') return EMPTY; // read beside this, by rememberCreated
  const id = containerId(event, h.log);
  if (id === undefined) return EMPTY;
  if (event.Action === 'destroy') h.predictor.forget(id);
  if (removals.has(event.Action ?? '')) return of(remove(id));
  if (event.Action !== 'start') return EMPTY;
  const predicted = h.predictor.predict(id);
  // Made when it is needed: for a predicted start, only after its ports have left.
  const confirmed = (): Observable<SourceEvent> => startInspect(client, id, h).pipe(
    tap((c) => {
      h.predictor.learn(id, c);
    }),
    map((c) =>
      c.State?.Running === false
        ? remove(id) // it died again before we looked: its die event follows or already passed
        : upsert(id, logProblems(h.log, id, portsFromInspect(id, c.NetworkSettings?.Ports))),
    ),
    catchError((error: unknown) => {
      if (statusCode(error) === 404) return of(remove(id));
      // Not the container's fault, and its ports must not go missing: treat it as a lost
      // connection, whose reconnect re-lists every container, this one included.
      return throwError(() => new Error(`cannot inspect container ${id.slice(0, 12)} after its start (${errorMessage(error)})`));
    }),
  );
  if (!predicted) return confirmed();
  // Published now, from what it asked for at create; the inspect confirms it (then the diff
  // downstream sends nothing more) or corrects it.
  const first = portsFromInspect(id, predicted).forwards;
  return concat(
    of(upsert(id, first)),
    h.confirmAfter().pipe(
      take(1),
      concatMap(confirmed),
      tap((e) => {
        if (e.type === 'upsert' && !sameForwards(first, e.forwards)) h.log.info({ container: id }, `container ${id.slice(0, 12)}: its ports differed from those predicted at its start; corrected`);
      }),
    ),
  );
}

/**
 * The inspect of a container that has just started. When the inspect made at its create is still
 * on its way, that one: dockerd holds a container while starting it, so an inspect that reached
 * it after the start began is answered once the container runs, about when the start event
 * arrives, and a new request would only wait longer. An answer from before the start (not
 * running yet) or a failure means asking again.
 */
function startInspect(client: DockerClient, id: string, h: Handling): Observable<DockerContainerInspect> {
  const again = defer(() => client.inspect(id).pipe(h.bounded(`the inspect of container ${id.slice(0, 12)}`)));
  const creating = h.creating.get(id);
  if (!creating) return again;
  return creating.pipe(
    catchError(() => of(undefined)),
    defaultIfEmpty(undefined),
    concatMap((c) => (c?.State?.Running === true ? of(c) : again)),
  );
}

/**
 * Reads a new container's asked-for bindings, so that its start can publish them at once. Any
 * failure only means no prediction: the start's own inspect still reads the ports.
 */
function rememberCreated(client: DockerClient, event: DockerEvent, h: Handling): Observable<never> {
  const id = containerId(event, h.log);
  if (id === undefined) return EMPTY;
  const inspect = client.inspect(id).pipe(
    h.bounded(`the inspect of new container ${id.slice(0, 12)}`),
    tap({
      next: (c) => {
        h.predictor.remember(id, c);
      },
      finalize: () => h.creating.delete(id),
    }),
    // Shared with the start when it comes before the answer, even between the answer and the
    // request's end; `finalize` above forgets it only after that.
    share({ connector: () => new ReplaySubject<DockerContainerInspect>(1), resetOnComplete: false, resetOnRefCountZero: true }),
  );
  h.creating.set(id, inspect);
  return inspect.pipe(
    ignoreElements(),
    catchError((error: unknown) => {
      h.log.debug({ container: id }, `cannot inspect new container ${id.slice(0, 12)} (${errorMessage(error)}); its start will wait for its own inspect`);
      return EMPTY;
    }),
  );
}

function containerId(event: DockerEvent, log: Logger): string | undefined {
  if (event.Type !== undefined && event.Type !== 'container') return undefined;
  const id = event.Actor?.ID ?? event.id;
  if (typeof id === 'string' && id !== '') return id;
  log.warn({ event }, 'ignoring a Docker event without a container ID');
  return undefined;
}

function sameForwards(a: readonly Forward[], b: readonly Forward[]): boolean {
  const key = (f: Forward): string => `${f.protocol} ${f.hostIp} ${String(f.hostPort)} ${String(f.containerPort)}`;
  const keys = new Set(a.map(key));
  return a.length === b.length && b.every((f) => keys.has(key(f)));
}

function logProblems(log: Logger, id: string, parsed: Parsed): readonly Forward[] {
  for (const problem of parsed.problems) log.warn({ container: id }, `container ${id.slice(0, 12)}: ${problem}; skipping that port`);
  return parsed.forwards;
}

function statusCode(error: unknown): number | undefined {
  const code = (error as { statusCode?: unknown } | null)?.statusCode;
  return typeof code === 'number' ? code : undefined;
}


