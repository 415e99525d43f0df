/**
 * Logging without a process-wide logger: each part that logs takes a `logger` in its options and
 * logs through a child of it that names the part (`{ module: 'docker' }`). Without one it logs
 * nothing, as a library should. A pino logger is what the CLI passes; any object with pino's
 * `child` and level methods fits.
 */

/** One level's method: `log.info({ port }, 'message')` or `log.info('message')`, as pino takes them. */
export interface LogFn {
  (bindings: object, message?: string): void;
  (message: string): void;
}

/** The slice of a pino logger that portstream uses; a pino `Logger` is one. */
export interface Logger {
  /** A logger that adds `bindings` to every line (portstream adds `{ module }`). */
  child(bindings: Record<string, unknown>): Logger;
  fatal: LogFn;
  error: LogFn;
  warn: LogFn;
  info: LogFn;
  debug: LogFn;
  trace: LogFn;
}

const ignore: LogFn = () => undefined;

/** A logger that drops everything: what a part logs to when it is given none. */
export const silentLogger: Logger = {
  child: () => silentLogger,
  fatal: ignore,
  error: ignore,
  warn: ignore,
  info: ignore,
  debug: ignore,
  trace: ignore,
};

/** The logger a part uses: a child of the one it was given, naming it, or the silent one. */
export function moduleLogger(module: string, parent: Logger | undefined): Logger {
  return parent === undefined ? silentLogger : parent.child({ module });
}
