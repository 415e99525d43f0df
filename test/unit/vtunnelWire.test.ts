import assert from 'node:assert/strict';
import type os from 'node:os';
import { test } from 'node:test';
import type { Forward } from '../../src/model.js';
import { parsePortMapping } from '../../src/wire/parsePortMapping.js';
import { connectAddrsOf, prefixLength } from '../../src/wire/connectAddrs.js';
import { encodePortMapping, maxPortMappingBytes, splitPortMapping, type ConnectAddr } from '../../src/wire/portMapping.js';

const fwd = (hostPort: number, more: Partial<Forward> = {}): Forward => ({
  protocol: 'tcp',
  hostIp: '0.0.0.0',
  hostPort,
  source: 'docker',
  owner: 'c1',
  ...more,
});

const eth0: ConnectAddr[] = [{ network: 'ip+net', addr: '172.26.112.5/20' }];

test('encodes the contract example byte for byte', () => {
  assert.equal(
    encodePortMapping(false, [fwd(8080, { containerPort: 80 })], eth0),
    '{"remove":false,"ports":{"80/tcp":[{"HostIp":"0.0.0.0","HostPort":"8080"}]},"connectAddrs":[{"network":"ip+net","addr":"172.26.112.5/20"}]}\n',
  );
});

test('a state that fits is one message, exactly the unsplit one', () => {
  const forwards = [fwd(8080, { containerPort: 80 }), fwd(8080, { containerPort: 80, hostIp: '::' })];
  assert.deepEqual(splitPortMapping(false, forwards, eth0), [{ line: encodePortMapping(false, forwards, eth0), forwards }]);
  assert.deepEqual(splitPortMapping(true, [], eth0), []);
});

test('a busy VM\'s whole state (1600 forwards, about 70 KiB at once) goes as a few messages the host side accepts', () => {
  // 800 container ports, each published on 0.0.0.0 and :: as Docker does for -p.
  const forwards = Array.from({ length: 800 }, (_, i) => [
    fwd(20000 + i, { containerPort: 8000 + i }),
    fwd(20000 + i, { containerPort: 8000 + i, hostIp: '::' }),
  ]).flat();
  const whole = Buffer.byteLength(encodePortMapping(false, forwards, eth0));
  assert.ok(whole > maxPortMappingBytes, `the unsplit line is ${String(whole)} bytes`);
  const parts = splitPortMapping(false, forwards, eth0);
  assert.equal(parts.length, 2);
  assert.deepEqual(parts.flatMap((part) => part.forwards), forwards);
  for (const part of parts) {
    const parsed = parsePortMapping(part.line);
    assert.ok(parsed.ok, parsed.ok ? '' : parsed.error);
    assert.equal(parsed.mapping.bindings.length, part.forwards.length);
  }
});

test('remove:true, udp, IPv6 host IP, and the host port when no container port is known', () => {
  assert.equal(
    encodePortMapping(true, [fwd(53, { protocol: 'udp', hostIp: '::' }), fwd(30080, { hostIp: '127.0.0.1' })], []),
    '{"remove":true,"ports":{"53/udp":[{"HostIp":"::","HostPort":"53"}],"30080/tcp":[{"HostIp":"127.0.0.1","HostPort":"30080"}]},"connectAddrs":[]}\n',
  );
});

test('forwards with one ports key share one array; tcp and udp on one number stay apart', () => {
  const line = encodePortMapping(
    false,
    [
      fwd(8080, { containerPort: 80 }),
      fwd(8080, { containerPort: 80, hostIp: '::' }),
      fwd(8081, { containerPort: 80, protocol: 'udp' }),
      fwd(9090, { containerPort: 80, owner: 'c2' }),
    ],
    eth0,
  );
  assert.equal(
    line,
    '{"remove":false,"ports":{"80/tcp":[{"HostIp":"0.0.0.0","HostPort":"8080"},{"HostIp":"::","HostPort":"8080"},{"HostIp":"0.0.0.0","HostPort":"9090"}],' +
      '"80/udp":[{"HostIp":"0.0.0.0","HostPort":"8081"}]},"connectAddrs":[{"network":"ip+net","addr":"172.26.112.5/20"}]}\n',
  );
});

test('key order is fixed even when connectAddrs objects carry their keys in another order or extra keys', () => {
  const odd = [{ addr: '10.0.0.2/24', network: 'ip+net', extra: 1 } as unknown as ConnectAddr];
  const line = encodePortMapping(false, [fwd(1)], odd);
  assert.ok(line.endsWith('\n') && line.indexOf('\n') === line.length - 1, 'exactly one newline, at the end');
  const value = JSON.parse(line) as Record<string, unknown>;
  assert.deepEqual(Object.keys(value), ['remove', 'ports', 'connectAddrs']);
  assert.equal(line.slice(line.indexOf('"connectAddrs"')), '"connectAddrs":[{"network":"ip+net","addr":"10.0.0.2/24"}]}\n');
});

const info = (family: 'IPv4' | 'IPv6', address: string, netmask: string, cidr: string | null): os.NetworkInterfaceInfo =>
  ({ family, address, netmask, cidr, mac: '00:15:5d:00:00:01', internal: false, ...(family === 'IPv6' && { scopeid: 0 }) }) as os.NetworkInterfaceInfo;

const table: NodeJS.Dict<os.NetworkInterfaceInfo[]> = {
  lo: [info('IPv4', '127.0.0.1', '255.0.0.0', '127.0.0.1/8')],
  eth0: [
    info('IPv4', '172.26.112.5', '255.255.240.0', '172.26.112.5/20'),
    info('IPv6', 'fe80::215:5dff:fe00:1', 'ffff:ffff:ffff:ffff::', 'fe80::215:5dff:fe00:1/64'),
    info('IPv4', '10.1.2.3', '255.255.255.0', null),
  ],
};

test('connectAddrs are every address of the interface, IPv4 and IPv6, in CIDR form', () => {
  assert.deepEqual(connectAddrsOf('eth0', table), [
    { network: 'ip+net', addr: '172.26.112.5/20' },
    { network: 'ip+net', addr: 'fe80::215:5dff:fe00:1/64' },
    { network: 'ip+net', addr: '10.1.2.3/24' },
  ]);
  assert.deepEqual(connectAddrsOf('lo', table), [{ network: 'ip+net', addr: '127.0.0.1/8' }]);
});

test('a missing interface gives no addresses and no error', () => {
  assert.deepEqual(connectAddrsOf('eth9', table), []);
});

test('prefixLength counts the one bits of IPv4 and IPv6 netmasks', () => {
  assert.equal(prefixLength('255.255.240.0'), 20);
  assert.equal(prefixLength('255.255.255.255'), 32);
  assert.equal(prefixLength('0.0.0.0'), 0);
  assert.equal(prefixLength('ffff:ffff:ffff:ffff::'), 64);
  assert.equal(prefixLength('ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff'), 128);
  assert.equal(prefixLength('ffff:ff00::'), 24);
});
