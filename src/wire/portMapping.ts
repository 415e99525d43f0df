import type { Forward } from '../model.js';

/**
 * Writing the vtunnel wire (docs/vtunnel-wire.md), as Rancher Desktop's host privileged service
 * reads it: one JSON value per connection, newline-terminated.
 *
 *   {"remove":false,"ports":{"80/tcp":[{"HostIp":"0.0.0.0","HostPort":"8080"}]},"connectAddrs":[{"network":"ip+net","addr":"172.26.112.5/20"}]}
 *
 * Pure: everything here is a function of its arguments.
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
 * The largest message the host side accepts (`portstream host` refuses larger ones unread), and
 * so the largest the agent sends.
 */
export const maxPortMappingBytes = 64 * 1024;

/** One message of a split: its line and the forwards it carries. */
export interface PortMappingPart {
  readonly line: string;
  readonly forwards: readonly Forward[];
}

/**
 * `forwards` as PortMapping lines of at most `maxBytes` each, in order. The whole state of a
 * busy VM (about 700 Docker ports on 0.0.0.0 and ::) is over 64 KiB; the host applies every
 * message on its own, so parts are as good as one. Linear: each forward is charged an upper
 * bound of what it adds to a line (its binding, plus its ports key as if it were alone there), so
 * the line is never encoded twice. A single forward always gets a line, whatever its size.
 */
export function splitPortMapping(
  remove: boolean,
  forwards: readonly Forward[],
  connectAddrs: readonly ConnectAddr[],
  maxBytes = maxPortMappingBytes,
): PortMappingPart[] {
  const room = maxBytes - Buffer.byteLength(encodePortMapping(remove, [], connectAddrs));
  const parts: PortMappingPart[] = [];
  let part: Forward[] = [];
  let size = 0;
  const flush = (): void => {
    if (part.length > 0) parts.push({ line: encodePortMapping(remove, part, connectAddrs), forwards: part });
    part = [];
    size = 0;
  };
  for (const f of forwards) {
    // `"80/tcp":[{"HostIp":"…","HostPort":"…"}],`: the key, `:[`, `]` and a comma (4), and the
    // binding's 25 fixed bytes around its two values.
    const cost = Buffer.byteLength(JSON.stringify(wirePortKey(f))) + Buffer.byteLength(JSON.stringify(f.hostIp)) + String(f.hostPort).length + 29;
    if (size + cost > room) flush();
    part.push(f);
    size += cost;
  }
  flush();
  return parts;
}
