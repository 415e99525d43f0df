import {
  concat,
  concatMap,
  concatWith,
  defer,
  EMPTY,
  merge,
  Observable,
  of,
  startWith,
  switchMap,
  take,
  throwError,
  throwIfEmpty,
  timeout,
  timer,
  type SchedulerLike,
} from 'rxjs';
import { moduleLogger, type Logger } from '../src/log.js';
import { remove, snapshot, upsert, type Forward, type SourceEvent } from '../src/model.js';
import { reconnectWithBackoff, retryLogLevel, type BackoffOptions } from '../operators/reconnectWithBackoff.js';
import { apiServerForward, apiServerOwner, forwardsOfService, serviceName, type KubeService } from './kubeServices.js';
import { errorMessage } from '../src/errors.js';
import type { ConnectionReporter } from '../src/status/observer.js';

/** A `v1.ServiceList` as `GET /api/v1/services` returns it. */
export interface KubeServiceList {
  readonly metadata?: { readonly resourceVersion?: string } | null;
  readonly items?: readonly KubeService[] | null;
}

/** A `v1.Status`, as a watch `ERROR` event carries it (`code: 410, reason: "Expired"` for a too-old version). */
export interface KubeStatus {
  readonly kind?: string;
  readonly status?: string;
  readonly message?: string;
  readonly reason?: string;
  readonly code?: number;
}

