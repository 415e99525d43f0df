import { isIPv4 } from 'node:net';
import type { HostBinding, VmAddress } from '../wire/parsePortMapping.js';

/** What the host side makes of a parsed PortMapping (src/wire/parsePortMapping.ts): where each binding goes. */

/** IPv6 link-local (fe80::/10): unusable as a target without an interface, which the wire lacks. */
export function isLinkLocalIPv6(ip: string): boolean {
  return /^fe[89ab][0-9a-f]:/i.test(ip);
}

/**
 * Where a binding's connections go: the first connect address of the binding's family, on the
 * same port. IPv6 link-local addresses are passed over (they cannot be dialled without a scope).
 * Undefined when the VM has no usable address of that family.
 */
export function targetFor(binding: Pick<HostBinding, 'hostIp'>, connectAddrs: readonly VmAddress[]): string | undefined {
  const family = isIPv4(binding.hostIp) ? 4 : 6;
  return connectAddrs.find((a) => a.family === family && !(family === 6 && isLinkLocalIPv6(a.ip)))?.ip;
}

/**
 * Whether a binding would forward to itself: its target is an address of this host (`local`, or
 * anything in 127/8) and the binding listens there, on that address or the unspecified one. Each
 * connection would open another until the host ran out of sockets. It happens only when the
 * "VM" is this very machine (an agent with `-connectInterface lo`, say).
 */
export function loopsBack(binding: Pick<HostBinding, 'hostIp'>, target: string, local: ReadonlySet<string>): boolean {
  const isLocal = local.has(target) || (isIPv4(target) && target.startsWith('127.'));
  return isLocal && (binding.hostIp === '0.0.0.0' || binding.hostIp === '::' || binding.hostIp === target);
}

/** `tcp/0.0.0.0:8080`, `udp/[::]:53`: the identity of a binding on the host. */
export function bindingKey(b: Pick<HostBinding, 'protocol' | 'hostIp' | 'hostPort'>): string {
  return `${b.protocol}/${hostPort(b.hostIp, b.hostPort)}`;
}

/** `0.0.0.0:8080`, `[::1]:8080`. */
export function hostPort(ip: string, port: number): string {
  return `${ip.includes(':') ? `[${ip}]` : ip}:${String(port)}`;
}
