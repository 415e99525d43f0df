/**
 * Helpers for the end-to-end tests across namespaces (test/loopback.test.ts, test/e2e.test.ts):
 * a "host" network namespace joined to the root namespace (the "VM", where the real engines run)
 * by a veth pair with private test addresses, processes whose output is kept for failure
 * messages, and what `ss` and `iptables-save` say. Only addresses in the namespace and veth pair
 * made here, and loopback, are ever a target. Every command runs with an argument array.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { alive, run, succeeds, waitFor } from './engines.js';

export const repo = fileURLToPath(new URL('..', import.meta.url));

export interface Proc {
  readonly name: string;
  readonly child: ChildProcess;
  output(): string;
  readonly exited: Promise<number | string>;
}

export function start(name: string, cmd: string, args: readonly string[], env: NodeJS.ProcessEnv = process.env): Proc {
  const child = spawn(cmd, args, { cwd: repo, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let text = '';
  const keep = (chunk: Buffer): void => {
    text += chunk.toString();
    if (text.length > 400_000) text = text.slice(-200_000);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const exited = new Promise<number | string>((resolve) => {
    child.once('exit', (code, signal) => { resolve(code ?? signal ?? 'unknown'); });
    child.once('error', (err) => { resolve(err.message); });
  });
  return { name, child, output: () => text, exited };
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves once it has exited. */
export async function stop(proc: Proc, graceMs = 10_000): Promise<number | string> {
  const pid = proc.child.pid;
  if (pid !== undefined && alive(pid)) {
    proc.child.kill('SIGTERM');
    const timer = setTimeout(() => proc.child.kill('SIGKILL'), graceMs);
    try {
      return await proc.exited;
    } finally {
      clearTimeout(timer);
    }
  }
  return proc.exited;
}

export function tail(proc: Proc, lines = 40): string {
  return `--- ${proc.name} (last lines) ---\n${proc.output().trimEnd().split('\n').slice(-lines).join('\n')}`;
}

/** Runs `cmd args`, resolving to stdout as bytes; rejects unless it exits 0. */
export function runBytes(cmd: string, args: readonly string[], timeoutMs = 30_000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    child.once('error', reject);
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(Buffer.concat(out));
      else reject(new Error(`${cmd} ${args.join(' ')} failed (${signal ?? `exit ${String(code)}`}): ${err.trim()}`));
    });
  });
}

/** A namespace `ns` holding `hostAddr/30`, joined by veth `vethVm` (holding `vmAddr/30`) to the root namespace. */
export interface NsPair {
  readonly ns: string;
  readonly vethVm: string;
  readonly hostAddr: string;
  readonly vmAddr: string;
}

/** Makes the pair in 10.213.N.0/30 (N unused here); `cleanups` gets what removes it. */
export async function makeNsPair(tag: string, cleanups: (() => Promise<unknown>)[]): Promise<NsPair> {
  const suffix = `${tag}${String(process.pid % 100_000)}`;
  const used = (await run('ip', ['-4', '-o', 'addr', 'show'])).stdout;
  let octet = -1;
  for (let i = 0; i < 250 && octet < 0; i++) if (!used.includes(`10.213.${String((process.pid + i + 97) % 250)}.`)) octet = (process.pid + i + 97) % 250;
  if (octet < 0) throw new Error('no free 10.213.N.0/30 subnet');
  const pair = { ns: `pl${suffix}`, vethVm: `plv${suffix}`, hostAddr: `10.213.${String(octet)}.1`, vmAddr: `10.213.${String(octet)}.2` };
  const vethHost = `plh${suffix}`;
  cleanups.push(() => run('ip', ['netns', 'del', pair.ns]).catch(() => undefined));
  cleanups.push(() => run('ip', ['link', 'del', pair.vethVm]).catch(() => undefined));
  await run('ip', ['netns', 'add', pair.ns]);
  await run('ip', ['link', 'add', pair.vethVm, 'type', 'veth', 'peer', 'name', vethHost]);
  await run('ip', ['link', 'set', vethHost, 'netns', pair.ns]);
  await run('ip', ['addr', 'add', `${pair.vmAddr}/30`, 'dev', pair.vethVm]);
  await run('ip', ['link', 'set', pair.vethVm, 'up']);
  await run('ip', ['-n', pair.ns, 'addr', 'add', `${pair.hostAddr}/30`, 'dev', vethHost]);
  await run('ip', ['-n', pair.ns, 'link', 'set', vethHost, 'up']);
  await run('ip', ['-n', pair.ns, 'link', 'set', 'lo', 'up']);
  await waitFor(() => succeeds('ip', ['netns', 'exec', pair.ns, 'busybox', 'ping', '-c', '1', '-W', '1', pair.vmAddr]), 10_000, 'the veth pair to carry traffic');
  return pair;
}

/** `ss` lines of listening TCP and bound UDP sockets on `addr` (any port unless given), in namespace `ns` (root by default). */
export async function socketsOn(addr: string, port?: number, ns?: string): Promise<string[]> {
  const filter = ['src', addr, ...(port === undefined ? [] : ['and', 'sport', '=', `:${String(port)}`])];
  const prefix = ns === undefined ? [] : ['netns', 'exec', ns];
  const lines: string[] = [];
  for (const flags of ['-Hltnp', '-Hlunp']) {
    const out = ns === undefined ? (await run('ss', [flags, ...filter])).stdout : (await run('ip', [...prefix, 'ss', flags, ...filter])).stdout;
    lines.push(...out.split('\n').filter((l) => l.trim() !== ''));
  }
  return lines;
}

