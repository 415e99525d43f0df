import { catchError, concatMap, defer, EMPTY, map, type Observable } from 'rxjs';
import { moduleLogger, type Logger } from '../src/log.js';
import { errorMessage } from '../src/errors.js';
import { watchFileContents, type FileWatchOptions } from './kubeconfigFile.js';
import type { KubeServicesClient } from './kubernetes.js';
import { clientFromKubeconfig } from './kubernetesClient.js';

/** How `kubeconfigClients` talks to the API server. */
export interface KubeClientOptions {
  /**
   * Asked of the server for each watch (`timeoutSeconds`): the server ends the watch after it and
   * the stream re-lists. Default 300 (client-go picks 5 to 10 minutes).
   */
  readonly watchTimeoutSeconds?: number | undefined;
  /** Where it logs, through a child naming its module; without one it logs nothing. */
  readonly logger?: Logger | undefined;
}

/**
 * One client per version of the kubeconfig at `path`, for `kubernetesServices`: none while the
 * file does not exist, a new one whenever it is replaced by something different. A file that is
 * not a usable kubeconfig gets one log line and is waited on until it changes again.
 */
export function kubeconfigClients(path: string, opts: KubeClientOptions & FileWatchOptions = {}): Observable<KubeServicesClient> {
  const log = moduleLogger('kubernetes', opts.logger);
  return watchFileContents(path, { ...opts, logger: log }).pipe(
    concatMap((text) =>
      defer(() => clientFromKubeconfig(text, path, opts)).pipe(
        map(({ client, server }) => {
          log.info({ path, server }, `loaded the kubeconfig ${path}; watching Services at ${server}`);
          return client;
        }),
        catchError((error: unknown) => {
          log.warn({ path }, `cannot use the kubeconfig ${path}: ${errorMessage(error)}; waiting for it to change`);
          return EMPTY;
        }),
      ),
    ),
  );
}
