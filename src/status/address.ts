import { isAbsolute } from 'node:path';

/** Where the status endpoint listens: a unix socket, or a loopback TCP port. */
export type StatusAddress =
  | { readonly kind: 'unix'; readonly path: string }
  | { readonly kind: 'tcp'; readonly host: '127.0.0.1' | '::1'; readonly port: number };

/** Where `portstream status` looks when not told: the socket docs/status.md suggests serving on. */
export const defaultStatusSocket = '/run/portstream.sock';

/** Linux's sun_path holds 108 bytes with the terminating NUL. */
const maxSocketPathBytes = 107;

/**
 * `-statusAddr`: an absolute unix socket path, `127.0.0.1:PORT` or `[::1]:PORT`. The agent runs
 * as root and the endpoint has no authentication, so nothing that another machine could reach
 * is accepted (not `0.0.0.0`, not a host name, not `localhost`, which may resolve elsewhere).
 */
export function parseStatusAddr(value: string): StatusAddress | { readonly error: string } {
  if (value.startsWith('/') || value.startsWith('.')) {
    if (!isAbsolute(value)) return { error: 'a unix socket path must be absolute' };
    if (Buffer.byteLength(value) > maxSocketPathBytes) return { error: `a unix socket path may be at most ${String(maxSocketPathBytes)} bytes` };
    return { kind: 'unix', path: value };
  }
  const m = /^(?:(127\.0\.0\.1)|\[(::1)\]):(\d{1,5})$/.exec(value);
  const port = Number(m?.[3]);
  if (!m || !Number.isInteger(port) || port < 1 || port > 65535) {
    return { error: 'must be an absolute unix socket path, 127.0.0.1:PORT or [::1]:PORT (the status endpoint listens on loopback only)' };
  }
  return { kind: 'tcp', host: m[1] === '127.0.0.1' ? '127.0.0.1' : '::1', port };
}

/** A status address as a person would write it: the socket path, or HOST:PORT. */
export function describeStatusAddr(address: StatusAddress): string {
  return address.kind === 'unix' ? address.path : address.host === '::1' ? `[::1]:${String(address.port)}` : `127.0.0.1:${String(address.port)}`;
}
