import { isIPv4, isIPv6 } from 'node:net';
import { errorMessage } from '../errors.js';
import type { Protocol } from '../model.js';
import { maxPortMappingBytes } from './portMapping.js';

/**
 * The host side's reading of a PortMapping (docs/vtunnel-wire.md): one JSON value per
 * connection, newline-terminated.
 *
 *   {"remove":false,"ports":{"80/tcp":[{"HostIp":"0.0.0.0","HostPort":"8080"}]},"connectAddrs":[{"network":"ip+net","addr":"172.26.112.5/20"}]}
 *
 * Strict: exactly the documented keys and types, or an error value that says what is wrong and
 * where. Pure, and it never throws, whatever the bytes: the receiver logs the error and drops
 * the message.
 */

/** One binding: listen on `hostIp:hostPort` (the ports key names the container port, for logs). */
export interface HostBinding {
  readonly protocol: Protocol;
  /** As sent, except that IPv6 is written in its canonical (compressed, lower-case) form. */
  readonly hostIp: string;
  readonly hostPort: number;
  /** The port of the ports key (`80` of `80/tcp`): the container or Service port. */
  readonly containerPort: number;
}

/** One address of the VM's connect interface, split. */
export interface VmAddress {
  readonly ip: string;
  readonly prefix: number;
  readonly family: 4 | 6;
}

/** One vtunnel message as the host reads it: add or remove these bindings, reachable at these VM addresses. */
export interface PortMapping {
  readonly remove: boolean;
  readonly bindings: readonly HostBinding[];
  readonly connectAddrs: readonly VmAddress[];
}

/** A message that parsed, or why it did not. */
export type ParsedPortMapping = { readonly ok: true; readonly mapping: PortMapping } | { readonly ok: false; readonly error: string };

const fail = (error: string): ParsedPortMapping => ({ ok: false, error });
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Parse one message, as bytes (checked as UTF-8) or text. */
export function parsePortMapping(message: Uint8Array | string, maxBytes = maxPortMappingBytes): ParsedPortMapping {
  const size = typeof message === 'string' ? Buffer.byteLength(message) : message.byteLength;
  if (size > maxBytes) return fail(`message of ${String(size)} bytes is larger than the limit of ${String(maxBytes)}`);
  let text: string;
  if (typeof message === 'string') {
    text = message;
  } else {
    try {
      text = utf8.decode(message);
    } catch {
      return fail('message is not valid UTF-8');
    }
  }
  if (text.trim() === '') return fail('empty message');
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    return fail(`not valid JSON: ${errorMessage(err)}`);
  }
  return checkShape(value);
}

