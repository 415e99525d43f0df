import { request } from 'node:http';
import { errorMessage } from '../errors.js';
import { parseFlags, usage } from '../flags.js';
import type { Forward, PortKey } from '../model.js';
import { renderTable } from '../sinks/table.js';
import { defaultStatusSocket, describeStatusAddr, parseStatusAddr, type StatusAddress } from './address.js';
import type { ForwardView, HealthView } from './views.js';

/** What `portstream status` writes to and reads its environment from. */
export interface StatusIo {
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream;
}

const statusFlags = [
  {
    name: 'statusAddr',
    kind: 'string',
    default: defaultStatusSocket,
    usage: "the running agent's status endpoint: a unix socket `path`, 127.0.0.1:PORT or [::1]:PORT",
  },
] as const;

const requestTimeoutMs = 5_000;

/**
 * `portstream status [-statusAddr A]`: a running agent's forwards as the live table shows them,
 * then each forward a sink has not applied and why, then what keeps the agent unhealthy.
 * Exit 0 when the agent answered, 1 when none does, 2 for a bad command line.
 */
export async function runStatus(argv: readonly string[], io: StatusIo): Promise<number> {
  const parsed = parseFlags(statusFlags, argv);
  const help = usage(statusFlags, 'portstream status');
  if (!parsed.ok || parsed.positional.length > 0) {
    if (!parsed.ok && parsed.help) {
      io.stdout.write(help);
      return 0;
    }
    const error = parsed.ok ? `unexpected argument ${JSON.stringify(parsed.positional[0])}` : parsed.error;
    io.stderr.write(`portstream status: ${error}\n${help}`);
    return 2;
  }
  const address = parseStatusAddr(parsed.values.statusAddr);
  if ('error' in address) {
    io.stderr.write(`portstream status: invalid value ${JSON.stringify(parsed.values.statusAddr)} for flag -statusAddr: ${address.error}\n`);
    return 2;
  }
  let forwards: ForwardView[];
  let health: HealthView;
  try {
    [forwards, health] = await Promise.all([getJson(address, '/forwards', [200]), getJson(address, '/healthz', [200, 503])]).then(
      ([f, h]) => [asForwards(f), h as HealthView] as const,
    );
  } catch (err) {
    io.stderr.write(`portstream status: no agent answers on ${describeStatusAddr(address)} (${errorMessage(err)})\n`);
    return 1;
  }
  io.stdout.write(renderStatus(forwards, health));
  return 0;
}

/** The table, then the forwards some sink has not applied, then the health problems. */
export function renderStatus(forwards: readonly ForwardView[], health: HealthView): string {
  const set = new Map<PortKey, Forward>(forwards.map((f) => [f.key, f]));
  const lines: string[] = [];
  for (const f of forwards) {
    for (const [sink, s] of Object.entries(f.sinks)) {
      if (s.state === 'applied') continue;
      const what = `${s.state}${s.removing === true ? ' (removing)' : ''} since ${s.since}`;
      lines.push(`${f.key}  ${sink}: ${what}${s.error === undefined ? '' : `: ${s.error}`}`);
    }
  }
  let text = renderTable(set);
  if (lines.length > 0) text += `\nnot applied:\n${lines.map((l) => `  ${l}\n`).join('')}`;
  text += health.ok ? '\nhealthy\n' : `\nnot healthy:\n${health.problems.map((p) => `  ${p}\n`).join('')}`;
  return text;
}

function asForwards(value: unknown): ForwardView[] {
  if (!Array.isArray(value)) throw new Error('its /forwards answer is not a list');
  return (value as unknown[]).filter(
    (f): f is ForwardView =>
      typeof f === 'object' && f !== null && typeof (f as ForwardView).key === 'string' && typeof (f as ForwardView).hostPort === 'number' &&
      typeof (f as ForwardView).sinks === 'object',
  );
}

function getJson(address: StatusAddress, path: string, okStatuses: readonly number[]): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const target = address.kind === 'unix' ? { socketPath: address.path } : { host: address.host, port: address.port };
    const req = request({ ...target, path, method: 'GET', timeout: requestTimeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('error', reject);
      res.on('end', () => {
        if (!okStatuses.includes(res.statusCode ?? 0)) {
          reject(new Error(`${path} answered ${String(res.statusCode)}`));
          return;
        }
        try {
          resolve(JSON.parse(body));
        } catch {
          reject(new Error(`${path} did not answer JSON`));
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${String(requestTimeoutMs)} ms`)));
    req.on('error', reject);
    req.end();
  });
}
