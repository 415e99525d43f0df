/**
 * Helpers for the iptables integration tests and benchmark: CNI portmap-style chains in the nat
 * table that a test makes and always removes again, and "the truth" about listening sockets from
 * /proc/net/{tcp,tcp6,udp,udp6}.
 *
 * Only chains this harness made are ever touched: `CNI-DN-pst<pid>-<n>`, and the jumps to them in
 * `CNI-HOSTPORT-DNAT` (which it creates when missing and deletes again only when it is empty and
 * nothing refers to it). Docker's chains and any real CNI chains are left alone. Every command
 * runs with an argument array, never through a shell.
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import type { Family } from '../streams/iptablesRules.js';
import { alive, run } from './engines.js';

export const topChain = 'CNI-HOSTPORT-DNAT';
/** Every chain the harness makes starts with this, then the pid of the process that made it. */
export const chainPrefix = 'CNI-DN-pst';

const command: Readonly<Record<Family, string>> = { ipv4: 'iptables', ipv6: 'ip6tables' };
const saveCommand: Readonly<Record<Family, string>> = { ipv4: 'iptables-save', ipv6: 'ip6tables-save' };
const restoreCommand: Readonly<Record<Family, string>> = { ipv4: 'iptables-restore', ipv6: 'ip6tables-restore' };
const families: readonly Family[] = ['ipv4', 'ipv6'];

export function nat(family: Family, ...args: string[]): Promise<unknown> {
  return run(command[family], ['-w', '5', '-t', 'nat', ...args]);
}

/** `iptables-restore --noflush` (or ip6tables-restore) of `text`: one transaction. */
export function restore(family: Family, text: string): Promise<unknown> {
  return run(restoreCommand[family], ['--noflush'], { input: text });
}

async function chainExists(family: Family, chain: string): Promise<boolean> {
  try {
    await nat(family, '-S', chain);
    return true;
  } catch {
    return false;
  }
}

/** The chains (and jumps to them) that one test made; `removeAll` undoes everything. */
export class NatChains {
  private static counter = 0;
  readonly made: { family: Family; chain: string }[] = [];

  /** A new `CNI-DN-pst…` chain, entered from CNI-HOSTPORT-DNAT (created when missing). */
  async chain(family: Family = 'ipv4'): Promise<string> {
    const chain = this.name(family);
    await ensureTopChain(family);
    await nat(family, '-N', chain);
    await nat(family, '-A', topChain, '-m', 'comment', '--comment', 'portstream test', '-j', chain);
    return chain;
  }

  /**
   * An `iptables-restore --noflush` text that creates a chain per entry of `rules` (named by this
   * set, so `removeAll` removes them) with those rules, and the jumps to them: one transaction.
   */
  async batch(family: Family, rules: readonly (readonly string[])[]): Promise<{ chains: string[]; text: string }> {
    await ensureTopChain(family);
    const chains = rules.map(() => this.name(family));
    const text = [
      '*nat',
      ...chains.map((c) => `:${c} - [0:0]`),
      ...chains.flatMap((c, i) => rules[i]!.map((r) => `-A ${c} ${r}`)),
      ...chains.map((c) => `-A ${topChain} -m comment --comment "portstream test" -j ${c}`),
      'COMMIT',
      '',
    ].join('\n');
    return { chains, text };
  }

  /** A fresh chain name, recorded so that `removeAll` removes the chain if it gets made. */
  private name(family: Family): string {
    const chain = `${chainPrefix}${String(process.pid)}-${String(++NatChains.counter)}`;
    this.made.push({ family, chain });
    return chain;
  }

  /** Flushes and deletes every chain this made, with its jump; then CNI-HOSTPORT-DNAT if now empty. */
  async removeAll(): Promise<void> {
    for (const [family, text] of await this.removeText()) await restore(family, text);
    this.made.length = 0;
    for (const family of families) await removeTopChainIfEmpty(family);
  }

