import assert from 'node:assert/strict';
import net from 'node:net';

/**
 * A strict stand-in for the host privileged service on 127.0.0.1: it reads each connection to
 * its end, insists on exactly one newline-terminated JSON value of the contract's shape, applies
 * it to its view (`proto/HostIp:HostPort` -> ports key), then closes. Anything off the contract
 * lands in `violations`, which every test expects to stay empty.
 */
export interface Receiver {
  readonly port: number;
  readonly lines: string[];
  readonly view: Map<string, string>;
  readonly violations: string[];
  close(): Promise<void>;
}

export async function startReceiver(port = 0): Promise<Receiver> {
  const lines: string[] = [];
  const view = new Map<string, string>();
  const violations: string[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (text += chunk));
    socket.once('end', () => {
      lines.push(text);
      try {
        const { remove, bindings } = parseStrict(text);
        for (const [hostKey, portsKey] of bindings) {
          if (remove) view.delete(hostKey);
          else view.set(hostKey, portsKey);
        }
      } catch (err) {
        violations.push(`${(err as Error).message} in ${JSON.stringify(text)}`);
      }
      socket.end();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  return {
    port: (server.address() as net.AddressInfo).port,
    lines,
    view,
    violations,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => {
          resolve();
        });
      }),
  };
}

export function parseStrict(text: string): { remove: boolean; bindings: [string, string][] } {
  assert.ok(text.endsWith('\n') && text.indexOf('\n') === text.length - 1, 'not exactly one newline-terminated line');
  const value = JSON.parse(text) as Record<string, unknown>;
  assert.deepEqual(Object.keys(value), ['remove', 'ports', 'connectAddrs'], 'keys');
  const { remove, ports, connectAddrs } = value;
  assert.equal(typeof remove, 'boolean', 'remove');
  assert.ok(typeof ports === 'object' && ports !== null && !Array.isArray(ports), 'ports is not an object');
  assert.ok(Object.keys(ports).length > 0, 'empty ports');
  const bindings: [string, string][] = [];
  for (const [portsKey, list] of Object.entries(ports)) {
    const match = /^([1-9]\d{0,4})\/(tcp|udp)$/.exec(portsKey);
    assert.ok(match, `ports key ${portsKey}`);
    assert.ok(Array.isArray(list) && list.length > 0, `bindings of ${portsKey}`);
    for (const binding of list as Record<string, unknown>[]) {
      assert.deepEqual(Object.keys(binding), ['HostIp', 'HostPort'], 'binding keys');
      const { HostIp, HostPort } = binding;
      assert.ok(typeof HostIp === 'string' && net.isIP(HostIp) !== 0, `HostIp ${String(HostIp)}`);
      assert.ok(typeof HostPort === 'string' && /^[1-9]\d{0,4}$/.test(HostPort) && Number(HostPort) <= 65535, `HostPort ${String(HostPort)}`);
      bindings.push([`${String(match[2])}/${HostIp}:${HostPort}`, portsKey]);
    }
  }
  assert.ok(Array.isArray(connectAddrs), 'connectAddrs is not an array');
  for (const addr of connectAddrs as Record<string, unknown>[]) {
    assert.deepEqual(Object.keys(addr), ['network', 'addr'], 'connectAddrs keys');
    assert.equal(addr['network'], 'ip+net');
    const [ip, prefix] = String(addr['addr']).split('/');
    assert.ok(net.isIP(ip ?? '') !== 0 && /^\d{1,3}$/.test(prefix ?? ''), `connectAddrs addr ${String(addr['addr'])}`);
  }
  return { remove: remove as boolean, bindings };
}

