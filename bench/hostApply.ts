/**
 * `portstream host` applying 1,600 ports at once (two PortMapping messages, as the agent splits
 * them under the host's 64 KiB limit): the time from the first being sent to every port listening
 * on this machine, and from the removes to every one of them gone. The real process (`dist/src/main.js
 * host`, compiled first) receives over TCP; what listens is read from /proc/net/tcp, the kernel's own view. The VM address is one this machine does not have
 * (198.51.100.7, a documentation address), since the host side refuses to forward to itself;
 * nothing connects, so it is never dialled. The figure includes everything the host side does per
 * binding. Run on its own: `node --import tsx bench/hostApply.ts [--quick]`.
 */
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { sleep, until } from './harness.js';
import { percentile, report, round } from './stats.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const firstPort = 31_000;

/** How many of `ports` are in LISTEN on 127.0.0.1 right now. */
function listening(ports: ReadonlySet<number>): number {
  let count = 0;
  for (const line of readFileSync('/proc/net/tcp', 'latin1').split('\n')) {
    // "  12: 0100007F:7918 00000000:0000 0A ..." — local address, port (hex), remote, state 0A = LISTEN
    const match = /^\s*\d+: 0100007F:([0-9A-F]{4}) \S+ 0A /.exec(line);
    if (match && ports.has(parseInt(match[1] ?? '', 16))) count += 1;
  }
  return count;
}

/** PortMapping lines for ports `from`..`from + n - 1` on 127.0.0.1, as the agent writes them (docs/vtunnel-wire.md), 800 to a message to stay under the host's 64 KiB. */
function messages(remove: boolean, n: number, from = firstPort): string[] {
  const lines: string[] = [];
  for (let at = 0; at < n; at += 800) {
    const ports: Record<string, { HostIp: string; HostPort: string }[]> = {};
    for (let i = at; i < Math.min(n, at + 800); i++) ports[`${String(from + i)}/tcp`] = [{ HostIp: '127.0.0.1', HostPort: String(from + i) }];
    lines.push(`${JSON.stringify({ remove, ports, connectAddrs: [{ network: 'ip+net', addr: '198.51.100.7/24' }] })}\n`);
  }
  return lines;
}

/** Each line on a connection of its own, one after the other, as the vtunnel sink sends them. */
async function send(port: number, lines: readonly string[]): Promise<void> {
  for (const line of lines) {
    const socket = net.connect({ host: '127.0.0.1', port });
    await once(socket, 'connect');
    socket.end(line);
    socket.resume();
    await once(socket, 'close');
  }
}

export async function benchHostApply(quick: boolean): Promise<void> {
  const n = 1600;
  const rounds = quick ? 3 : 9;
  const listen = 19_600;
  // PORTSTREAM_BENCH_CPU_PROF=DIR: profile the host process (node --cpu-prof)
  const profile = process.env['PORTSTREAM_BENCH_CPU_PROF'];
  const node = profile === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${profile}`, '--cpu-prof-interval=100'];
  // dist/ as this checkout's sources are now: what the package's bin and the bundle run
  await promisify(execFile)(process.execPath, [`${root}node_modules/typescript/bin/tsc`, '-p', `${root}tsconfig.build.json`], { timeout: 300_000 });
  const host = spawn(process.execPath, [...node, `${root}dist/src/main.js`, 'host', '-listen', `127.0.0.1:${String(listen)}`], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  host.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const ports = new Set(Array.from({ length: n }, (_, i) => firstPort + i));
  const adds: number[] = [];
  const removes: number[] = [];
  try {
    const up = await until(async () => await send(listen, messages(true, 1, firstPort - 1)).then(() => true, () => false), 20_000, 50);
    if (up === undefined) throw new Error(`portstream host did not listen:\n${stderr.slice(-2000)}`);
    for (let r = 0; r < rounds; r++) {
      let start = performance.now();
      await send(listen, messages(false, n));
      if ((await until(() => listening(ports) === n, 30_000, 2)) === undefined) throw new Error(`only ${String(listening(ports))} of ${String(n)} listen:\n${stderr.slice(-2000)}`);
      adds.push(performance.now() - start);
      await sleep(500);
      start = performance.now();
      await send(listen, messages(true, n));
      if ((await until(() => listening(ports) === 0, 30_000, 2)) === undefined) throw new Error(`${String(listening(ports))} still listen:\n${stderr.slice(-2000)}`);
      removes.push(performance.now() - start);
      await sleep(500);
    }
  } finally {
    host.kill('SIGTERM');
    await once(host, 'exit');
  }
  const note = `PortMapping messages (800 ports each) of ${String(n)} ports to the real portstream host process (compiled, dist/) → all listening, from /proc/net/tcp; median of ${String(rounds)}`;
  report({ name: `host.apply.${String(n)}.add`, value: round(percentile(adds, 50), 1), unit: 'ms', samples: rounds, max: round(Math.max(...adds), 1), note });
  report({ name: `host.apply.${String(n)}.remove`, value: round(percentile(removes, 50), 1), unit: 'ms', samples: rounds, max: round(Math.max(...removes), 1), note: 'the remove message of the same ports → none listening' });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await benchHostApply(process.argv.includes('--quick'));
