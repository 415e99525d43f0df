import { STATUS_CODES } from 'node:http';
import { dirname } from 'node:path';
import type * as k8s from '@kubernetes/client-node';
import { catchError, map, Observable, throwError } from 'rxjs';
import { abortable } from './abortable.js';
import type { KubeClientOptions } from './kubeconfigClients.js';
import { KubeStatusError, type KubeServiceList, type KubeServicesClient, type KubeStatus, type KubeWatchEvent } from './kubernetes.js';
import { errorMessage } from '../src/errors.js';
import { evaluateEmbedded } from '../src/embedded.js';

type K8s = typeof k8s;

export type { KubeClientOptions } from './kubeconfigClients.js';

/** The watch's `timeoutSeconds` when none is given. */
const defaultWatchTimeoutSeconds = 300;

/** Where every Service of every namespace lives (list and watch alike). */
const servicesPath = '/api/v1/services';

// The library takes 300-400 ms to import: load it only when a kubeconfig is there to use.
let library: Promise<K8s> | undefined;
function loadLibrary(): Promise<K8s> {
  // The bundle and the single executable carry the library compressed (scripts/package.ts): as
  // code it would cost ~19 MB of memory in every agent, even one that never watches Kubernetes.
  library ??=
    typeof PORTSTREAM_KUBERNETES_LIBRARY === 'undefined'
      ? import('@kubernetes/client-node')
      : Promise.resolve().then(() => evaluateEmbedded(PORTSTREAM_KUBERNETES_LIBRARY, 'kubernetes-client-node.cjs') as K8s);
  return library;
}

declare const PORTSTREAM_KUBERNETES_LIBRARY: string | undefined;

/**
 * The real API server behind `KubeServicesClient`, through @kubernetes/client-node 1.4 (TLS, CA
 * and credentials from the kubeconfig): the list through `CoreV1Api.listServiceForAllNamespaces`,
 * the watch through the library's `Watch` (newline-delimited `{"type","object"}` events). Not its
 * informer: see `kubernetesServices` for why.
 */
export function kubeServicesClient(lib: K8s, kc: k8s.KubeConfig, opts: KubeClientOptions = {}): KubeServicesClient {
  const api = kc.makeApiClient(lib.CoreV1Api);
  const timeoutSeconds = opts.watchTimeoutSeconds ?? defaultWatchTimeoutSeconds;
  return {
    listServices: () =>
      abortable((signal) => api.listServiceForAllNamespaces({}, followSignal(lib, signal))).pipe(
        map((list): KubeServiceList => list),
        catchError((error: unknown) => throwError(() => statusError(error))),
      ),
    watchServices: (resourceVersion) =>
      new Observable<KubeWatchEvent>((subscriber) => {
        let controller: AbortController | undefined;
        let closed = false;
        const query = { resourceVersion, allowWatchBookmarks: true, timeoutSeconds };
        new lib.Watch(kc)
          .watch(
            servicesPath,
            query,
            (type: string, object: unknown) => {
              subscriber.next({ type, object } as KubeWatchEvent);
            },
            (error: unknown) => {
              // Called once: the server closed the stream (null), the connection failed, or a
              // non-200 answer. Also after our own abort, when nobody listens any more.
              if (error === null || error === undefined) subscriber.complete();
              else subscriber.error(statusError(error));
            },
          )
          .then(
            (c) => {
              controller = c;
              if (closed) c.abort();
            },
            (error: unknown) => {
              subscriber.error(error);
            },
          );
        return () => {
          closed = true;
          controller?.abort();
        };
      }),
  };
}

/** Request options under which the library's fetch is aborted with `signal`. */
function followSignal(lib: K8s, signal: AbortSignal): k8s.ConfigurationOptions {
  const pass = <T>(value: T): k8s.Observable<T> => new lib.Observable(Promise.resolve(value));
  const middleware: k8s.ObservableMiddleware = {
    pre: (request) => {
      request.setSignal(signal);
      return pass(request);
    },
    post: pass,
  };
  // Appended: the configuration's own middleware (none by default) stays in place.
  return { middleware: [middleware], middlewareMergeStrategy: 'append' };
}

/** A client for the kubeconfig `text` (read from `path`, which relative file names are resolved against). */
export async function clientFromKubeconfig(
  text: string,
  path: string,
  opts: KubeClientOptions = {},
): Promise<{ client: KubeServicesClient; server: string }> {
  const lib = await loadLibrary();
  const kc = new lib.KubeConfig();
  try {
    kc.loadFromString(text);
  } catch (error) {
    throw new Error(`it is not a kubeconfig (${errorMessage(error)})`, { cause: error });
  }
  kc.makePathsAbsolute(dirname(path));
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error(`its current context ${JSON.stringify(kc.getCurrentContext())} names no cluster`);
  return { client: kubeServicesClient(lib, kc, opts), server: cluster.server };
}


/**
 * A short error for the log: the library's ApiException puts the whole body and headers in its
 * message, and its Watch reports a non-200 answer as just the status text.
 */
function statusError(error: unknown): unknown {
  const e = error as { code?: unknown; statusCode?: unknown; body?: unknown; message?: unknown } | null;
  const code = typeof e?.code === 'number' ? e.code : typeof e?.statusCode === 'number' ? e.statusCode : undefined;
  if (code === undefined) return error;
  const body = parseBody(e?.body);
  // The Watch's error message is the status text ("Forbidden"); ApiException's is the whole dump.
  const text = typeof body?.message === 'string' ? body.message : e?.statusCode !== undefined && typeof e.message === 'string' ? e.message : undefined;
  return new KubeStatusError({
    kind: 'Status',
    code,
    ...(typeof body?.reason === 'string' && { reason: body.reason }),
    message: text ?? STATUS_CODES[code] ?? `HTTP ${String(code)}`,
  });
}

function parseBody(body: unknown): KubeStatus | undefined {
  if (typeof body === 'string') {
    try {
      return JSON.parse(body) as KubeStatus;
    } catch {
      return undefined;
    }
  }
  return body !== null && typeof body === 'object' ? body : undefined;
}
