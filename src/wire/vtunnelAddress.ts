import { isIPv4, isIPv6 } from 'node:net';

/** Where the vtunnel peer is: TCP as the Go agent, or AF_VSOCK directly (portstream extension). */
export type VtunnelTarget =
  | { readonly kind: 'tcp'; readonly host: string; readonly port: number }
  | { readonly kind: 'vsock'; readonly cid: number; readonly port: number };

const U32_MAX = 0xffffffff; // also VMADDR_CID_ANY / VMADDR_PORT_ANY, which cannot be dialled

/**
 * Split a vtunnel address: `HOST:PORT` (host a name, an IPv4 address or a bracketed IPv6
 * address; port 1..65535), or `vsock://CID:PORT` (decimal; CID and port below 2^32-1), a
 * portstream extension that lets the agent speak AF_VSOCK to the host itself.
 */
export function parseVtunnelAddr(addr: string): VtunnelTarget | { readonly error: string } {
  const vsock = /^vsock:\/\/(\d+):(\d+)$/.exec(addr);
  if (vsock) {
    const cid = Number(vsock[1]);
    const port = Number(vsock[2]);
    if (cid >= U32_MAX) return { error: 'vsock CID must be below 4294967295' };
    if (port < 1 || port >= U32_MAX) return { error: 'vsock port must be 1..4294967294' };
    return { kind: 'vsock', cid, port };
  }
  if (addr.startsWith('vsock:')) return { error: 'must be vsock://CID:PORT' };

  const hostPort = /^(?:\[([^\]]*)\]|([^:[\]]*)):(\d+)$/.exec(addr);
  if (!hostPort) {
    const bareIPv6 = !addr.includes('[') && addr.split(':').length > 2;
    return { error: bareIPv6 ? 'an IPv6 host must be in brackets, as [::1]:3040' : 'must be HOST:PORT or vsock://CID:PORT' };
  }
  const [, v6, name] = hostPort;
  const port = Number(hostPort[3]);
  if (v6 !== undefined && !isIPv6(v6)) return { error: `${JSON.stringify(v6)} is not an IPv6 address` };
  if (name !== undefined && !isHostName(name)) return { error: `${JSON.stringify(name)} is not a host name or IPv4 address` };
  if (port < 1 || port > 65535) return { error: 'port must be 1..65535' };
  return { kind: 'tcp', host: v6 ?? name ?? '', port };
}

/** An IPv4 address or a DNS name (letters, digits, `-`, `_`, dot-separated labels). */
function isHostName(s: string): boolean {
  return isIPv4(s) || /^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$/.test(s);
}

