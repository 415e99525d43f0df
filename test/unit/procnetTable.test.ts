import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { formatAddress, hexToBytes, parseProcNet, unmapIPv4, type ListeningSocket } from '../../streams/procnetTable.js';

/**
 * Fixtures are real `/proc/net/{tcp,tcp6,udp,udp6}` of the Debian 12 VM (kernel 6.1, x86_64) this
 * was written on, read while a script held: TCP on 127.0.0.1:47801, 0.0.0.0:47802, [::1]:47803,
 * [::]:47804 (IPV6_V6ONLY), [::]:47805 (dual-stack), [::ffff:127.0.0.1]:47806; UDP bound on
 * 0.0.0.0:47811, 127.0.0.1:47812, [::]:47813, [::1]:47814; and a UDP socket on 127.0.0.1:47815
 * connected to 127.0.0.1:53. The tcp file also holds the machine's other sockets of the moment
 * (TIME_WAIT, ESTABLISHED), none of them listening.
 */
const fixture = (name: string): string => readFileSync(new URL(`./fixtures/procnet/${name}`, import.meta.url), 'utf8');
const ours = (sockets: readonly ListeningSocket[]): [string, number][] =>
  sockets.filter((s) => s.port >= 47800 && s.port < 47900).map((s) => [s.ip, s.port]);

test('tcp (IPv4): only the sockets in LISTEN, addresses read little-endian', () => {
  const { sockets, problems } = parseProcNet(fixture('tcp'), 'tcp', 4);
  assert.deepEqual(problems, []);
  assert.deepEqual(ours(sockets).sort(), [['0.0.0.0', 47802], ['127.0.0.1', 47801]]);
  const loopback = sockets.find((s) => s.port === 47801);
  assert.deepEqual(loopback, { protocol: 'tcp', family: 4, ip: '127.0.0.1', port: 47801, inode: 90339 });
  // The file's hundreds of other lines are connections: none may count as a listener.
  const lines = fixture('tcp').split('\n').filter((l) => / 0A /.test(l.slice(0, 40)));
  assert.equal(sockets.length, lines.length);
});

test('tcp6: IPv6 words in host order, ::1, ::, and an IPv4-mapped address', () => {
  const { sockets, problems } = parseProcNet(fixture('tcp6'), 'tcp', 6);
  assert.deepEqual(problems, []);
  assert.deepEqual(ours(sockets).sort(), [['::', 47804], ['::', 47805], ['::1', 47803], ['::ffff:127.0.0.1', 47806]]);
  assert.ok(sockets.every((s) => s.family === 6 && s.protocol === 'tcp' && s.v6only === undefined));
});

test('udp and udp6: bound unconnected sockets count; a connected one does not', () => {
  const v4 = parseProcNet(fixture('udp'), 'udp', 4);
  const v6 = parseProcNet(fixture('udp6'), 'udp', 6);
  assert.deepEqual([...v4.problems, ...v6.problems], []);
  assert.deepEqual(ours(v4.sockets).sort(), [['0.0.0.0', 47811], ['127.0.0.1', 47812]]);
  assert.deepEqual(ours(v6.sockets).sort(), [['::', 47813], ['::1', 47814]]);
  assert.ok(!v4.sockets.some((s) => s.port === 47815), 'the connected UDP socket is no listener');
});

test('a malformed line is one problem naming the line; the rest of the file still counts', () => {
  const text = [
    '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode',
    '   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 40137 1',
    '   1: 0100007F 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 40138 1',
    '   2: 0100007F:1F91 00000000:0000 0A',
    '   3: 00000000000000000000000001000000:1F92 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1 1',
    '   4: 00000000:1F93 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 x 1',
    '   5: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 40139 1',
    '',
  ].join('\n');
  const { sockets, problems } = parseProcNet(text, 'tcp', 4);
  assert.deepEqual(sockets.map((s) => s.port), [8080, 80]);
  assert.equal(problems.length, 4);
  assert.match(problems[0]!, /^tcp line 3: local address "0100007F": no port$/);
  assert.match(problems[1]!, /^tcp line 4: expected at least 10 fields/);
  assert.match(problems[2]!, /^tcp line 5: local address .*8 hex digits for an IPv4 address/);
  assert.match(problems[3]!, /^tcp line 6: inode "x" is not a number/);
});

test('addresses: the kernel bytes of well-known addresses', () => {
  assert.equal(formatAddress(hexToBytes('0100007F')), '127.0.0.1');
  assert.equal(formatAddress(hexToBytes('0500D50A')), '10.213.0.5');
  assert.equal(formatAddress(hexToBytes('00000000000000000000000001000000')), '::1');
  assert.equal(formatAddress(hexToBytes('000080FE00000000FF005002FEB6A83B')), 'fe80::250:ff:3ba8:b6fe');
  assert.equal(formatAddress(hexToBytes('0000FFFD000000000000000005000000')), 'fdff::5');
  assert.equal(formatAddress(hexToBytes('0000000000000000FFFF00000500D50A')), '::ffff:10.213.0.5');
  assert.equal(formatAddress(hexToBytes('0100007F', false)), '1.0.0.127', 'a big-endian host prints bytes in order');
  assert.equal(unmapIPv4('::ffff:10.213.0.5'), '10.213.0.5');
  assert.equal(unmapIPv4('::ffff:a05'), '::ffff:a05');
});
