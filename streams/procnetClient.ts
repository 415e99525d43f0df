/**
 * The machine's side of the host-network source: the socket table read over NETLINK_SOCK_DIAG
 * (native/sockdiag.c, in the project's addon) or, where that is not available, from
 * /proc/net/{tcp,tcp6,udp,udp6}; and which sockets are the agent's own.
 */
import { openSync, readdirSync, readFileSync, readlinkSync, readSync } from 'node:fs';
import { basename } from 'node:path';
import { nativeAddon } from '../src/native/addon.js';
import { errorMessage } from '../src/errors.js';
import type { Logger } from '../src/log.js';
import type { SocketRead, SocketTable } from './procnet.js';
import { formatAddress, parseProcNet, type ListeningSocket } from './procnetTable.js';

const recordSize = 28;

/** The sock_diag reader's records as sockets. */
export function decodeRecords(raw: Buffer): ListeningSocket[] {
  const sockets: ListeningSocket[] = [];
  for (let at = 0; at + recordSize <= raw.length; at += recordSize) {
    const family = raw[at] === 6 ? 6 : 4;
    const flags = raw[at + 2]!;
    sockets.push({
      protocol: raw[at + 1] === 17 ? 'udp' : 'tcp',
      family,
      ip: formatAddress(raw.subarray(at + 12, at + (family === 6 ? 28 : 16))),
      port: raw.readUInt16BE(at + 4),
      inode: raw.readUInt32LE(at + 8),
      ...((flags & 1) !== 0 && { v6only: (flags & 2) !== 0 }),
    });
  }
  return sockets;
}

/** The namespace's listeners over NETLINK_SOCK_DIAG; throws when the addon or the kernel cannot. */
export function sockDiagTable(proc = '/proc'): SocketTable {
  const addon = nativeAddon() as Partial<ReturnType<typeof nativeAddon>>;
  if (typeof addon.listeners !== 'function') throw new Error('the native addon was built without native/sockdiag.c');
  const listeners = addon.listeners.bind(addon);
  listeners(); // fails here, at start-up, if the kernel has no inet_diag for a family or protocol
  return {
    name: 'NETLINK_SOCK_DIAG',
    read: (): SocketRead => {
      const raw = listeners();
      return { fingerprint: raw, decode: () => decodeRecords(raw) };
    },
    ownInodes: ownSocketInodes(proc),
    changeToken: inUseCounts(proc),
  };
}

const procFiles = [
  ['tcp', 'tcp', 4],
  ['tcp6', 'tcp', 6],
  ['udp', 'udp', 4],
  ['udp6', 'udp', 6],
] as const;

/**
 * The namespace's listeners from /proc/net. These files list every connection too, and say
 * nothing of IPV6_V6ONLY: a `::` socket is taken to be what net.ipv6.bindv6only makes it.
 * A file that is missing (no IPv6) reads as empty; a line that cannot be read is said once.
 */
export function procNetTable(log: Logger, proc = '/proc', why = ''): SocketTable {
  const v6only = readOr(`${proc}/sys/net/ipv6/bindv6only`, '0').trim() === '1';
  const said = new Set<string>();
  return {
    name: `/proc/net/{tcp,tcp6,udp,udp6}${why}`,
    read: (): SocketRead => {
      const texts = procFiles.map(([file]) => readOr(`${proc}/net/${file}`, ''));
      return {
        fingerprint: texts.join('\0'),
        decode: () =>
          procFiles.flatMap(([, protocol, family], i) => {
            const { sockets, problems } = parseProcNet(texts[i]!, protocol, family);
            for (const p of problems) {
              if (said.has(p)) continue;
              said.add(p);
              log.warn(`cannot read a line of /proc/net: ${p}`);
            }
            return family === 6 ? sockets.map((s) => ({ ...s, v6only })) : sockets;
          }),
      };
    },
    ownInodes: ownSocketInodes(proc),
    changeToken: inUseCounts(proc),
  };
}

