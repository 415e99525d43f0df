import { BehaviorSubject, type Observable } from 'rxjs';

/** How many log lines the live table shows below itself. */
export const paneLines = 8;

/** Log lines kept for the live table to draw below itself: a pino destination, and the latest lines as an Observable. */
export interface LogPane {
  /** A pino destination: each write is one JSON log line. */
  readonly destination: { write(line: string): void };
  /** The last `paneLines` lines, formatted; the table sink draws them below the table. */
  readonly lines$: Observable<readonly string[]>;
}

/**
 * Logs for a terminal that shows the live table. Written straight to the terminal they would be
 * wiped by the next redraw, or draw over the table; instead, while the table sink listens, the
 * last few lines are drawn below the table. Before it starts and after it ends (start-up and the
 * last withdrawal lines), lines go to `fallback` (stderr) as usual, and the pane still keeps them.
 */
export function logPane(fallback: { write(text: string): unknown }): LogPane {
  const lines = new BehaviorSubject<readonly string[]>([]);
  return {
    destination: {
      write(line) {
        lines.next([...lines.value, formatLogLine(line)].slice(-paneLines));
        if (!lines.observed) fallback.write(line);
      },
    },
    lines$: lines,
  };
}

const levels: Readonly<Record<number, string>> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };

/** A pino JSON line as `HH:MM:SS LEVEL module: message (err)`; anything else as it is. */
export function formatLogLine(line: string): string {
  let record: { time?: unknown; level?: unknown; module?: unknown; msg?: unknown; err?: unknown };
  try {
    record = JSON.parse(line) as typeof record;
  } catch {
    return line.trimEnd();
  }
  const time = typeof record.time === 'number' ? new Date(record.time).toISOString().slice(11, 19) : '--:--:--';
  const level = (typeof record.level === 'number' ? levels[record.level] : undefined) ?? 'LOG';
  const module = typeof record.module === 'string' ? `${record.module}: ` : '';
  const err = errText(record.err);
  return `${time} ${level.padEnd(5)} ${module}${typeof record.msg === 'string' ? record.msg : ''}${err === '' ? '' : ` (${err})`}`;
}

function errText(err: unknown): string {
  if (typeof err === 'string') return err;
  if (typeof err === 'object' && err !== null && 'message' in err && typeof err.message === 'string') return err.message;
  return '';
}