function checkShape(value: unknown): ParsedPortMapping {
  if (!isPlainObject(value)) return fail(`the message must be a JSON object, got ${typeName(value)}`);
  const keyError = exactKeys(value, ['remove', 'ports', 'connectAddrs'], 'the message');
  if (keyError !== undefined) return fail(keyError);

  const { remove, ports, connectAddrs } = value;
  if (typeof remove !== 'boolean') return fail(`"remove" must be true or false, got ${typeName(remove)}`);
  if (!isPlainObject(ports)) return fail(`"ports" must be an object, got ${typeName(ports)}`);

  const bindings: HostBinding[] = [];
  for (const [portsKey, list] of Object.entries(ports)) {
    const where = `ports[${JSON.stringify(portsKey)}]`;
    const key = /^([1-9]\d{0,4})\/(tcp|udp)$/.exec(portsKey);
    const containerPort = Number(key?.[1]);
    if (!key || containerPort > 65535) return fail(`ports key ${JSON.stringify(portsKey)} must be PORT/tcp or PORT/udp with PORT 1..65535`);
    const protocol = key[2] as Protocol;
    if (!Array.isArray(list)) return fail(`${where} must be an array of bindings, got ${typeName(list)}`);
    for (const [i, binding] of (list as unknown[]).entries()) {
      const at = `${where}[${String(i)}]`;
      if (!isPlainObject(binding)) return fail(`${at} must be an object, got ${typeName(binding)}`);
      const bindingKeys = exactKeys(binding, ['HostIp', 'HostPort'], at);
      if (bindingKeys !== undefined) return fail(bindingKeys);
      const { HostIp, HostPort } = binding;
      if (typeof HostIp !== 'string') return fail(`${at}.HostIp must be a string, got ${typeName(HostIp)}`);
      const hostIp = canonicalIp(HostIp);
      if (hostIp === undefined) return fail(`${at}.HostIp ${JSON.stringify(HostIp)} is not an IP address`);
      if (typeof HostPort !== 'string') return fail(`${at}.HostPort must be a string, got ${typeName(HostPort)}`);
      if (!/^[1-9]\d{0,4}$/.test(HostPort) || Number(HostPort) > 65535) {
        return fail(`${at}.HostPort ${JSON.stringify(HostPort)} is not a port number 1..65535`);
      }
      bindings.push({ protocol, hostIp, hostPort: Number(HostPort), containerPort });
    }
  }

  if (!Array.isArray(connectAddrs)) return fail(`"connectAddrs" must be an array, got ${typeName(connectAddrs)}`);
  const addrs: VmAddress[] = [];
  for (const [i, entry] of (connectAddrs as unknown[]).entries()) {
    const at = `connectAddrs[${String(i)}]`;
    if (!isPlainObject(entry)) return fail(`${at} must be an object, got ${typeName(entry)}`);
    const entryKeys = exactKeys(entry, ['network', 'addr'], at);
    if (entryKeys !== undefined) return fail(entryKeys);
    if (entry['network'] !== 'ip+net') return fail(`${at}.network must be "ip+net", got ${typeName(entry['network'])}`);
    const addr = entry['addr'];
    if (typeof addr !== 'string') return fail(`${at}.addr must be a string, got ${typeName(addr)}`);
    const parsed = parseCidr(addr);
    if (parsed === undefined) return fail(`${at}.addr ${JSON.stringify(addr)} is not an address in CIDR form (IP/PREFIX)`);
    addrs.push(parsed);
  }
  return { ok: true, mapping: { remove, bindings, connectAddrs: addrs } };
}

/** `172.26.112.5/20` or `fe80::1/64`; undefined when it is not that. */
export function parseCidr(addr: string): VmAddress | undefined {
  const slash = addr.lastIndexOf('/');
  if (slash < 0) return undefined;
  const ip = canonicalIp(addr.slice(0, slash));
  const prefixText = addr.slice(slash + 1);
  if (ip === undefined || !/^(0|[1-9]\d{0,2})$/.test(prefixText)) return undefined;
  const family = isIPv4(ip) ? 4 : 6;
  const prefix = Number(prefixText);
  if (prefix > (family === 4 ? 32 : 128)) return undefined;
  return { ip, prefix, family };
}

/**
 * An IPv4 address as it is (Node accepts only dotted decimal without leading zeros), or an
 * IPv6 address in canonical form; undefined for anything else (names, zones, brackets).
 */
export function canonicalIp(ip: string): string | undefined {
  if (isIPv4(ip)) return ip;
  if (!isIPv6(ip) || ip.includes('%')) return undefined;
  try {
    return new URL(`http://[${ip}]/`).hostname.slice(1, -1);
  } catch {
    return undefined;
  }
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function exactKeys(obj: Record<string, unknown>, expected: readonly string[], where: string): string | undefined {
  const keys = Object.keys(obj);
  const unknown = keys.filter((k) => !expected.includes(k));
  if (unknown.length > 0) return `${where} has unexpected key ${JSON.stringify(unknown[0])} (expected exactly ${expected.map((k) => JSON.stringify(k)).join(', ')})`;
  const missing = expected.filter((k) => !keys.includes(k));
  if (missing.length > 0) return `${where} lacks the key ${JSON.stringify(missing[0])}`;
  return undefined;
}

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'string') return `the string ${JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v)}`;
  if (typeof v === 'number' || typeof v === 'boolean') return `${typeof v} ${String(v)}`;
  return typeof v === 'object' ? 'an object' : typeof v;
}
