/**
 * The pure half of the host-network source: the socket tables the kernel shows in
 * `/proc/net/{tcp,tcp6,udp,udp6}`, and the address formatting that the sock_diag reader shares.
 *
 * A line of those files looks like
 *
 *   `   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 40137 1 ...`
 *
 * where an address is the kernel's in-memory bytes printed as 32-bit words in host byte order
 * (`%08X` per word): on a little-endian machine `0100007F` is 127.0.0.1, and an IPv6 address is
 * four such words. The port is plain big-endian hex.
 */
import { formatIPv6 } from '../src/model.js';

/** The protocols the socket table holds. */
export type SocketProtocol = 'tcp' | 'udp';

/** A socket that could accept traffic from outside: TCP in LISTEN, or UDP bound and unconnected. */
export interface ListeningSocket {
  readonly protocol: SocketProtocol;
  /** The table it came from: 4 for tcp/udp, 6 for tcp6/udp6 (whose addresses may be IPv4-mapped). */
  readonly family: 4 | 6;
  /** The local address as text: dotted IPv4, or RFC 5952 IPv6 (`::`, `::1`, `::ffff:10.0.0.1`). */
  readonly ip: string;
  readonly port: number;
  /** The socket's inode, which `/proc/<pid>/fd` links name as `socket:[inode]`. */
  readonly inode: number;
  /** IPV6_V6ONLY of a family-6 socket, when the reader can tell (sock_diag can, /proc/net cannot). */
  readonly v6only?: boolean;
}

/** TCP_LISTEN and TCP_CLOSE from the kernel's tcp_states.h; an unconnected UDP socket is "CLOSE". */
export const TCP_LISTEN = 0x0a;
/** The kernel's TCP_CLOSE state, which a bound, unconnected UDP socket is in. */
export const TCP_CLOSE = 0x07;

/** The kernel state that makes a socket of this protocol a listener. */
export function listeningState(protocol: SocketProtocol): number {
  return protocol === 'tcp' ? TCP_LISTEN : TCP_CLOSE;
}

/** A /proc/net file read: the sockets it lists, and the lines it could not read. */
export interface ParsedTable {
  readonly sockets: ListeningSocket[];
  /** One line per line that could not be read, naming the line and what was wrong with it. */
  readonly problems: string[];
}

const hexWord = /^[0-9A-Fa-f]+$/;

/**
 * The listening sockets of one `/proc/net` file. `family` says which file it is (tcp or tcp6):
 * the address width is checked against it. The header line, blank lines and sockets in other
 * states are skipped; a malformed line is a problem and the rest of the file still counts.
 * A UDP socket is listening when it is in CLOSE with no remote port (bound, never connected).
 */
export function parseProcNet(text: string, protocol: SocketProtocol, family: 4 | 6, littleEndian = true): ParsedTable {
  const sockets: ListeningSocket[] = [];
  const problems: string[] = [];
  const wanted = listeningState(protocol);
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === '' || line.startsWith('sl ')) continue;
    const fields = line.split(/\s+/);
    const parsed = parseLine(fields, family, littleEndian);
    if (typeof parsed === 'string') {
      problems.push(`${protocol}${family === 6 ? '6' : ''} line ${String(i + 1)}: ${parsed}`);
      continue;
    }
    if (parsed.state !== wanted) continue;
    if (protocol === 'udp' && parsed.remotePort !== 0) continue;
    if (parsed.port === 0) continue; // not bound to a port: nothing to reach
    sockets.push({ protocol, family, ip: parsed.ip, port: parsed.port, inode: parsed.inode });
  }
  return { sockets, problems };
}

interface Line {
  readonly ip: string;
  readonly port: number;
  readonly remotePort: number;
  readonly state: number;
  readonly inode: number;
}