  /**
   * The restore texts (per family) that remove everything this made, one transaction each (the
   * benchmark times one); `removeAll` afterwards still cleans up whatever is left.
   */
  async removeText(): Promise<[Family, string][]> {
    const texts: [Family, string][] = [];
    for (const family of families) {
      const chains = this.made.filter((m) => m.family === family).map((m) => m.chain);
      if (chains.length === 0) continue;
      const text = await removalText(family, chains);
      if (text !== undefined) texts.push([family, text]);
    }
    return texts;
  }
}

/** Removes `chains` and every jump to them from CNI-HOSTPORT-DNAT, in one restore transaction. */
export async function removeChains(family: Family, chains: readonly string[]): Promise<void> {
  const text = await removalText(family, chains);
  if (text !== undefined) await restore(family, text);
  await removeTopChainIfEmpty(family);
}

/** The restore text that deletes the jumps to `chains`, flushes them and deletes them (those that exist). */
async function removalText(family: Family, chains: readonly string[]): Promise<string | undefined> {
  const ours = new Set(chains);
  const rules = (await run(saveCommand[family], ['-t', 'nat'])).stdout.split('\n');
  const existing = new Set(rules.filter((l) => l.startsWith(':')).map((l) => l.slice(1).split(' ')[0]!));
  const jumps = rules.filter((l) => {
    if (!l.startsWith(`-A ${topChain} `)) return false;
    const target = / -j (\S+)$/.exec(l)?.[1];
    return target !== undefined && ours.has(target);
  });
  const present = chains.filter((c) => existing.has(c));
  if (present.length === 0 && jumps.length === 0) return undefined;
  return ['*nat', ...jumps.map((l) => `-D${l.slice(2)}`), ...present.map((c) => `-F ${c}`), ...present.map((c) => `-X ${c}`), 'COMMIT', ''].join('\n');
}

async function ensureTopChain(family: Family): Promise<void> {
  if (await chainExists(family, topChain)) return;
  try {
    await nat(family, '-N', topChain);
  } catch (error) {
    if (!(await chainExists(family, topChain))) throw error; // another test made it meanwhile
  }
}

async function removeTopChainIfEmpty(family: Family): Promise<void> {
  try {
    const rules = (await run(command[family], ['-w', '5', '-t', 'nat', '-S', topChain])).stdout.split('\n').filter((l) => l.startsWith('-A '));
    // -X refuses a chain that something still jumps to: a real CNI set-up keeps its chain
    if (rules.length === 0) await nat(family, '-X', topChain);
  } catch {
    // gone already, or still referenced: leave it
  }
}

/** Chains left by a harness process that is gone (a test run that was killed), in both families. */
export async function sweepLeftovers(): Promise<string[]> {
  const swept: string[] = [];
  for (const family of families) {
    let text: string;
    try {
      text = (await run(saveCommand[family], ['-t', 'nat'])).stdout;
    } catch {
      continue;
    }
    const stale = text
      .split('\n')
      .filter((l) => l.startsWith(`:${chainPrefix}`))
      .map((l) => l.slice(1).split(' ')[0]!)
      .filter((c) => {
        const pid = Number(/^CNI-DN-pst(\d+)-/.exec(c)?.[1]);
        return !Number.isInteger(pid) || pid === process.pid ? false : !alive(pid);
      });
    if (stale.length > 0) {
      await removeChains(family, stale);
      swept.push(...stale.map((c) => `${family} ${c}`));
    }
  }
  return swept;
}

/** Every `CNI-DN-pst…` chain of this process that still exists, in either family. */
export async function ownChainsLeft(): Promise<string[]> {
  const left: string[] = [];
  for (const family of families) {
    const text = (await run(saveCommand[family], ['-t', 'nat'])).stdout;
    for (const line of text.split('\n')) {
      if (line.startsWith(`:${chainPrefix}${String(process.pid)}-`) || line.includes(`-j ${chainPrefix}${String(process.pid)}-`)) left.push(`${family}: ${line}`);
    }
  }
  return left;
}

// ---------------------------------------------------------------------------------------------
// /proc/net

