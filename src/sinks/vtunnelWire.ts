import os from 'node:os';
import type { Forward } from '../model.js';

/**
 * The vtunnel wire, as Rancher Desktop's host privileged service reads it: one JSON value per
 * connection, newline-terminated.
 *
 *   {"remove":false,"ports":{"80/tcp":[{"HostIp":"0.0.0.0","HostPort":"8080"}]},"connectAddrs":[{"network":"ip+net","addr":"172.26.112.5/20"}]}
 *
 * Pure: everything here is a function of its arguments (`connectAddrsOf` reads the interface
 * table only as a default argument).
 */

/** One address of the VM's connect interface, as Go's `net.IPNet` marshals it. */
export interface ConnectAddr {
  readonly network: 'ip+net';
  readonly addr: string;
}

/** A Docker-style port binding; both fields are strings on the wire. */
interface Binding {
  readonly HostIp: string;
  readonly HostPort: string;
}

/** `PORT/proto`: the container port when the source knows it, else the host port. */
export function wirePortKey(f: Forward): string {
  return `${String(f.containerPort ?? f.hostPort)}/${f.protocol}`;
}

/** The JSON line for one PortMapping message. Forwards sharing a ports key share one array. */
export function encodePortMapping(
  remove: boolean,
  forwards: readonly Forward[],
  connectAddrs: readonly ConnectAddr[],
): string {
  const ports: Record<string, Binding[]> = {};
  for (const f of forwards) {
    const binding: Binding = { HostIp: f.hostIp, HostPort: String(f.hostPort) };
    (ports[wirePortKey(f)] ??= []).push(binding);
  }
  // Spelled out so the key order is exactly the contract's, whatever the inputs carry.
  const addrs = connectAddrs.map(({ network, addr }) => ({ network, addr }));
  return `${JSON.stringify({ remove, ports, connectAddrs: addrs })}\n`;
}

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
