import os from 'node:os';
import type { ConnectAddr } from './portMapping.js';

/**
 * Every address (IPv4 and IPv6) of `interfaceName` in CIDR form. A missing interface gives an
 * empty list rather than an error: the caller decides whether that is worth a warning.
 */
export function connectAddrsOf(
  interfaceName: string,
  interfaces: NodeJS.Dict<os.NetworkInterfaceInfo[]> = os.networkInterfaces(),
): ConnectAddr[] {
  return (interfaces[interfaceName] ?? []).map((info) => ({
    network: 'ip+net',
    addr: info.cidr ?? `${info.address}/${String(prefixLength(info.netmask))}`,
  }));
}

/** Prefix length of a dotted (IPv4) or colon (IPv6) netmask: the count of its one bits. */
export function prefixLength(netmask: string): number {
  const isV6 = netmask.includes(':');
  const groups = isV6 ? expandIPv6(netmask) : netmask.split('.');
  let bits = 0;
  for (const group of groups) {
    let n = Number.parseInt(group, isV6 ? 16 : 10);
    while (n > 0) {
      bits += n & 1;
      n >>>= 1;
    }
  }
  return bits;
}

function expandIPv6(address: string): string[] {
  const [head = '', tail] = address.split('::');
  const left = head === '' ? [] : head.split(':');
  const right = tail === undefined || tail === '' ? [] : tail.split(':');
  const zeros = tail === undefined ? [] : Array<string>(8 - left.length - right.length).fill('0');
  return [...left, ...zeros, ...right];
}
