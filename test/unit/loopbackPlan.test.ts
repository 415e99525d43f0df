import assert from 'node:assert/strict';
import { test } from 'node:test';
import { inSubnet, initialLoopbackState, isLoopback, plan, reconcile, type ListenAddr } from '../../src/loopback/plan.js';
import { portSetOf, type Forward } from '../../src/model.js';

const f = (hostIp: string, hostPort: number, protocol: 'tcp' | 'udp' = 'tcp'): Forward => ({ protocol, hostIp, hostPort, source: 'docker', owner: 'c1' });
const eth0: ListenAddr[] = [
  { ip: '172.26.112.5', cidr: '172.26.112.5/20' },
  { ip: 'fd00::5', cidr: 'fd00::5/64' },
  { ip: 'fe80::1', cidr: 'fe80::1/64' },
];

test('isLoopback: 127/8 and ::1, nothing else', () => {
  for (const ip of ['127.0.0.1', '127.1.2.3', '::1', '0:0:0:0:0:0:0:1']) assert.ok(isLoopback(ip), ip);
  for (const ip of ['0.0.0.0', '::', '10.0.0.1', '::ffff:127.0.0.1', 'fe80::1', '1.127.0.0']) assert.ok(!isLoopback(ip), ip);
});

test('inSubnet: IPv4, IPv6, mapped IPv4 peers; other families and junk never match', () => {
  assert.ok(inSubnet('172.26.112.1', '172.26.112.5/20'));
  assert.ok(inSubnet('172.26.127.255', '172.26.112.5/20'));
  assert.ok(!inSubnet('172.26.128.1', '172.26.112.5/20'));
  assert.ok(inSubnet('::ffff:172.26.112.1', '172.26.112.5/20'));
  assert.ok(inSubnet('fd00::1234', 'fd00::5/64'));
  assert.ok(!inSubnet('fd01::1', 'fd00::5/64'));
  assert.ok(!inSubnet('172.26.112.1', 'fd00::5/64'));
  assert.ok(!inSubnet('not an ip', '172.26.112.5/20'));
  assert.ok(!inSubnet('172.26.112.1', '172.26.112.5/33'));
});

test('plan: one forwarder per loopback forward and usable connect address of its family; link-local passed over', () => {
  const { forwarders, skipped } = plan(portSetOf([f('127.0.0.1', 5432), f('::1', 5432), f('0.0.0.0', 80), f('127.0.0.1', 53, 'udp')]), eth0, true);
  assert.deepEqual([...forwarders.keys()].sort(), ['tcp/172.26.112.5:5432', 'tcp/[fd00::5]:5432', 'udp/172.26.112.5:53']);
  const v4 = forwarders.get('tcp/172.26.112.5:5432')!;
  assert.equal(v4.dialIp, '127.0.0.1');
  assert.deepEqual(v4.allow, ['172.26.112.5/20']);
  assert.equal(forwarders.get('tcp/[fd00::5]:5432')!.dialIp, '::1');
  assert.deepEqual(forwarders.get('tcp/[fd00::5]:5432')!.allow, ['fd00::5/64']);
  assert.equal(skipped.size, 0);
});

test('plan: IPv6 without an IPv6 sink, no address of the family, a wildcard twin and a second loopback address are each skipped with a reason', () => {
  const hostSwitch: ListenAddr[] = [{ ip: '192.168.127.2', cidr: '192.168.127.2/24' }];
  const set = portSetOf([f('::1', 1), f('127.0.0.1', 2), f('0.0.0.0', 2), f('127.0.0.1', 3), f('127.0.0.2', 3), f('127.0.0.1', 4), f('192.168.127.2', 4)]);
  const { forwarders, skipped } = plan(set, hostSwitch, false);
  assert.deepEqual([...forwarders.keys()], ['tcp/192.168.127.2:3', 'tcp/192.168.127.2:4']);
  assert.equal(forwarders.get('tcp/192.168.127.2:3')!.dialIp, '127.0.0.1', '127.0.0.1 wins over 127.0.0.2');
  assert.match(skipped.get('tcp/[::1]:1')!, /no IPv6/);
  assert.match(skipped.get('tcp/127.0.0.1:2')!, /also published on 0\.0\.0\.0/);
  assert.match(skipped.get('tcp/127.0.0.2:3')!, /already forwards to 127\.0\.0\.1/);
  assert.equal(skipped.get('tcp/127.0.0.1:4'), undefined, 'a forward on the connect address itself (maybe our own socket, seen by a source) never switches the forwarder off');
  const none = plan(portSetOf([f('127.0.0.1', 5)]), [], false);
  assert.equal(none.forwarders.size, 0);
  assert.match(none.skipped.get('tcp/127.0.0.1:5')!, /no IPv4 address/);
});

test('reconcile: opens, closes, re-opens on a changed dial address, and says a skip once until its reason changes', () => {
  const addrs: ListenAddr[] = [{ ip: '10.0.0.2', cidr: '10.0.0.2/30' }];
  let state = initialLoopbackState(addrs);
  const step = (input: Parameters<typeof reconcile>[1]): string[] => {
    const r = reconcile(state, input, true);
    state = r.state;
    return r.commands.map((c) => (c.type === 'skip' ? `skip ${c.key}` : `${c.type} ${c.spec.key}->${c.spec.dialIp}`));
  };
  assert.deepEqual(step({ type: 'delta', delta: { added: [f('127.0.0.2', 80)], removed: [] } }), ['open tcp/10.0.0.2:80->127.0.0.2']);
  assert.deepEqual(step({ type: 'delta', delta: { added: [f('127.0.0.1', 80)], removed: [] } }), ['close tcp/10.0.0.2:80->127.0.0.2', 'open tcp/10.0.0.2:80->127.0.0.1', 'skip tcp/127.0.0.2:80']);
  assert.deepEqual(step({ type: 'delta', delta: { added: [f('0.0.0.0', 9)], removed: [] } }), [], 'nothing loopback changed, nothing said again');
  assert.deepEqual(step({ type: 'addrs', addrs: [] }), ['close tcp/10.0.0.2:80->127.0.0.1', 'skip tcp/127.0.0.1:80', 'skip tcp/127.0.0.2:80']);
  assert.deepEqual(step({ type: 'addrs', addrs }), ['open tcp/10.0.0.2:80->127.0.0.1', 'skip tcp/127.0.0.2:80']);
  assert.deepEqual(step({ type: 'delta', delta: { added: [], removed: [f('127.0.0.1', 80), f('127.0.0.2', 80)] } }), ['close tcp/10.0.0.2:80->127.0.0.1']);
  assert.equal(state.running.size, 0);
});
