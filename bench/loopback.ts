/**
 * Loopback-published ports, the two candidate mechanisms side by side (docs/loopback.md): a
 * "host" and a "VM" network namespace made here, joined by a veth pair (10.214.N.1 host side,
 * 10.214.N.2 VM side). In the VM a server listens on 127.0.0.1 (what `-p 127.0.0.1:P:80` gives)
 * and, as the baseline, on the VM address itself. From the host namespace a client downloads
 * 1 GiB and times connection set-up through:
 * - `direct`: the server on the VM address (no mechanism at all, the upper bound);
 * - `forwarder`: portstream's loopback forwarder (its own process) on the VM address, dialling 127.0.0.1;
 * - `dnat.nft` / `dnat.legacy`: a tagged DNAT rule to 127.0.0.1 (iptables-nft / iptables-legacy)
 *   with route_localnet=1 on the VM's veth.
 * Everything is made inside the two namespaces, so no rule ever touches the machine's own tables,
 * and the namespaces (with their rules and sysctls) are deleted at the end, also on failure.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { addDnat, removeDnat, sweepDnat, type DnatBinding } from './loopbackDnat.js';
import { report, type Figure } from './stats.js';
import { findBinary, run } from '../test/engines.js';

const node = process.execPath;
const script = fileURLToPath(new URL('./loopbackNode.ts', import.meta.url));

function inNs(ns: string, args: readonly string[], env: NodeJS.ProcessEnv = process.env): ChildProcess {
  return spawn('ip', ['netns', 'exec', ns, node, '--import', 'tsx', script, ...args], { env, stdio: ['ignore', 'pipe', 'inherit'] });
}

/** Resolves once `child` prints `ready`; rejects if it exits first. */
function ready(child: ChildProcess, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stdout! });
    lines.on('line', (line) => {
      if (line === 'ready') resolve();
    });
    child.once('exit', (code) => { reject(new Error(`${what} exited (${String(code)}) before it was ready`)); });
  });
}

async function freeOctet(): Promise<number> {
  const used = (await run('ip', ['-4', '-o', 'addr', 'show'])).stdout;
  for (let i = 0; i < 250; i++) {
    const octet = (process.pid + i) % 250;
    if (!used.includes(`10.214.${String(octet)}.`)) return octet;
  }
  throw new Error('no free 10.214.N.0/30');
}

/** Makes the two namespaces and the veth pair; returns what to undo. */
async function makeNamespaces(vm: string, host: string, vmAddr: string, hostAddr: string): Promise<string> {
  const veth = `plb${String(process.pid % 100_000)}`;
  await run('ip', ['netns', 'add', vm]);
  await run('ip', ['netns', 'add', host]);
  await run('ip', ['link', 'add', veth, 'netns', vm, 'type', 'veth', 'peer', 'name', veth, 'netns', host]);
  await run('ip', ['-n', vm, 'addr', 'add', `${vmAddr}/30`, 'dev', veth]);
  await run('ip', ['-n', host, 'addr', 'add', `${hostAddr}/30`, 'dev', veth]);
  for (const ns of [vm, host]) {
    await run('ip', ['-n', ns, 'link', 'set', veth, 'up']);
    await run('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
  }
  return veth;
}

export async function benchLoopback(quick: boolean): Promise<void> {
  if (process.getuid?.() !== 0 || findBinary('ip') === undefined || findBinary('iptables') === undefined) {
    process.stderr.write('bench: the loopback figures need root, ip and iptables; skipped\n');
    return;
  }
  const bytes = (quick ? 256 : 1024) * 1024 * 1024;
  const runs = quick ? 2 : 5;
  const connects = quick ? 200 : 1000;
  const octet = await freeOctet();
  const vmAddr = `10.214.${String(octet)}.2`;
  const hostAddr = `10.214.${String(octet)}.1`;
  const vm = `plbvm${String(process.pid)}`;
  const host = `plbhost${String(process.pid)}`;
  const children: ChildProcess[] = [];
  try {
    const veth = await makeNamespaces(vm, host, vmAddr, hostAddr);
    const port = { direct: 41_001, forwarder: 41_002, nft: 41_003, legacy: 41_004 };
    const server = inNs(vm, ['server', `${vmAddr}:${String(port.direct)}`, ...[port.forwarder, port.nft, port.legacy].map((p) => `127.0.0.1:${String(p)}`)], { ...process.env, BENCH_BYTES: String(bytes) });
    children.push(server);
    await ready(server, 'the server');
    const forwarder = inNs(vm, ['forwarder', vmAddr, String(port.forwarder), '127.0.0.1', `${hostAddr}/30`]);
    children.push(forwarder);
    await ready(forwarder, 'the forwarder');

    const targets = [`direct=${vmAddr}:${String(port.direct)}`, `forwarder=${vmAddr}:${String(port.forwarder)}`];
    await run('ip', ['netns', 'exec', vm, 'sysctl', '-q', '-w', `net.ipv4.conf.${veth}.route_localnet=1`]);
    for (const [flavour, command] of [['nft', 'iptables-nft'], ['legacy', 'iptables-legacy']] as const) {
      if (findBinary(command) === undefined) continue;
      const binding: DnatBinding = { iface: veth, connectAddr: vmAddr, protocol: 'tcp', port: port[flavour] };
      const prefix = ['ip', 'netns', 'exec', vm];
      try {
        await sweepDnat(prefix, command);
        await addDnat(prefix, command, binding);
        await addDnat(prefix, command, binding); // idempotent: the second add finds the rule
        const rules = (await run('ip', ['netns', 'exec', vm, `${command}-save`, '-t', 'nat'])).stdout.split('\n').filter((l) => l.includes('--to-destination'));
        if (rules.length !== 1) throw new Error(`expected one DNAT rule after two adds, found ${String(rules.length)}`);
        targets.push(`dnat.${flavour}=${vmAddr}:${String(port[flavour])}`);
      } catch (error) {
        process.stderr.write(`bench: DNAT with ${command} could not be set up here (${String(error)}); left out\n`);
        await removeDnat(prefix, command, binding);
      }
    }
    const client = spawn('ip', ['netns', 'exec', host, node, '--import', 'tsx', script, 'client', String(bytes), String(runs), String(connects), ...targets], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(client);
    for await (const line of createInterface({ input: client.stdout })) report(JSON.parse(line) as Figure);
    for (const command of ['iptables-nft', 'iptables-legacy']) {
      if (findBinary(command) !== undefined) await sweepDnat(['ip', 'netns', 'exec', vm], command).catch(() => undefined);
    }
  } finally {
    for (const child of children) child.kill('SIGKILL');
    for (const ns of [vm, host]) if (existsSync(`/run/netns/${ns}`)) await run('ip', ['netns', 'del', ns]).catch(() => undefined);
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await benchLoopback(process.argv.includes('--quick'));
