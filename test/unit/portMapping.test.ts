import assert from 'node:assert/strict';
import { test } from 'node:test';
import { bindingKey, targetFor } from '../../src/host/targets.js';
import { canonicalIp, parseCidr, parsePortMapping, type PortMapping, type VmAddress } from '../../src/wire/parsePortMapping.js';
import { maxPortMappingBytes } from '../../src/wire/portMapping.js';
import type { Forward } from '../../src/model.js';
import { encodePortMapping } from '../../src/wire/portMapping.js';

const example =
  '{"remove":false,"ports":{"80/tcp":[{"HostIp":"0.0.0.0","HostPort":"8080"}]},"connectAddrs":[{"network":"ip+net","addr":"172.26.112.5/20"}]}\n';

function ok(message: string | Uint8Array): PortMapping {
  const parsed = parsePortMapping(message);
  assert.ok(parsed.ok, `expected a mapping, got: ${parsed.ok ? '' : parsed.error}`);
  return parsed.mapping;
}

function error(message: string | Uint8Array): string {
  const parsed = parsePortMapping(message);
  assert.ok(!parsed.ok, 'expected an error');
  return parsed.error;
}

/** The contract's example with one part replaced. */
const withPorts = (ports: string): string => `{"remove":false,"ports":${ports},"connectAddrs":[]}`;
const withAddrs = (addrs: string): string => `{"remove":false,"ports":{},"connectAddrs":${addrs}}`;

test("parses the contract's example", () => {
  assert.deepEqual(ok(example), {
    remove: false,
    bindings: [{ protocol: 'tcp', hostIp: '0.0.0.0', hostPort: 8080, containerPort: 80 }],
    connectAddrs: [{ ip: '172.26.112.5', prefix: 20, family: 4 }],
  });
});

test('reads what the agent writes: every binding of every ports key, udp and IPv6, remove:true', () => {
  const fwd = (hostPort: number, more: Partial<Forward> = {}): Forward => ({ protocol: 'tcp', hostIp: '0.0.0.0', hostPort, source: 'docker', owner: 'c', ...more });
  const line = encodePortMapping(
    true,
    [fwd(8080, { containerPort: 80 }), fwd(8080, { containerPort: 80, hostIp: '::' }), fwd(5353, { protocol: 'udp', hostIp: '127.0.0.1', containerPort: 53 })],
    [
      { network: 'ip+net', addr: '172.26.112.5/20' },
      { network: 'ip+net', addr: 'fe80::215:5dff:fe00:1/64' },
    ],
  );
  assert.deepEqual(ok(line), {
    remove: true,
    bindings: [
      { protocol: 'tcp', hostIp: '0.0.0.0', hostPort: 8080, containerPort: 80 },
      { protocol: 'tcp', hostIp: '::', hostPort: 8080, containerPort: 80 },
      { protocol: 'udp', hostIp: '127.0.0.1', hostPort: 5353, containerPort: 53 },
    ],
    connectAddrs: [
      { ip: '172.26.112.5', prefix: 20, family: 4 },
      { ip: 'fe80::215:5dff:fe00:1', prefix: 64, family: 6 },
    ],
  });
});

test('accepts bytes, no trailing newline, and surrounding white space; IPv6 is made canonical', () => {
  assert.equal(ok(Buffer.from(example)).bindings.length, 1);
  assert.equal(ok(example.trimEnd()).bindings.length, 1);
  assert.equal(ok(`  ${example}  \r\n`).bindings.length, 1);
  assert.equal(ok(withPorts('{"80/tcp":[{"HostIp":"0:0:0:0:0:0:0:0","HostPort":"80"}]}')).bindings[0]?.hostIp, '::');
  assert.equal(ok(withPorts('{"80/tcp":[{"HostIp":"FE80::0001","HostPort":"80"}]}')).bindings[0]?.hostIp, 'fe80::1');
  assert.deepEqual(ok(withPorts('{"80/tcp":[]}')).bindings, [], 'an empty list of bindings is no binding');
});