/** One data line's fields (sl, local, remote, st, queues, tr, retrnsmt, uid, timeout, inode, ...). */
function parseLine(fields: readonly string[], family: 4 | 6, littleEndian: boolean): Line | string {
  if (fields.length < 10) return `expected at least 10 fields, found ${String(fields.length)}`;
  const local = splitEndpoint(fields[1]!, family);
  if (typeof local === 'string') return `local address ${JSON.stringify(fields[1])}: ${local}`;
  const remote = splitEndpoint(fields[2]!, family);
  if (typeof remote === 'string') return `remote address ${JSON.stringify(fields[2])}: ${remote}`;
  const st = fields[3]!;
  if (!/^[0-9A-Fa-f]{1,2}$/.test(st)) return `state ${JSON.stringify(st)} is not a hex byte`;
  const inodeText = fields[9]!;
  if (!/^\d{1,20}$/.test(inodeText)) return `inode ${JSON.stringify(inodeText)} is not a number`;
  const inode = Number(inodeText);
  if (!Number.isSafeInteger(inode)) return `inode ${inodeText} is out of range`;
  return {
    ip: formatAddress(hexToBytes(local.hex, littleEndian)),
    port: local.port,
    remotePort: remote.port,
    state: Number.parseInt(st, 16),
    inode,
  };
}

function splitEndpoint(field: string, family: 4 | 6): { hex: string; port: number } | string {
  const colon = field.indexOf(':');
  if (colon < 0) return 'no port';
  const hex = field.slice(0, colon);
  const portHex = field.slice(colon + 1);
  const width = family === 4 ? 8 : 32;
  if (hex.length !== width || !hexWord.test(hex)) return `expected ${String(width)} hex digits for an IPv${String(family)} address`;
  if (portHex.length < 1 || portHex.length > 4 || !hexWord.test(portHex)) return 'the port is not 1 to 4 hex digits';
  return { hex, port: Number.parseInt(portHex, 16) };
}

/**
 * The address bytes in network order from the file's hex: each 8-digit word is a 32-bit value
 * printed in host order, so on a little-endian host its bytes come out reversed.
 */
export function hexToBytes(hex: string, littleEndian = true): Uint8Array {
  const bytes = new Uint8Array(hex.length / 2);
  for (let word = 0; word < hex.length / 8; word++) {
    for (let b = 0; b < 4; b++) {
      const from = word * 8 + (littleEndian ? 3 - b : b) * 2;
      bytes[word * 4 + b] = Number.parseInt(hex.slice(from, from + 2), 16);
    }
  }
  return bytes;
}

/** The inverse of `hexToBytes`: what the kernel prints for these address bytes. */
export function bytesToHex(bytes: Uint8Array, littleEndian = true): string {
  let out = '';
  for (let word = 0; word < bytes.length / 4; word++) {
    for (let b = 0; b < 4; b++) {
      const byte = bytes[word * 4 + (littleEndian ? 3 - b : b)]!;
      out += byte.toString(16).toUpperCase().padStart(2, '0');
    }
  }
  return out;
}

/**
 * Address bytes (4 or 16, network order) as text: dotted IPv4, or IPv6 as RFC 5952 writes it
 * (lower case, the longest run of two or more zero groups as `::`, the first of equal runs), with
 * an IPv4-mapped address as `::ffff:a.b.c.d`, as Node and Docker write them.
 */
export function formatAddress(bytes: Uint8Array): string {
  if (bytes.length === 4) return `${String(bytes[0])}.${String(bytes[1])}.${String(bytes[2])}.${String(bytes[3])}`;
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((bytes[i]! << 8) | bytes[i + 1]!);
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) {
    return `::ffff:${formatAddress(bytes.subarray(12, 16))}`;
  }
  return formatIPv6(groups);
}

/** `::ffff:a.b.c.d` → `a.b.c.d`; any other address unchanged. */
export function unmapIPv4(ip: string): string {
  return ip.startsWith('::ffff:') && ip.includes('.') ? ip.slice(7) : ip;
}
