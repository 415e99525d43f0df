/**
 * The processes of the loopback benchmark (bench/loopback.ts), each run in one of its network
 * namespaces with `ip netns exec`:
 * - `server ADDR:PORT...`: in the "VM", a server on each address told what to do by its first
 *   bytes: `bulk` streams BYTES (env) then ends; anything else gets one byte back.
 * - `forwarder LISTEN PORT DIAL ALLOW`: in the "VM", portstream's loopback forwarder on its own.
 * - `client BYTES RUNS CONNECTS NAME=ADDR:PORT...`: in the "host", times a bulk download and the
 *   connection set-up (connect to first byte) of every target, alternating between them.
 * Each prints `ready` once it listens, or (client) figures as JSON lines.
 */
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { pino } from 'pino';
import { tcpForwarder } from '../src/loopback/forwarder.js';
import { percentile, round } from './stats.js';

const [role = '', ...args] = process.argv.slice(2);

function serve(targets: readonly string[], bytes: number): void {
  const chunk = Buffer.alloc(256 * 1024, 0x5a);
  let pending = targets.length;
  for (const target of targets) {
    const colon = target.lastIndexOf(':');
    const server = net.createServer({ noDelay: true }, (socket) => {
      socket.on('error', () => undefined);
      socket.once('data', (request: Buffer) => {
        if (request.subarray(0, 4).toString() !== 'bulk') {
          socket.end('!');
          return;
        }
        let sent = 0;
        const pump = (): void => {
          while (sent < bytes) {
            sent += chunk.length;
            if (!socket.write(chunk)) {
              socket.once('drain', pump);
              return;
            }
          }
          socket.end();
        };
        pump();
      });
    });
    server.listen({ host: target.slice(0, colon), port: Number(target.slice(colon + 1)), backlog: 4096 }, () => {
      if (--pending === 0) console.log('ready');
    });
  }
}

function forward(listenIp: string, port: number, dialIp: string, allow: string): void {
  const spec = { key: `tcp/${listenIp}:${String(port)}`, protocol: 'tcp', listenIp, port, dialIp, allow: [allow], forward: { protocol: 'tcp', hostIp: dialIp, hostPort: port, source: 'bench', owner: 'bench' } } as const;
  tcpForwarder(spec, { logger: pino({ level: 'silent' }) }).subscribe({ next: () => { console.log('ready'); }, error: (err: unknown) => { console.error(String(err)); process.exit(1); } });
}

function download(host: string, port: number, bytes: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    let got = 0;
    const socket = net.connect({ host, port, noDelay: true }, () => socket.write('bulk'));
    socket.on('data', (c: Buffer) => (got += c.length));
    socket.once('error', reject);
    socket.once('end', () => {
      const seconds = (performance.now() - t0) / 1000;
      socket.destroy();
      if (got < bytes) reject(new Error(`got ${String(got)} of ${String(bytes)} bytes from ${host}:${String(port)}`));
      else resolve(got / 1e6 / seconds);
    });
  });
}

function firstByte(host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const socket = net.connect({ host, port, noDelay: true }, () => socket.write('hi'));
    socket.once('data', () => {
      resolve(performance.now() - t0);
      socket.destroy();
    });
    socket.once('error', reject);
  });
}

async function measure(bytes: number, runs: number, connects: number, targets: readonly string[]): Promise<void> {
  const parsed = targets.map((t) => {
    const [name = '', where = ''] = t.split('=');
    const colon = where.lastIndexOf(':');
    return { name, host: where.slice(0, colon), port: Number(where.slice(colon + 1)) };
  });
  const mbs = new Map<string, number[]>(parsed.map((t) => [t.name, []]));
  const ms = new Map<string, number[]>(parsed.map((t) => [t.name, []]));
  for (const t of parsed) await download(t.host, t.port, bytes); // warm every path
  for (let i = 0; i < runs; i++) for (const t of parsed) mbs.get(t.name)!.push(await download(t.host, t.port, bytes));
  for (let i = 0; i < connects; i++) for (const t of parsed) ms.get(t.name)!.push(await firstByte(t.host, t.port));
  for (const t of parsed) {
    const figure = (name: string, value: number, unit: string, extra: Record<string, unknown> = {}): void => {
      console.log(JSON.stringify({ name: `loopback.${t.name}.${name}`, value, unit, ...extra }));
    };
    figure('throughput', round(percentile(mbs.get(t.name)!, 50), 1), 'MB/s', { runs, note: `median of ${String(runs)} downloads of ${String(bytes >> 20)} MiB, host netns to VM netns over a veth pair` });
    figure('connect.p50', round(percentile(ms.get(t.name)!, 50)), 'ms', { samples: connects, note: 'connect until the first byte of the answer' });
    figure('connect.p99', round(percentile(ms.get(t.name)!, 99)), 'ms', { samples: connects });
    const direct = parsed[0]!.name;
    if (t.name === direct) continue;
    // Each run against the direct run just before it: a shared machine's drift moves both alike.
    const ratio = percentile(mbs.get(t.name)!.map((x, i) => x / mbs.get(direct)![i]!), 50);
    figure('throughput.ratio', round(ratio, 3), `x ${direct}`, { note: 'median of adjacent pairs' });
    figure('connect.overhead.p50', round(percentile(ms.get(t.name)!, 50) - percentile(ms.get(direct)!, 50)), 'ms', { note: `set-up p50 over ${direct}'s` });
  }
}

if (role === 'server') serve(args, Number(process.env['BENCH_BYTES']));
else if (role === 'forwarder') forward(args[0] ?? '', Number(args[1]), args[2] ?? '', args[3] ?? '');
else if (role === 'client') await measure(Number(args[0]), Number(args[1]), Number(args[2]), args.slice(3));
else throw new Error(`unknown role ${role}`);
