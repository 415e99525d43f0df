/**
 * The host side's TCP proxy against a direct loopback connection: throughput (a bulk download
 * from the "VM" server) and connection set-up time (connect until the server's first byte).
 *
 * The proxy runs in a worker thread, with its own event loop, as it runs in its own process on a
 * real host; client and server share the main thread in both cases, so the two runs differ only
 * in the hop through the proxy. The "VM" listens on 127.0.0.2:P, the proxy on 127.0.0.1:P.
 */
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import { percentile, report, round } from './stats.js';

const VM = '127.0.0.2';

/**
 * A server on the VM address, told what to do by the first bytes: `bulk` streams `bytes` then
 * ends; `sink` reads to the end of stream and answers `ok`; anything else gets one byte.
 */
async function vmServer(bytes: number): Promise<{ port: number; close: () => Promise<void> }> {
  const chunk = Buffer.alloc(256 * 1024, 0x5a);
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ noDelay: true }, (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    socket.once('data', (request: Buffer) => {
      const command = request.subarray(0, 4).toString();
      if (command === 'sink') {
        socket.resume();
        socket.once('end', () => socket.end('ok'));
        return;
      }
      if (command !== 'bulk') {
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
  await new Promise<void>((resolve) => server.listen(0, VM, resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    port,
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => {
          resolve();
        });
      }),
  };
}

/** The proxy 127.0.0.1:port → 127.0.0.2:port in a worker; resolves once it listens. */
async function proxyWorker(port: number): Promise<{ close: () => Promise<void> }> {
  const proxyModule = new URL('../src/host/proxy.ts', import.meta.url).href;
  // A worker does not inherit tsx's loader: register it there before importing TypeScript.
  const tsxApi = import.meta.resolve('tsx/esm/api');
  const code = `
    const { parentPort, workerData } = require('node:worker_threads');
    import(workerData.tsxApi).then(({ register }) => { register(); return import(workerData.proxyModule); }).then(({ tcpProxy }) => {
      const { pino } = require('pino');
      const binding = { protocol: 'tcp', hostIp: '127.0.0.1', hostPort: workerData.port, containerPort: workerData.port };
      const sub = tcpProxy(binding, () => '${VM}', { logger: pino({ level: 'silent' }) }).subscribe({
        next: () => parentPort.postMessage('ready'),
        error: (err) => parentPort.postMessage('error: ' + err.message),
      });
      parentPort.on('message', () => { sub.unsubscribe(); parentPort.close(); });
    });`;
  const worker = new Worker(code, { eval: true, workerData: { proxyModule, tsxApi, port } });
  const first = await new Promise<string>((resolve, reject) => {
    worker.once('message', (m: string) => { resolve(m); });
    worker.once('error', reject);
  });
  if (first !== 'ready') throw new Error(`the proxy worker did not start: ${first}`);
  return {
    close: async () => {
      worker.postMessage('stop');
      await new Promise((resolve) => worker.once('exit', resolve));
    },
  };
}

/** Downloads everything from the bulk server through `host`; resolves to MB/s. */
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
      if (got < bytes) reject(new Error(`got ${String(got)} of ${String(bytes)} bytes`));
      else resolve(got / 1e6 / seconds);
    });
  });
}

/** Uploads `bytes` through `host` and waits for the server's answer; resolves to MB/s. */
function upload(host: string, port: number, bytes: number): Promise<number> {
  const chunk = Buffer.alloc(256 * 1024, 0x5a);
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    let sent = 0;
    const socket = net.connect({ host, port, noDelay: true }, () => {
      socket.write('sink');
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
    socket.once('data', () => {
      const seconds = (performance.now() - t0) / 1000;
      socket.destroy();
      resolve(sent / 1e6 / seconds);
    });
    socket.once('error', reject);
  });
}

/** Connect, ask, and wait for the first byte of the answer; resolves to ms. */
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

export async function benchHostProxy(quick: boolean): Promise<void> {
  const bytes = (quick ? 256 : 1024) * 1024 * 1024;
  const runs = quick ? 3 : 7;
  const connects = quick ? 200 : 1000;
  const server = await vmServer(bytes);
  const proxy = await proxyWorker(server.port);
  try {
    const mib = String(bytes >> 20);
    for (const [direction, transfer] of [
      ['download', download],
      ['upload', upload],
    ] as const) {
      // Warm both paths, then alternate so that neither gets the quieter moments.
      await transfer(VM, server.port, bytes);
      await transfer('127.0.0.1', server.port, bytes);
      const direct: number[] = [];
      const proxied: number[] = [];
      for (let i = 0; i < runs; i++) {
        direct.push(await transfer(VM, server.port, bytes));
        proxied.push(await transfer('127.0.0.1', server.port, bytes));
      }
      const d = percentile(direct, 50);
      const p = percentile(proxied, 50);
      // Each proxied run against the direct run just before it: a machine whose speed drifts
      // (a shared VM) moves both of a pair alike, and the median of the pairs ignores a bad one.
      const ratio = percentile(proxied.map((x, i) => x / direct[i]!), 50);
      const what = direction === 'download' ? 'VM to host client, as an HTTP response' : 'host client to VM';
      report({ name: `host.proxy.${direction}.direct`, value: round(d, 1), unit: 'MB/s', runs, note: `median of ${String(runs)} transfers of ${mib} MiB over loopback (${what})` });
      report({ name: `host.proxy.${direction}.proxied`, value: round(p, 1), unit: 'MB/s', runs, note: "the same through portstream host's TCP proxy (a worker thread)" });
      report({ name: `host.proxy.${direction}.ratio`, value: round(ratio, 3), unit: 'x', target: '>= 0.8', note: 'proxied / direct throughput, the median of adjacent pairs' });
    }

    const directMs: number[] = [];
    const proxiedMs: number[] = [];
    for (let i = 0; i < connects; i++) {
      directMs.push(await firstByte(VM, server.port));
      proxiedMs.push(await firstByte('127.0.0.1', server.port));
    }
    const dc = percentile(directMs, 50);
    const pc = percentile(proxiedMs, 50);
    report({ name: 'host.proxy.connect.direct.p50', value: round(dc), unit: 'ms', samples: connects, note: 'connect to first byte from the server' });
    report({ name: 'host.proxy.connect.proxied.p50', value: round(pc), unit: 'ms', samples: connects });
    report({ name: 'host.proxy.connect.proxied.p99', value: round(percentile(proxiedMs, 99)), unit: 'ms', samples: connects });
    report({ name: 'host.proxy.connect.overhead.p50', value: round(pc - dc), unit: 'ms', note: 'the proxy accepts, then connects to the VM, then relays' });
    report({ name: 'host.proxy.connect.ratio', value: round(dc / pc, 3), unit: 'x', note: 'direct / proxied set-up time (1 = no cost)' });
  } finally {
    await proxy.close();
    await server.close();
  }
}