/** Lines of `iptables-save` and `ip6tables-save` (whichever exist) that match `pattern`. */
export async function ruleLines(pattern: RegExp): Promise<string[]> {
  const lines: string[] = [];
  for (const cmd of ['iptables-save', 'ip6tables-save']) {
    const out = await run(cmd, []).then((r) => r.stdout, () => '');
    lines.push(...out.split('\n').filter((l) => pattern.test(l)).map((l) => `${cmd}: ${l}`));
  }
  return lines;
}

/** A UDP client: sends until a reply comes, prints it (run inside a namespace with `ip netns exec`). */
export const udpClient = `
const dgram = require('node:dgram');
const [host, port, text] = process.argv.slice(1);
const s = dgram.createSocket('udp4');
let tries = 0;
const send = () => {
  if (tries++ === 10) { console.error('no reply'); process.exit(1); }
  s.send(text, Number(port), host);
};
s.on('message', (m) => { process.stdout.write(m.toString()); process.exit(0); });
s.bind(0, () => { send(); setInterval(send, 300); });
`;

/** A UDP echo on port 53 (run inside the container's network namespace with nsenter). */
export const udpEcho = `
const dgram = require('node:dgram');
const s = dgram.createSocket('udp4');
s.on('message', (m, r) => s.send('echo:' + m.toString(), r.port, r.address));
s.bind(53, '0.0.0.0', () => console.log('ready'));
`;

// ---------------------------------------------------------------------------------------------
// Real CNI (Debian's containernetworking-plugins), called as a runtime does

export const cniPath = '/usr/lib/cni';

/** The CNI-HOSTPORT-* chains that portmap makes and its DEL leaves behind. */
const portmapChains = ['CNI-HOSTPORT-DNAT', 'CNI-HOSTPORT-SETMARK', 'CNI-HOSTPORT-MASQ'];

export interface CniNetwork {
  /** `bridge` then `portmap` ADD for the network namespace `netns`, publishing `mappings`. */
  add(netns: string, mappings: readonly { hostPort: number; containerPort: number; protocol: 'tcp' | 'udp'; hostIP: string }[]): Promise<void>;
  /** `portmap` then `bridge` DEL, then what DEL leaves (the bridge, the IPAM store, portmap's chains if this made them). */
  remove(): Promise<void>;
}

function plugin(type: string, command: 'ADD' | 'DEL', id: string, netns: string, config: object): Promise<string> {
  return new Promise((resolve, reject) => {
    const env = { ...process.env, CNI_COMMAND: command, CNI_CONTAINERID: id, CNI_NETNS: netns, CNI_IFNAME: 'eth0', CNI_PATH: cniPath };
    const child = spawn(`${cniPath}/${type}`, [], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (out += c.toString()));
    child.once('error', reject);
    child.once('close', (code) => {
      if (code === 0) resolve(out);
      else reject(new Error(`CNI ${type} ${command} failed (exit ${String(code)}): ${out.trim()}`));
    });
    child.stdin.end(JSON.stringify(config));
  });
}

/** A CNI network `name` on bridge `bridge` with `subnet`, for one container `id`, as nerdctl sets one up. */
export async function cniNetwork(name: string, bridge: string, subnet: string, id: string): Promise<CniNetwork> {
  const before = (await run('iptables-save', ['-t', 'nat'])).stdout;
  const madeHere = portmapChains.filter((c) => !before.includes(`:${c} `));
  const dataDir = `/run/${name}-ipam`;
  const base = { cniVersion: '0.4.0', name };
  const bridgeConfig = { ...base, type: 'bridge', bridge, isGateway: true, ipMasq: true, hairpinMode: true, ipam: { type: 'host-local', ranges: [[{ subnet }]], dataDir } };
  let netnsPath = '';
  let prevResult: unknown;
  let mappings: unknown[] = [];
  const portmapConfig = (): object => ({ ...base, type: 'portmap', capabilities: { portMappings: true }, runtimeConfig: { portMappings: mappings }, prevResult });
  return {
    add: async (netns, wanted) => {
      netnsPath = netns;
      mappings = [...wanted];
      prevResult = JSON.parse(await plugin('bridge', 'ADD', id, netns, bridgeConfig));
      await plugin('portmap', 'ADD', id, netns, portmapConfig());
    },
    remove: async () => {
      const netns = netnsPath;
      netnsPath = '';
      if (netns !== '') {
        await plugin('portmap', 'DEL', id, netns, portmapConfig()).catch(() => undefined);
        await plugin('bridge', 'DEL', id, netns, bridgeConfig).catch(() => undefined);
      }
      await run('ip', ['link', 'del', bridge]).catch(() => undefined);
      await run('rm', ['-rf', dataDir]);
      await removeChainsIfUnused(madeHere);
    },
  };
}

/**
 * Removes `chains` (portmap's, which did not exist before this network was made, so everything in
 * them is portmap's static rules for it), every rule jumping to them, unless a container's
 * `CNI-DN-*` chain is still entered from them.
 */
async function removeChainsIfUnused(chains: readonly string[]): Promise<void> {
  const text = (await run('iptables-save', ['-t', 'nat'])).stdout.split('\n');
  const present = chains.filter((c) => text.some((l) => l.startsWith(`:${c} `)));
  if (present.length === 0 || text.some((l) => present.some((c) => l.startsWith(`-A ${c} `)) && / -j CNI-DN-/.test(l))) return;
  const jumps = text.filter((l) => l.startsWith('-A ') && !present.some((c) => l.startsWith(`-A ${c} `)) && present.some((c) => l.endsWith(`-j ${c}`)));
  const restore = ['*nat', ...jumps.map((l) => `-D${l.slice(2)}`), ...present.map((c) => `-F ${c}`), ...present.map((c) => `-X ${c}`), 'COMMIT', ''].join('\n');
  await run('iptables-restore', ['--noflush'], { input: restore });
}
