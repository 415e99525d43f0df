import { pino } from 'pino';
import type { Logger } from './log.js';

/**
 * The commands' own logger: JSON lines on stderr (stdout belongs to the table sink), at
 * `PORTSTREAM_LOG_LEVEL` (default info), or debug with `-debug`. The commands pass it to every
 * part they build; the library itself has no logger of its own.
 */
export function cliLogger(env: NodeJS.ProcessEnv, debug: boolean): Logger {
  return pino({ level: debug ? 'debug' : (env['PORTSTREAM_LOG_LEVEL'] ?? 'info') }, pino.destination(2));
}