/** One line of a watch: `{"type":"ADDED","object":{...}}`. A BOOKMARK's object carries only a resourceVersion. */
export type KubeWatchEvent =
  | { readonly type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK'; readonly object: KubeService }
  | { readonly type: 'ERROR'; readonly object: KubeStatus };

/**
 * What the kubernetes stream needs of an API server. `kubeServicesClient` (kubernetesClient.ts)
 * is the real one; tests script their own.
 */
export interface KubeServicesClient {
  /** `GET /api/v1/services`: every Service in every namespace; emits the list once, or errors. */
  listServices(): Observable<KubeServiceList>;
  /**
   * `GET /api/v1/services?watch=true&resourceVersion=RV`: each event after `resourceVersion`;
   * completes when the server ends the watch, errors when the connection fails.
   */
  watchServices(resourceVersion: string): Observable<KubeWatchEvent>;
}

/** How `kubernetesServices` publishes Services and bounds its requests. */
export interface KubernetesStreamOptions {
  /** The host IP of every forward: `-k8sServiceListenerAddr` (`0.0.0.0` or `127.0.0.1`). */
  readonly listenerAddr: string;
  /** `-k8sAPIPort`: forwarded (TCP) from the start as the owner `kubernetes/apiserver`. Leave out for none. */
  readonly apiPort?: number | undefined;
  /** Where it logs, through a child naming its module; without one it logs nothing. */
  readonly logger?: Logger | undefined;
  readonly backoff?: BackoffOptions | undefined;
  readonly scheduler?: SchedulerLike | undefined;
  /** A list that has not answered by then counts as a failed connection. Default 30 s. */
  readonly listTimeoutMs?: number | undefined;
  /**
   * A watch is cut and the Services re-listed after this long, in case the server's own
   * `timeoutSeconds` never arrives (a half-open connection). Default 15 min.
   */
  readonly maxWatchMs?: number | undefined;
  /** Told when the backend is reached and when it is lost (the agent's status, docs/status.md). */
  readonly connection?: ConnectionReporter | undefined;
}

/** The default bound on a Service list, in ms. */
const defaultListTimeoutMs = 30_000;
/** The default longest life of one watch, in ms. */
const defaultMaxWatchMs = 15 * 60_000;

/** A watch `ERROR` event, or an HTTP error status on the watch or the list. */
export class KubeStatusError extends Error {
  constructor(readonly status: KubeStatus) {
    super(`${String(status.code ?? '?')} ${status.reason ?? ''}: ${status.message ?? 'no message'}`.replace(/ +:/, ':'));
    this.name = 'KubeStatusError';
  }
}

/** The server ended the watch (its timeout, a restart): routine, so it is logged at debug level. */
class WatchEnded extends Error {}

/**
 * Kubernetes Services as a stream of source events: the API server's port (`apiPort`) from the
 * start, then per Service UID the ports it publishes (see `forwardsOfService`).
 *
 * `clients` emits one client per kubeconfig: none until the file appears, a new one when it is
 * replaced (the stream then drops the old connection and lists through the new one). For each
 * client it lists all Services (a `snapshot`), then watches from the list's resourceVersion
 * (`upsert`/`remove` per Service). Any end of that — the API server down or refusing, a dropped
 * connection, a watch the server closed, a 410 Gone for an expired resourceVersion — is a fresh
 * list and watch after a back-off, and the fresh snapshot removes Services deleted meanwhile. It
 * never errors or completes because of the cluster.
 *
 *   clients:  ----c--------------------------------c'----
 *   server:        [list]--ADDED(s1)--DELETED(s1)--X       [list]--...    X = drop, 410 or end
 *   events:   a--------s----u(s1)-------r(s1)------(back-off)--s---...    a = API port only
 *
 * Why a raw list and watch rather than `makeInformer`: the informer keys its cache by
 * namespace/name, so a Service deleted and re-created under the same name while disconnected
 * comes back as an update without the old UID being removed; it restarts a watch that ended
 * cleanly at once with no back-off; it stops for good after any error but 410 and must be
 * restarted by hand; and it hides the re-list, so it cannot emit a snapshot. Listing and
 * watching here keeps one rule for every failure (back off, re-list, snapshot), keyed by UID,
 * in virtual time for the marble tests.
 */
export function kubernetesServices(clients: Observable<KubeServicesClient>, opts: KubernetesStreamOptions): Observable<SourceEvent> {
  const log = moduleLogger('kubernetes', opts.logger);
  const base: [string, readonly Forward[]][] =
    opts.apiPort === undefined ? [] : [[apiServerOwner, [apiServerForward(opts.listenerAddr, opts.apiPort)]]];
  return defer(() => {
    // Problems already logged, by owner, so a bad Service earns one line per version, not one per re-list.
    const reported = new Map<string, string>();
    const ctx: Context = { opts, log, base, reported };
    return clients.pipe(
      switchMap((client) => follow(client, ctx)),
      startWith(snapshot(base)),
    );
  });
}

interface Context {
  readonly opts: KubernetesStreamOptions;
  readonly log: Logger;
  readonly base: readonly [string, readonly Forward[]][];
  readonly reported: Map<string, string>;
}

function follow(client: KubeServicesClient, ctx: Context): Observable<SourceEvent> {
  const { opts, log } = ctx;
  const listTimeoutMs = opts.listTimeoutMs ?? defaultListTimeoutMs;
  let connected = false;
  return defer(() =>
    client.listServices().pipe(
      timeout({
        first: listTimeoutMs,
        with: () => throwError(() => new Error(`the Service list got no answer within ${listTimeoutMs} ms`)),
        ...(opts.scheduler && { scheduler: opts.scheduler }),
      }),
      take(1),
      throwIfEmpty(() => new Error('the Service list ended without an answer')),
      concatMap((list) => {
        const items = Array.isArray(list.items) ? list.items : [];
        const resourceVersion = list.metadata?.resourceVersion ?? '';
        if (!connected) {
          log.info({ services: items.length, resourceVersion }, `listed ${String(items.length)} Services; watching for changes`);
        }
        connected = true;
        opts.connection?.connected();
        return concat(of(snapshotOf(items, ctx)), watch(client, resourceVersion, ctx));
      }),
    ),
  ).pipe(
    reconnectWithBackoff({
      ...opts.backoff,
      ...(opts.scheduler && { scheduler: opts.scheduler }),
      onRetry: (error, attempt, delayMs) => {
        const wait = `re-listing in ${String(delayMs)} ms`;
        if (error instanceof WatchEnded) {
          log.debug({ attempt, delayMs }, `${error.message}; ${wait}`);
        } else if (isGone(error)) {
          log.info({ attempt, delayMs }, `the Service watch expired (410 Gone: ${errorMessage(error)}); ${wait}`);
        } else if (connected) {
          log[retryLogLevel(attempt)]({ attempt, delayMs }, `lost the Kubernetes API server (${errorMessage(error)}); reconnecting and ${wait}`);
          connected = false;
          opts.connection?.disconnected(error);
        } else {
          opts.connection?.disconnected(error);
          log[retryLogLevel(attempt)]({ attempt, delayMs }, `cannot reach the Kubernetes API server (${errorMessage(error)}); retrying in ${String(delayMs)} ms`);
        }
      },
    }),
  );
}

function watch(client: KubeServicesClient, resourceVersion: string, ctx: Context): Observable<SourceEvent> {
  const maxWatchMs = ctx.opts.maxWatchMs ?? defaultMaxWatchMs;
  const events = client.watchServices(resourceVersion).pipe(
    concatWith(throwError(() => new WatchEnded('the API server ended the Service watch'))),
    concatMap((event) => handle(event, ctx)),
  );
  const cap = timer(maxWatchMs, ctx.opts.scheduler).pipe(
    concatMap(() => throwError(() => new WatchEnded(`the Service watch has been open for ${String(maxWatchMs)} ms`))),
  );
  return merge(events, cap);
}

function handle(event: KubeWatchEvent, ctx: Context): Observable<SourceEvent> {
  switch (event.type) {
    case 'ADDED':
    case 'MODIFIED':
    case 'DELETED': {
      const object: unknown = event.object;
      if (!isObject(object)) {
        ctx.log.warn({ type: event.type }, `ignoring a Service watch ${event.type} event whose object is ${JSON.stringify(object ?? null)}, not a Service`);
        return EMPTY;
      }
      if (event.type !== 'DELETED') return serviceEvent(event.object, ctx);
      const uid = event.object.metadata?.uid;
      if (typeof uid !== 'string' || uid === '') return EMPTY;
      ctx.reported.delete(uid);
      return of(remove(uid));
    }
    case 'BOOKMARK':
      // Only a newer resourceVersion; every reconnect re-lists, so nothing to keep.
      return EMPTY;
    case 'ERROR':
      return throwError(() => new KubeStatusError(isObject(event.object) ? event.object : {}));
    default: {
      const type: unknown = (event as { type?: unknown }).type;
      ctx.log.warn({ type }, `ignoring a Service watch event of unknown type ${JSON.stringify(type)}`);
      return EMPTY;
    }
  }
}

function serviceEvent(svc: KubeService, ctx: Context): Observable<SourceEvent> {
  const { owner, forwards } = forwardsFor(svc, ctx);
  if (owner === undefined) return EMPTY;
  // A Service without forwards (ClusterIP, or one whose type changed to it) owns nothing.
  return of(forwards.length > 0 ? upsert(owner, forwards) : remove(owner));
}

function snapshotOf(items: readonly KubeService[], ctx: Context): SourceEvent {
  const owners = new Map<string, readonly Forward[]>(ctx.base);
  const seen = new Set<string>();
  for (const svc of items) {
    if (!isObject(svc)) continue;
    const { owner, forwards } = forwardsFor(svc, ctx);
    seen.add(owner ?? serviceName(svc));
    if (owner !== undefined && forwards.length > 0) owners.set(owner, forwards);
  }
  // Forget what was logged about Services that are gone.
  for (const key of ctx.reported.keys()) if (!seen.has(key)) ctx.reported.delete(key);
  return snapshot(owners);
}

function forwardsFor(svc: KubeService, ctx: Context): { owner: string | undefined; forwards: Forward[] } {
  const { owner, forwards, problems } = forwardsOfService(svc, ctx.opts.listenerAddr);
  const key = owner ?? serviceName(svc);
  if (problems.length === 0) {
    ctx.reported.delete(key);
  } else {
    const text = problems.join('; ');
    if (ctx.reported.get(key) !== text) {
      ctx.reported.set(key, text);
      const next = owner === undefined ? 'skipping it' : forwards.length > 0 ? 'forwarding its other ports' : 'nothing of it is forwarded';
      ctx.log.warn({ service: serviceName(svc), uid: owner }, `Service ${serviceName(svc)}: ${text}; ${next}`);
    }
  }
  return { owner, forwards };
}

/** Input from outside may be anything, whatever its declared type says. */
function isObject<T>(value: T): value is T & object {
  const v: unknown = value;
  return v !== null && typeof v === 'object';
}

function isGone(error: unknown): boolean {
  if (error instanceof KubeStatusError) return error.status.code === 410;
  const e = error as { statusCode?: unknown; code?: unknown } | null;
  return e?.statusCode === 410 || e?.code === 410;
}