test('refuses what is not one JSON object, with a reason', () => {
  assert.match(error(''), /empty message/);
  assert.match(error('\n'), /empty message/);
  assert.match(error('not json'), /^not valid JSON/);
  assert.match(error(`${example}${example}`), /^not valid JSON/, 'two values on one connection');
  assert.match(error('[]'), /must be a JSON object, got an array/);
  assert.match(error('null'), /must be a JSON object, got null/);
  assert.match(error('"x"'), /must be a JSON object, got the string "x"/);
  assert.match(error(Buffer.from([0x7b, 0xff, 0xfe, 0x7d])), /not valid UTF-8/);
});

test('refuses missing, extra and mistyped top-level keys', () => {
  assert.match(error('{"remove":false,"ports":{}}'), /lacks the key "connectAddrs"/);
  assert.match(error('{"remove":false,"ports":{},"connectAddrs":[],"extra":1}'), /unexpected key "extra"/);
  assert.match(error('{"Remove":false,"ports":{},"connectAddrs":[]}'), /unexpected key "Remove"/, 'keys are case-sensitive');
  assert.match(error('{"__proto__":{},"remove":false,"ports":{},"connectAddrs":[]}'), /unexpected key "__proto__"/);
  assert.match(error('{"remove":"false","ports":{},"connectAddrs":[]}'), /"remove" must be true or false, got the string "false"/);
  assert.match(error('{"remove":0,"ports":{},"connectAddrs":[]}'), /"remove" must be true or false, got number 0/);
  assert.match(error('{"remove":false,"ports":[],"connectAddrs":[]}'), /"ports" must be an object, got an array/);
  assert.match(error('{"remove":false,"ports":{},"connectAddrs":{}}'), /"connectAddrs" must be an array, got an object/);
});

test('refuses bad ports keys and bindings, naming where', () => {
  for (const key of ['80', '80/TCP', '80/sctp', '0/tcp', '65536/tcp', '080/tcp', '-1/tcp', ' 80/tcp', 'http/tcp']) {
    assert.match(error(withPorts(`{${JSON.stringify(key)}:[]}`)), /ports key .* must be PORT\/tcp or PORT\/udp/, key);
  }
  assert.match(error(withPorts('{"80/tcp":{}}')), /ports\["80\/tcp"\] must be an array of bindings/);
  assert.match(error(withPorts('{"80/tcp":[null]}')), /ports\["80\/tcp"\]\[0\] must be an object, got null/);
  assert.match(error(withPorts('{"80/tcp":[{"HostIP":"0.0.0.0","HostPort":"80"}]}')), /\[0\] has unexpected key "HostIP"/);
  assert.match(error(withPorts('{"80/tcp":[{"HostPort":"80"}]}')), /\[0\] lacks the key "HostIp"/);
  assert.match(error(withPorts('{"80/tcp":[{"HostIp":"0.0.0.0","HostPort":"80","x":1}]}')), /unexpected key "x"/);
  assert.match(error(withPorts('{"80/tcp":[{"HostIp":"0.0.0.0","HostPort":80}]}')), /HostPort must be a string, got number 80/);
  for (const port of ['0', '65536', '080', '8080 ', '', '1e3', '-1']) {
    assert.match(error(withPorts(`{"80/tcp":[{"HostIp":"0.0.0.0","HostPort":${JSON.stringify(port)}}]}`)), /HostPort .* is not a port number 1\.\.65535/, port);
  }
  for (const ip of ['', 'localhost', '1.2.3', '256.0.0.1', '01.2.3.4', '[::]', 'fe80::1%eth0', ' 0.0.0.0']) {
    assert.match(error(withPorts(`{"80/tcp":[{"HostIp":${JSON.stringify(ip)},"HostPort":"80"}]}`)), /HostIp .* is not an IP address/, ip);
  }
  assert.match(error(withPorts('{"80/tcp":[{"HostIp":1,"HostPort":"80"}]}')), /HostIp must be a string, got number 1/);
  assert.match(
    error(withPorts('{"80/tcp":[{"HostIp":"0.0.0.0","HostPort":"80"}],"53/udp":[{"HostIp":"0.0.0.0","HostPort":"x"}]}')),
    /^ports\["53\/udp"\]\[0\]\.HostPort/,
    'one bad binding refuses the whole message',
  );
});

