import { pino, type Logger } from 'pino';

/**
 * One root logger on stderr (stdout belongs to the table sink), a child per module.
 * Tests and library users can replace the root with `setRootLogger`.
 */
let root: Logger = pino({ level: process.env['PORTSTREAM_LOG_LEVEL'] ?? 'info' }, pino.destination(2));

export type { Logger };

export function setRootLogger(logger: Logger): void {
  root = logger;
}

export function rootLogger(): Logger {
  return root;
}

export function moduleLogger(module: string): Logger {
  return root.child({ module });
}
