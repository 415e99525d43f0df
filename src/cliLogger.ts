import { pino, type DestinationStream } from 'pino';
import type { Logger } from './log.js';

/**
 * The commands' own logger: JSON lines on stderr (stdout belongs to the table sink), at
 * `PORTSTREAM_LOG_LEVEL` (default info), or debug with `-debug`. The commands pass it to every
 * part they build; the library itself has no logger of its own. On a terminal with the live table,
 * the agent gives it the table's log pane as its destination.
 */
export function cliLogger(env: NodeJS.ProcessEnv, debug: boolean, destination: DestinationStream = pino.destination(2)): Logger {
  return pino({ level: debug ? 'debug' : (env['PORTSTREAM_LOG_LEVEL'] ?? 'info') }, destination);
}