test('refuses bad connectAddrs, naming where', () => {
  assert.match(error(withAddrs('[1]')), /connectAddrs\[0\] must be an object, got number 1/);
  assert.match(error(withAddrs('[{"network":"ip","addr":"10.0.0.1/24"}]')), /connectAddrs\[0\]\.network must be "ip\+net", got the string "ip"/);
  assert.match(error(withAddrs('[{"network":"ip+net"}]')), /connectAddrs\[0\] lacks the key "addr"/);
  assert.match(error(withAddrs('[{"network":"ip+net","addr":"10.0.0.1/24","zone":""}]')), /unexpected key "zone"/);
  for (const addr of ['10.0.0.1', '10.0.0.1/33', '10.0.0.1/', 'x/24', '::1/129', '10.0.0.1/024']) {
    assert.match(error(withAddrs(`[{"network":"ip+net","addr":${JSON.stringify(addr)}}]`)), /is not an address in CIDR form/, addr);
  }
  assert.match(error(withAddrs('[{"network":"ip+net","addr":5}]')), /addr must be a string, got number 5/);
});

test('refuses a message over the size limit without parsing it', () => {
  const padding = ' '.repeat(maxPortMappingBytes);
  assert.match(error(`${example}${padding}`), /larger than the limit of 65536/);
  assert.match(error(Buffer.alloc(maxPortMappingBytes + 1, 0x20)), /larger than the limit/);
  const exactly = example.trimEnd() + ' '.repeat(maxPortMappingBytes - Buffer.byteLength(example.trimEnd()));
  assert.equal(ok(exactly).bindings.length, 1, 'exactly the limit is fine');
  const parsed = parsePortMapping(example, 10);
  assert.ok(!parsed.ok && /limit of 10/.test(parsed.error), 'the limit is a parameter');
});

test('never throws, whatever it is given', () => {
  const samples = ['{', '{"remove":', '{"ports":{"80/tcp":[{"HostIp":{},"HostPort":[]}]}}', '\u0000', '1e999', '{"remove":false,"ports":{"80/tcp":[[]]},"connectAddrs":[[]]}'];
  for (let i = 0; i < 2000; i++) {
    // Random cuts and byte flips of the example.
    const bytes = Buffer.from(example);
    const cut = bytes.subarray(0, Math.floor(Math.random() * bytes.length));
    if (cut.length > 0) cut[Math.floor(Math.random() * cut.length)] = Math.floor(Math.random() * 256);
    samples.push(cut.toString('latin1'));
    assert.doesNotThrow(() => parsePortMapping(cut));
  }
  for (const s of samples) assert.doesNotThrow(() => parsePortMapping(s));
});

test('targetFor: the first connect address of the binding family, IPv6 link-local passed over', () => {
  const v4a: VmAddress = { ip: '172.26.112.5', prefix: 20, family: 4 };
  const v4b: VmAddress = { ip: '10.0.0.2', prefix: 24, family: 4 };
  const ll: VmAddress = { ip: 'fe80::1', prefix: 64, family: 6 };
  const v6: VmAddress = { ip: 'fd00::2', prefix: 64, family: 6 };
  assert.equal(targetFor({ hostIp: '0.0.0.0' }, [ll, v4a, v4b, v6]), '172.26.112.5');
  assert.equal(targetFor({ hostIp: '::' }, [v4a, ll, v6]), 'fd00::2');
  assert.equal(targetFor({ hostIp: '::' }, [v4a, ll]), undefined);
  assert.equal(targetFor({ hostIp: '127.0.0.1' }, [v6]), undefined);
  assert.equal(targetFor({ hostIp: '127.0.0.1' }, []), undefined);
});

test('helpers: bindingKey, canonicalIp, parseCidr', () => {
  assert.equal(bindingKey({ protocol: 'udp', hostIp: '::', hostPort: 53 }), 'udp/[::]:53');
  assert.equal(bindingKey({ protocol: 'tcp', hostIp: '0.0.0.0', hostPort: 8080 }), 'tcp/0.0.0.0:8080');
  assert.equal(canonicalIp('::ffff:127.0.0.1'), '::ffff:7f00:1');
  assert.equal(canonicalIp('10.0.0.1'), '10.0.0.1');
  assert.equal(canonicalIp('example.com'), undefined);
  assert.deepEqual(parseCidr('::1/128'), { ip: '::1', prefix: 128, family: 6 });
  assert.deepEqual(parseCidr('0.0.0.0/0'), { ip: '0.0.0.0', prefix: 0, family: 4 });
});
