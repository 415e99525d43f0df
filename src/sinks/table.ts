import { EMPTY, Observable, type Subscription } from 'rxjs';
import { errorMessage } from '../errors.js';
import { moduleLogger, type Logger } from '../log.js';
import { applyDelta, emptyPortSet, type Forward, type PortSet } from '../model.js';
import type { Sink, SinkReport } from './sink.js';

/** Where the table goes: process.stdout, or anything with `write` (and, if it can fail, `on('error')`). */
export interface TableOutput {
  /** Writes `text` as it is. */
  write(text: string): unknown;
  readonly isTTY?: boolean;
  /** False once the output is closed or destroyed (a Node stream's own flag). */
  readonly writable?: boolean;
  on?(event: 'error', listener: (error: unknown) => void): unknown;
  off?(event: 'error', listener: (error: unknown) => void): unknown;
}

/** Outputs that already have the listener that keeps a late error from ending the process. */
const guarded = new WeakSet<TableOutput>();

/**
 * The live view of what is forwarded: a table redrawn in place on a terminal, JSON lines
 * (`{"event":"add",...}`) anywhere else so that other tools can follow it.
 *
 * The output may go away under it (`portstream | head -c 1`: EPIPE). The table is only a view,
 * so then it says so once and completes; the agent and its other sinks go on forwarding. A
 * listener stays on the output for good, so that an error of a write still under way when the
 * table stopped cannot end the process either.
 *
 * On a terminal, `logs$` (see logPane.ts) are the last log lines, drawn below the table so the
 * two never overlap.
 */
export function tableSink(out: TableOutput = process.stdout, logger?: Logger, logs$: Observable<readonly string[]> = EMPTY): Sink {
  const log = moduleLogger('table', logger);
  const tty = out.isTTY === true;
  if (!guarded.has(out)) {
    guarded.add(out);
    out.on?.('error', () => undefined);
  }
  return (deltas$) =>
    new Observable<SinkReport>((subscriber) => {
      let current: PortSet = emptyPortSet;
      let logs: readonly string[] = [];
      const frame = (): string => clearScreen + renderTable(current) + (logs.length === 0 ? '' : `\n${logs.join('\n')}\n`);
      const closed = (error?: unknown): void => {
        if (subscriber.closed) return;
        const why = error === undefined ? 'it is closed' : errorMessage(error);
        log.warn({ err: why }, `the table's output is gone (${why}); no longer showing the table, forwarding goes on`);
        subscriber.complete();
      };
      const write = (text: string): void => {
        if (text === '') return;
        if (out.writable === false) {
          closed();
          return;
        }
        try {
          out.write(text);
        } catch (error: unknown) {
          closed(error);
        }
      };
      out.on?.('error', closed);
      if (tty) write(frame());
      const logLines: Subscription | undefined = tty
        ? logs$.subscribe((lines) => {
            logs = lines;
            write(frame());
          })
        : undefined;
      const subscription = deltas$.subscribe({
        next: (delta) => {
          current = applyDelta(current, delta);
          write(tty ? frame() : jsonLines('remove', delta.removed) + jsonLines('add', delta.added));
          subscriber.next({ sink: 'table', type: 'wrote', added: delta.added, removed: delta.removed });
        },
        error: (err: unknown) => {
          subscriber.error(err);
        },
        complete: () => {
          if (!tty) write(jsonLines('remove', [...current.values()]));
          subscriber.next({ sink: 'table', type: 'withdrawn', count: current.size });
          subscriber.complete();
        },
      });
      return () => {
        logLines?.unsubscribe();
        subscription.unsubscribe();
        out.off?.('error', closed);
      };
    });
}

const clearScreen = '\x1b[H\x1b[2J';

/** Forwards as JSON lines, one `{event, ...forward}` each, for output that is not a terminal. */
export function jsonLines(event: 'add' | 'remove', forwards: readonly Forward[]): string {
  return forwards.map((f) => JSON.stringify({ event, ...f }) + '\n').join('');
}

const columns = ['PROTO', 'HOST IP', 'HOST PORT', 'TO PORT', 'SOURCE', 'OWNER'] as const;

/** The table as text: one row per forward, ordered by port, then address and protocol. */
export function renderTable(set: PortSet): string {
  const rows = [...set.values()]
    .sort((a, b) => a.hostPort - b.hostPort || a.hostIp.localeCompare(b.hostIp) || a.protocol.localeCompare(b.protocol))
    .map((f) => [f.protocol, f.hostIp, String(f.hostPort), f.containerPort === undefined ? '-' : String(f.containerPort), f.source, f.owner.slice(0, 12)]);
  const all = [[...columns], ...rows];
  const widths = columns.map((_, i) => Math.max(...all.map((r) => r[i]?.length ?? 0)));
  const lines = all.map((r) => r.map((cell, i) => cell.padEnd(widths[i] ?? 0)).join('  ').trimEnd());
  const summary = `${String(rows.length)} port${rows.length === 1 ? '' : 's'} forwarded`;
  return [...lines, '', summary, ''].join('\n');
}
