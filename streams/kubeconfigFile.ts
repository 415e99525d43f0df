import { watch, type FSWatcher } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import { concatMap, debounceTime, defer, distinctUntilChanged, filter, interval, merge, Observable, retry, startWith, timer } from 'rxjs';
import { moduleLogger, type Logger } from '../src/log.js';

/** How `watchFileContents` polls a file, waits for a write to settle, and names it in logs. */
export interface FileWatchOptions {
  /** The slow stat poll that backs up fs.watch (a directory that does not exist yet, a stale watch). Default 5 s. */
  readonly pollMs?: number | undefined;
  /** Quiet time after a change event before the file is read, so a file still being written is read whole. Default 100 ms. */
  readonly settleMs?: number | undefined;
  /** What the file is, for log lines. Default `kubeconfig`. */
  readonly what?: string | undefined;
  /** Where it logs, through a child naming its module; without one it logs nothing. */
  readonly logger?: Logger | undefined;
}

/** The period of the stat poll that backs up fs.watch, in ms. */
const defaultPollMs = 5_000;
/** How long after a change event the file is read, in ms (so it is read whole). */
const defaultSettleMs = 100;

/**
 * A file's contents, now and whenever it changes: nothing while the file does not exist (k3s
 * writes its kubeconfig late), the contents once it appears, and the new contents each time it is
 * rewritten or replaced (renamed over). The same contents again emit nothing, and a removal
 * emits nothing either (the last contents stay in force until the file returns). It never errors
 * or completes.
 *
 * Changes are noticed through fs.watch on the directory (a replace by rename changes the inode,
 * which a watch on the file itself would miss), debounced by `settleMs`; a stat every `pollMs`
 * backs it up, and re-arms the watch once a missing directory appears.
 *
 *   file:      (missing)-----written-----rewritten(same)-----replaced-----removed-----
 *   contents:  ----------------a-------------------------------b----------------------
 */
export function watchFileContents(path: string, opts: FileWatchOptions = {}): Observable<string> {
  const pollMs = opts.pollMs ?? defaultPollMs;
  const settleMs = opts.settleMs ?? defaultSettleMs;
  const what = opts.what ?? 'kubeconfig';
  const log = moduleLogger('kubernetes', opts.logger);
  const dir = dirname(path);
  const name = basename(path);

  return defer(() => {
    // What the last check saw: undefined before the first, 'missing', or the stat signature read.
    let seen: string | undefined;
    let lastError: string | undefined;

    const changes = new Observable<void>((subscriber) => {
      let watcher: FSWatcher;
      try {
        watcher = watch(dir, { persistent: false }, (_event, file) => {
          if (file === null || file === name) subscriber.next();
        });
      } catch (error) {
        subscriber.error(error);
        return undefined;
      }
      watcher.on('error', (error) => {
        subscriber.error(error);
      });
      subscriber.next(); // armed: look now, in case the file appeared before the watch did
      return () => {
        watcher.close();
      };
    }).pipe(
      // The directory does not exist yet (or went away): try again at the poll's pace.
      retry({ delay: () => timer(pollMs) }),
      debounceTime(settleMs),
    );

    const check = async (): Promise<string | undefined> => {
      let signature: string;
      try {
        const s = await stat(path);
        signature = `${String(s.ino)}:${String(s.size)}:${String(s.mtimeMs)}:${String(s.ctimeMs)}`;
      } catch (error) {
        if (code(error) !== 'ENOENT' && code(error) !== 'ENOTDIR') {
          problem(error);
          return undefined;
        }
        if (seen === undefined) log.info({ path }, `waiting for the ${what} ${path} to appear`);
        else if (seen !== 'missing') log.info({ path }, `the ${what} ${path} was removed; keeping the one loaded until it returns`);
        seen = 'missing';
        return undefined;
      }
      if (signature === seen) return undefined;
      let contents: string;
      try {
        contents = await readFile(path, 'utf8');
      } catch (error) {
        if (code(error) !== 'ENOENT') problem(error);
        return undefined;
      }
      seen = signature;
      lastError = undefined;
      return contents;
    };

    const problem = (error: unknown): void => {
      const text = error instanceof Error ? error.message : String(error);
      if (text !== lastError) log.warn({ path }, `cannot read the ${what} ${path} (${text}); trying again in ${String(pollMs)} ms`);
      lastError = text;
    };

    return merge(changes, interval(pollMs)).pipe(
      startWith(undefined),
      concatMap(check),
      filter((contents): contents is string => contents !== undefined),
      distinctUntilChanged(),
    );
  });
}

function code(error: unknown): unknown {
  return (error as { code?: unknown } | null)?.code;
}
