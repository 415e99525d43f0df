import { Observable } from 'rxjs';
import { applyDelta, emptyPortSet, type Forward, type PortSet } from '../model.js';
import type { Sink, SinkReport } from './sink.js';

/** Where the table sink writes: a stream, and whether it is a terminal. */
export interface TableOutput {
  /** Writes `text` as it is. */
  write(text: string): unknown;
  readonly isTTY?: boolean;
}

/**
 * The live view of what is forwarded: a table redrawn in place on a terminal, JSON lines
 * (`{"event":"add",...}`) anywhere else so that other tools can follow it.
 */
export function tableSink(out: TableOutput = process.stdout): Sink {
  const tty = out.isTTY === true;
  return (deltas$) =>
    new Observable<SinkReport>((subscriber) => {
      let current: PortSet = emptyPortSet;
      if (tty) out.write(clearScreen + renderTable(current));
      return deltas$.subscribe({
        next: (delta) => {
          current = applyDelta(current, delta);
          if (tty) out.write(clearScreen + renderTable(current));
          else out.write(jsonLines('remove', delta.removed) + jsonLines('add', delta.added));
          subscriber.next({ sink: 'table', type: 'wrote', added: delta.added, removed: delta.removed });
        },
        error: (err: unknown) => {
          subscriber.error(err);
        },
        complete: () => {
          if (!tty) out.write(jsonLines('remove', [...current.values()]));
          subscriber.next({ sink: 'table', type: 'withdrawn', count: current.size });
          subscriber.complete();
        },
      });
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