export interface ProcSocket {
  /** `tcp/127.0.0.1:28001`, `udp/[::]:28003`: the model's port key of the local address. */
  readonly key: string;
  readonly port: number;
  /** `0A` is LISTEN for TCP; `07` is an unconnected (bound) UDP socket. */
  readonly state: string;
  readonly inode: number;
}

/** The sockets in /proc/net/{tcp,tcp6,udp,udp6} (this network namespace), optionally only `ports`. */
export function procSockets(filter?: (port: number) => boolean): ProcSocket[] {
  const sockets: ProcSocket[] = [];
  for (const [file, protocol, ipv6] of [
    ['tcp', 'tcp', false],
    ['tcp6', 'tcp', true],
    ['udp', 'udp', false],
    ['udp6', 'udp', true],
  ] as const) {
    let text: string;
    try {
      text = readFileSync(`/proc/net/${file}`, 'utf8');
    } catch {
      continue; // no IPv6 in this kernel
    }
    for (const line of text.split('\n').slice(1)) {
      const fields = line.trim().split(/\s+/);
      const [local, remote, state, inode] = [fields[1], fields[2], fields[3], fields[9]];
      if (local === undefined || remote === undefined || state === undefined || inode === undefined) continue;
      const [addrHex = '', portHex = ''] = local.split(':');
      const port = parseInt(portHex, 16);
      if (filter && !filter(port)) continue;
      const address = ipv6 ? ipv6FromProc(addrHex) : ipv4FromProc(addrHex);
      const host = ipv6 ? `[${address}]` : address;
      sockets.push({ key: `${protocol}/${host}:${String(port)}`, port, state, inode: Number(inode) });
    }
  }
  return sockets;
}

/** Keys of listening TCP sockets and bound, unconnected UDP sockets. */
export function listeningKeys(filter?: (port: number) => boolean, only?: ReadonlySet<number>): Set<string> {
  return new Set(
    procSockets(filter)
      .filter((s) => (s.key.startsWith('tcp/') ? s.state === '0A' : s.state === '07'))
      .filter((s) => !only || only.has(s.inode))
      .map((s) => s.key),
  );
}

/** The socket inodes that process `pid` holds (default: this one). */
export function socketInodes(pid: number | 'self' = 'self'): Set<number> {
  const inodes = new Set<number>();
  const dir = `/proc/${String(pid)}/fd`;
  for (const fd of readdirSync(dir)) {
    try {
      const match = /^socket:\[(\d+)\]$/.exec(readlinkSync(`${dir}/${fd}`));
      if (match) inodes.add(Number(match[1]));
    } catch {
      // closed meanwhile
    }
  }
  return inodes;
}

/** Listening keys of sockets that `pid` (default: this process) holds. */
export function ownListeningKeys(filter?: (port: number) => boolean, pid: number | 'self' = 'self'): Set<string> {
  return listeningKeys(filter, socketInodes(pid));
}

function ipv4FromProc(hex: string): string {
  // one 32-bit word in host (little-endian) order
  const n = parseInt(hex, 16);
  return [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, n >>> 24].join('.');
}

function ipv6FromProc(hex: string): string {
  // four 32-bit words, each in host (little-endian) order
  const bytes: number[] = [];
  for (let w = 0; w < 4; w++) {
    const word = hex.slice(w * 8, w * 8 + 8);
    for (let b = 3; b >= 0; b--) bytes.push(parseInt(word.slice(b * 2, b * 2 + 2), 16));
  }
  const groups = Array.from({ length: 8 }, (_, i) => ((bytes[2 * i]! << 8) | bytes[2 * i + 1]!).toString(16));
  return compressIPv6(groups);
}

/** RFC 5952 text of eight hex groups: the longest run (≥ 2) of zero groups becomes `::`. */
export function compressIPv6(groups: readonly string[]): string {
  let best = -1;
  let bestLength = 1;
  for (let i = 0; i < groups.length; ) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < groups.length && groups[j] === '0') j++;
    if (j - i > bestLength) {
      best = i;
      bestLength = j - i;
    }
    i = j;
  }
  if (best < 0) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLength).join(':')}`;
}
