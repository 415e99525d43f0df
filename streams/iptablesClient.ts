import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import { createInterface } from 'node:readline';
import { Observable } from 'rxjs';
import type { Family, IptablesClient, MonitorKind } from './iptables.js';
import { lazyBuiltin } from '../src/builtin.js';

const childProcess = lazyBuiltin('node:child_process');

/** Each command as an argument array, never through a shell. */
const saveCommands: Readonly<Record<Family, readonly [string, ...string[]]>> = {
  ipv4: ['iptables-save', '-t', 'nat'],
  ipv6: ['ip6tables-save', '-t', 'nat'],
};
const monitorArgv: Readonly<Record<MonitorKind, () => readonly [string, ...string[]]>> = {
  nft: () => ['nft', 'monitor'],
  // xtables-monitor block-buffers its output into a pipe; stdbuf makes it line-buffered
  xtables: () => ['stdbuf', '-oL', findCommand('xtables-monitor'), '-e'],
};

/** How `nodeIptablesClient` bounds the commands it runs. */
export interface NodeIptablesClientOptions {
  /** A command that has not finished after this long is killed and counts as failed. Default 30 s. */
  readonly timeoutMs?: number | undefined;
}

/**
 * The real machine behind `IptablesClient`: runs iptables-save, ip6tables-save and the monitors
 * as child processes (argument arrays, no shell). Commands are looked up on PATH and then in the
 * sbin directories, which a non-login PATH often lacks.
 */
export function nodeIptablesClient(opts: NodeIptablesClientOptions = {}): IptablesClient {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  return {
    save: (family) => runCommand(saveCommands[family], timeoutMs),
    version: () => runCommand(['iptables', '--version'], timeoutMs),
    monitor: (kind) => monitorLines(monitorArgv[kind]()),
  };
}

/**
 * Bound on a command's output: a nat table with 100,000 rules is about 10 MiB. Node joins the
 * output into one string, which past ~512 MiB throws outside the callback and ends the process.
 */
const maxOutputBytes = 64 * 1024 * 1024;

function runCommand([cmd, ...args]: readonly [string, ...string[]], timeoutMs: number): Observable<string> {
  return new Observable<string>((subscriber) => {
    const child = childProcess().execFile(
      findCommand(cmd),
      args,
      { maxBuffer: maxOutputBytes, timeout: timeoutMs, killSignal: 'SIGKILL', encoding: 'utf8' },
      (error, stdout, stderr) => {
        if (!error) {
          subscriber.next(stdout);
          subscriber.complete();
          return;
        }
        const errno = (error as NodeJS.ErrnoException).code;
        const why = error.killed
          ? `killed after ${String(timeoutMs)} ms`
          : typeof errno === 'string'
            ? errno
            : `exit ${String(errno)}`;
        const detail = stderr.trim().split('\n').slice(-3).join(' ');
        subscriber.error(
          Object.assign(new Error(`${cmd} ${args.join(' ')} failed (${why})${detail ? `: ${detail}` : ''}`, { cause: error }), {
            code: errno,
          }),
        );
      },
    );
    return () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    };
  });
}

function monitorLines([cmd, ...args]: readonly [string, ...string[]]): Observable<string> {
  return new Observable<string>((subscriber) => {
    const child = childProcess().spawn(findCommand(cmd), args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => {
      stderr = (stderr + chunk).slice(-2000);
    });
    const lines = createInterface({ input: child.stdout, crlfDelay: Infinity });
    lines.on('line', (line) => {
      if (line.trim() !== '') subscriber.next(line);
    });
    child.on('error', (error) => {
      subscriber.error(error);
    });
    child.on('close', (exitCode, signal) => {
      const detail = stderr.trim().split('\n').slice(-2).join(' ');
      const status = signal ?? `exit ${String(exitCode)}`;
      subscriber.error(new Error(`${[cmd, ...args].join(' ')} ended (${status})${detail ? `: ${detail}` : ''}`));
    });
    return () => {
      lines.close();
      child.stdout.destroy();
      child.stderr.destroy();
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    };
  });
}

const sbin = ['/usr/local/sbin', '/usr/sbin', '/sbin'];

/** `name` on PATH, else in the sbin directories; the bare name when found nowhere (spawn reports ENOENT). */
function findCommand(name: string, path: string = process.env['PATH'] ?? ''): string {
  for (const dir of [...path.split(delimiter), ...sbin]) {
    if (dir === '') continue;
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return name;
}
