import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Forward } from '../../src/model.js';
import { classifyReply, entryFor, entryKey, exposeBody, laneOf, parseForwarderList, unexposeBody } from '../../src/sinks/hostswitch/api.js';

const fwd = (hostPort: number, more: Partial<Forward> = {}): Forward => ({ protocol: 'tcp', hostIp: '0.0.0.0', hostPort, source: 'docker', owner: 'c1', ...more });
const plain = { tapInterfaceIp: '192.168.127.2', adminInstall: false };
const admin = { tapInterfaceIp: '192.168.127.2', adminInstall: true };

test('entryFor: 127.0.0.1 unless -adminInstall, remote on the tap IP, IPv6 skipped', () => {
  assert.deepEqual(entryFor(fwd(8080, { hostIp: '10.0.0.5' }), plain), { local: '127.0.0.1:8080', remote: '192.168.127.2:8080', protocol: 'tcp' });
  assert.deepEqual(entryFor(fwd(53, { protocol: 'udp' }), admin), { local: '0.0.0.0:53', remote: '192.168.127.2:53', protocol: 'udp' });
  assert.equal(entryFor(fwd(8080, { hostIp: '::' }), plain), undefined);
  assert.equal(entryFor(fwd(8080, { hostIp: '::1' }), admin), undefined);
});

test('keys, lanes and the exact bodies', () => {
  const e = { local: '0.0.0.0:8080', remote: '192.168.127.2:8080', protocol: 'udp' } as const;
  assert.equal(entryKey(e), 'udp/0.0.0.0:8080');
  assert.equal(laneOf(e), 'udp/8080');
  assert.equal(laneOf({ local: '127.0.0.1:8080', protocol: 'udp' }), laneOf(e), 'one host port, one lane');
  assert.equal(exposeBody(e), '{"local":"0.0.0.0:8080","remote":"192.168.127.2:8080","protocol":"udp"}');
  assert.equal(unexposeBody(e), '{"local":"0.0.0.0:8080","protocol":"udp"}');
  assert.equal(unexposeBody({ local: '127.0.0.1:80', protocol: 'tcp' }), '{"local":"127.0.0.1:80","protocol":"tcp"}', 'protocol even for tcp');
});

test("classifyReply: the forwarder's answers", () => {
  assert.deepEqual(classifyReply('expose', 200, ''), { kind: 'done' });
  assert.deepEqual(classifyReply('expose', 500, 'proxy already running\n'), { kind: 'adopted' }, 'v0.8.2 on');
  assert.deepEqual(classifyReply('expose', 500, 'proxy already running for tcp on 127.0.0.1:8080\n'), { kind: 'adopted' }, 'worded with the entry');
  // Before v0.8.2 a duplicate is answered with the bind error: a refusal (hence adoption from the list).
  assert.equal(classifyReply('expose', 500, 'listen tcp 127.0.0.1:8080: bind: address already in use\n').kind, 'refused');
  assert.deepEqual(classifyReply('unexpose', 500, 'proxy not found\n'), { kind: 'gone' });
  assert.deepEqual(classifyReply('expose', 500, 'listen tcp 127.0.0.1:80: bind: permission denied\n'), {
    kind: 'refused',
    status: 500,
    message: 'listen tcp 127.0.0.1:80: bind: permission denied',
    bindError: true,
  });
  assert.deepEqual(classifyReply('expose', 400, 'address 1.2.3.4: missing port in address\n'), {
    kind: 'refused',
    status: 400,
    message: 'address 1.2.3.4: missing port in address',
    bindError: false,
  });
  // The same texts on the other operation mean nothing special.
  assert.equal(classifyReply('unexpose', 500, 'proxy already running for tcp on x\n').kind, 'refused');
  assert.equal(classifyReply('expose', 500, 'proxy not found\n').kind, 'refused');
  assert.deepEqual(classifyReply('expose', 404, '404 page not found\n'), { kind: 'unexpected', status: 404, message: 'HTTP 404: 404 page not found' });
  assert.deepEqual(classifyReply('unexpose', 502, ''), { kind: 'unexpected', status: 502, message: 'HTTP 502' });
});

test('parseForwarderList: TCP and UDP entries; unix and npipe left out; an empty protocol is tcp; anything else is an error', () => {
  assert.deepEqual(
    parseForwarderList(
      '[{"local":"127.0.0.1:2222","remote":"192.168.127.2:22","protocol":"tcp"},{"local":"/tmp/podman.sock","remote":"ssh-tunnel://x","protocol":"unix"},' +
        '{"local":"127.0.0.1:53","remote":"192.168.127.2:53","protocol":"udp"},{"local":"127.0.0.1:80","remote":"192.168.127.2:80","protocol":""}]\n',
    ),
    [
      { local: '127.0.0.1:2222', remote: '192.168.127.2:22', protocol: 'tcp' },
      { local: '127.0.0.1:53', remote: '192.168.127.2:53', protocol: 'udp' },
      { local: '127.0.0.1:80', remote: '192.168.127.2:80', protocol: 'tcp' },
    ],
  );
  assert.deepEqual(parseForwarderList('[]\n'), []);
  assert.ok('error' in parseForwarderList('null'));
  assert.ok('error' in parseForwarderList('{}'));
  assert.ok('error' in parseForwarderList('<html>'));
  assert.ok('error' in parseForwarderList('[1]'));
  assert.ok('error' in parseForwarderList('[{"local":"x"}]'));
});