/**
 * The kernel's counts of TCP and UDP sockets in use in this namespace (/proc/net/sockstat and
 * sockstat6): listen() and a UDP bind() each add one, so counts that stay put mean, almost
 * always, no new listener. The files stay open and are re-read from offset 0 (one pread each),
 * which costs a few microseconds where a dump costs a millisecond.
 */
export function inUseCounts(proc = '/proc'): () => string {
  const fds: number[] = [];
  for (const file of ['sockstat', 'sockstat6']) {
    try {
      fds.push(openSync(`${proc}/net/${file}`, 'r'));
    } catch {
      // no IPv6: sockstat alone
    }
  }
  const buffer = Buffer.allocUnsafe(4096);
  return () => {
    let token = '';
    for (const fd of fds) {
      const text = buffer.toString('latin1', 0, readSync(fd, buffer, 0, buffer.length, 0));
      for (const match of text.matchAll(/^(TCP6?|UDP6?): inuse (\d+)/gm)) token += `${match[1] ?? ''}=${match[2] ?? ''} `;
    }
    return token;
  };
}

/** NETLINK_SOCK_DIAG where it works, else /proc/net with why in its name (for the one log line). */
export function nodeSocketTable(log: Logger, opts: { readonly reader?: 'sock_diag' | 'proc'; readonly proc?: string } = {}): SocketTable {
  if (opts.reader === 'proc') return procNetTable(log, opts.proc);
  try {
    return sockDiagTable(opts.proc);
  } catch (error) {
    return procNetTable(log, opts.proc, ` (NETLINK_SOCK_DIAG cannot be used: ${errorMessage(error).split('\n')[0] ?? ''})`);
  }
}

function readOr(path: string, fallback: string): string {
  try {
    return readFileSync(path, 'latin1');
  } catch {
    return fallback;
  }
}

/**
 * Which of the candidate inodes are sockets of this process (placeholders, the status endpoint,
 * loopback forwarders: every socket the agent holds has a descriptor) or of a `portstream host`
 * running in the same namespace. Processes are recognised by their command line once per pid.
 */
export function ownSocketInodes(proc = '/proc'): (candidates: ReadonlySet<number>) => ReadonlySet<number> {
  let hosts = new Map<string, boolean>();
  return (candidates) => {
    const left = new Set(candidates);
    const own = new Set<number>();
    socketsOf(`${proc}/self/fd`, left, own);
    if (left.size === 0) return own;
    const next = new Map<string, boolean>();
    for (const pid of listDir(proc)) {
      if (!/^\d+$/.test(pid)) continue;
      const isHost = hosts.get(pid) ?? isPortstreamHost(readOr(`${proc}/${pid}/cmdline`, '').split('\0'));
      next.set(pid, isHost);
      if (isHost && left.size > 0) socketsOf(`${proc}/${pid}/fd`, left, own);
    }
    hosts = next;
    return own;
  };
}

/** `portstream host ...` however it was started: the bin, the bundle, the executable, or src/main. */
export function isPortstreamHost(argv: readonly string[]): boolean {
  for (let i = 0; i + 1 < argv.length; i++) {
    if (argv[i + 1] === 'host' && /^(portstream(\.m?js)?|main\.[jt]s)$/.test(basename(argv[i]!))) return true;
  }
  return false;
}

function socketsOf(fdDir: string, left: Set<number>, own: Set<number>): void {
  for (const fd of listDir(fdDir)) {
    let link: string;
    try {
      link = readlinkSync(`${fdDir}/${fd}`);
    } catch {
      continue; // closed meanwhile
    }
    const match = /^socket:\[(\d+)\]$/.exec(link);
    if (!match) continue;
    const inode = Number(match[1]);
    if (left.delete(inode)) own.add(inode);
  }
}

function listDir(path: string): string[] {
  try {
    return readdirSync(path);
  } catch {
    return [];
  }
}
