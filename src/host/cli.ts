import type { Observable } from 'rxjs';
import { parseFlags, usage } from '../flags.js';
import { errorMessage } from '../errors.js';
import { moduleLogger } from '../log.js';
import { cliLogger } from '../cliLogger.js';
import { parseListenAddr, receiverDefaults, startHostReceiver, type HostReceiver } from './receiver.js';

/** The host side's flags, Go style like the agent's. */
export const hostFlags = [
  {
    name: 'listen',
    kind: 'string',
    default: receiverDefaults.listen,
    usage: 'where to receive PortMappings from the agent (the vtunnel peer): `HOST:PORT`, [::1]:PORT for IPv6',
  },
  { name: 'debug', kind: 'bool', default: false, usage: 'debug logging' },
] as const;

/** What `runHost` needs of the process; the agent's `Io` (src/cli.ts) has this shape. */
export interface HostIo {
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream;
  /** Emits when the process is asked to stop (SIGTERM, SIGINT). */
  readonly stop$: Observable<unknown>;
}

/** The `portstream host` usage text, for `-help` and bad flags. */
export function hostUsage(program = 'portstream host'): string {
  return usage(hostFlags, program);
}

/**
 * `portstream host FLAGS` (argv without `host`): runs the receiver until asked to stop, then
 * closes every listener and connection. Resolves to the exit code: 0 after a stop, 2 for a bad
 * command line, 1 when the receiver cannot listen or fails.
 */
export async function runHost(argv: readonly string[], io: HostIo): Promise<number> {
  const parsed = parseFlags(hostFlags, argv);
  if (!parsed.ok) {
    if (parsed.help) {
      io.stdout.write(hostUsage());
      return 0;
    }
    io.stderr.write(`portstream host: ${parsed.error}\n${hostUsage()}`);
    return 2;
  }
  if (parsed.positional.length > 0) {
    io.stderr.write(`portstream host: unexpected argument ${JSON.stringify(parsed.positional[0])}: portstream host takes only flags\n${hostUsage()}`);
    return 2;
  }
  const { listen, debug } = parsed.values;
  const address = parseListenAddr(listen);
  if ('error' in address) {
    io.stderr.write(`portstream host: invalid value ${JSON.stringify(listen)} for flag -listen: ${address.error}\n${hostUsage()}`);
    return 2;
  }
  const logger = cliLogger(process.env, debug);
  const log = moduleLogger('host', logger);

  let receiver: HostReceiver;
  try {
    receiver = await startHostReceiver({ listen: address, logger });
  } catch (err) {
    log.fatal({ err: errorMessage(err) }, `portstream host cannot start: ${errorMessage(err)}`);
    return 1;
  }

  return new Promise<number>((resolve) => {
    let stopping = false;
    const signals = io.stop$.subscribe(() => {
      if (stopping) {
        log.warn('asked again to stop; exiting at once');
        resolve(0);
        return;
      }
      stopping = true;
      log.info({ bindings: receiver.bindings().size }, `stopping: closing ${String(receiver.bindings().size)} bindings and their connections`);
      void receiver.close().then(() => {
        signals.unsubscribe();
        resolve(0);
      });
    });
    receiver.done.catch((err: unknown) => {
      log.fatal({ err: errorMessage(err) }, `the receiver failed: ${errorMessage(err)}`);
      signals.unsubscribe();
      resolve(1);
    });
  });
}
