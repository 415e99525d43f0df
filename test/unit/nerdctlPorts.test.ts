import assert from 'node:assert/strict';
import { test } from 'node:test';
import { portsFromLabel, portsFromMappings, portsFromNetworkConfig, portsSourceOf } from '../../streams/nerdctlPorts.js';
import type { Forward } from '../../src/model.js';

const owner = 'default/web';
const f = (hostPort: number, extra: Partial<Forward> = {}): Forward => ({
  protocol: 'tcp',
  hostIp: '0.0.0.0',
  hostPort,
  source: 'containerd',
  owner,
  ...extra,
});

test('nerdctl/ports: the label nerdctl writes', () => {
  const label = JSON.stringify([
    { HostPort: 8080, ContainerPort: 80, Protocol: 'tcp', HostIP: '0.0.0.0' },
    { HostPort: 5353, ContainerPort: 53, Protocol: 'udp', HostIP: '127.0.0.1' },
    { HostPort: 8443, ContainerPort: 443, Protocol: 'tcp', HostIP: '::' },
  ]);
  assert.deepEqual(portsFromLabel(owner, label), {
    forwards: [
      f(8080, { containerPort: 80 }),
      f(5353, { protocol: 'udp', hostIp: '127.0.0.1', containerPort: 53 }),
      f(8443, { hostIp: '::', containerPort: 443 }),
    ],
    problems: [],
  });
});

test('nerdctl/ports: keys and protocol in any case; missing protocol means tcp, missing or empty host IP means 0.0.0.0', () => {
  const label = '[{"hostport":1,"CONTAINERPORT":2,"protocol":"UDP","hostIP":""},{"hostPort":3},{"HostPort":4,"HostIp":"[::1]"}]';
  assert.deepEqual(portsFromLabel(owner, label), {
    forwards: [f(1, { protocol: 'udp', containerPort: 2 }), f(3), f(4, { hostIp: '::1' })],
    problems: [],
  });
});

test('nerdctl/ports: empty, null and [] mean no ports and no problem', () => {
  for (const label of ['', '  ', 'null', '[]']) assert.deepEqual(portsFromLabel(owner, label), { forwards: [], problems: [] }, JSON.stringify(label));
});

test('nerdctl/ports: a label that is not JSON, or not a list, is one problem', () => {
  const notJson = portsFromLabel(owner, '[{"HostPort":80');
  assert.deepEqual(notJson.forwards, []);
  assert.equal(notJson.problems.length, 1);
  assert.match(notJson.problems[0]!, /^the nerdctl\/ports label is not JSON \(/);
  const notList = portsFromLabel(owner, '{"HostPort":80}');
  assert.deepEqual(notList, { forwards: [], problems: ['the nerdctl/ports label is not a list of port mappings: {"HostPort":80}'] });
});

test('nerdctl/ports: each bad entry is one problem and the good ones still count', () => {
  const entries = [
    { HostPort: 8080, ContainerPort: 80 },
    { HostPort: 0, ContainerPort: 81 },
    { HostPort: 65536 },
    { HostPort: '8081' },
    { HostPort: 8.5 },
    { ContainerPort: 82 },
    { HostPort: 8082, ContainerPort: 70000 },
    { HostPort: 8083, Protocol: 'sctp' },
    { HostPort: 8084, Protocol: 6 },
    { HostPort: 8085, HostIP: 'localhost' },
    'eighty',
    null,
    { HostPort: 8086, Protocol: 'udp' },
  ];
  const { forwards, problems } = portsFromLabel(owner, JSON.stringify(entries));
  assert.deepEqual(forwards, [f(8080, { containerPort: 80 }), f(8086, { protocol: 'udp' })]);
  assert.deepEqual(
    problems.map((p) => p.replace(/^the nerdctl\/ports label, entry (\d+) .*?: /, '$1: ')),
    [
      '2: host port 0 is not a port number (1-65535)',
      '3: host port 65536 is not a port number (1-65535)',
      '4: host port "8081" is not a port number (1-65535)',
      '5: host port 8.5 is not a port number (1-65535)',
      '6: no host port',
      '7: container port 70000 is not a port number (1-65535)',
      '8: unknown protocol "sctp" (only tcp and udp are forwarded)',
      '9: protocol 6 is not a string',
      '10: host IP "localhost" is not an IP address',
      '11: not an object',
      '12: not an object',
    ],
  );
  assert.match(problems[0]!, /^the nerdctl\/ports label, entry 2 \{"HostPort":0,"ContainerPort":81\}: /, 'a problem quotes the entry');
});

test('network-config.json: an object with portMappings (key in any case), or a bare array', () => {
  const mapping = { HostPort: 8080, ContainerPort: 80, Protocol: 'tcp', HostIP: '0.0.0.0' };
  const expected = { forwards: [f(8080, { containerPort: 80 })], problems: [] };
  assert.deepEqual(portsFromNetworkConfig(owner, JSON.stringify({ portMappings: [mapping] })), expected);
  assert.deepEqual(portsFromNetworkConfig(owner, JSON.stringify({ PortMappings: [mapping], other: { x: 1 } })), expected);
  assert.deepEqual(portsFromNetworkConfig(owner, JSON.stringify([mapping])), expected);
});

test('network-config.json: no port mappings at all is no ports and no problem', () => {
  for (const text of ['{}', '{"portMappings":null}', '{"portMappings":[]}', '[]', 'null']) {
    assert.deepEqual(portsFromNetworkConfig(owner, text), { forwards: [], problems: [] }, text);
  }
});

test('network-config.json: bad shapes are one problem each', () => {
  assert.match(portsFromNetworkConfig(owner, '{"portMappings":').problems[0]!, /^network-config.json is not JSON/);
  assert.deepEqual(portsFromNetworkConfig(owner, '42').problems, ['network-config.json holds neither an object nor a list: 42']);
  assert.deepEqual(portsFromNetworkConfig(owner, '{"portMappings":{"HostPort":1}}').problems, ['network-config.json: portMappings is not a list: {"HostPort":1}']);
  const mixed = portsFromNetworkConfig(owner, '{"portMappings":[{"HostPort":1},{"HostPort":-1}]}');
  assert.deepEqual(mixed.forwards, [f(1)]);
  assert.deepEqual(mixed.problems, ['network-config.json, entry 2 {"HostPort":-1}: host port -1 is not a port number (1-65535)']);
});

test('portsFromMappings: owner and source on every forward', () => {
  const { forwards } = portsFromMappings('k8s.io/abc', [{ HostPort: 1 }]);
  assert.deepEqual(forwards, [{ protocol: 'tcp', hostIp: '0.0.0.0', hostPort: 1, source: 'containerd', owner: 'k8s.io/abc' }]);
});

test('portsSourceOf: the ports label wins, else the state directory, else nothing', () => {
  assert.deepEqual(portsSourceOf({ 'nerdctl/ports': '[]', 'nerdctl/state-dir': '/s' }), { kind: 'label', json: '[]' });
  assert.deepEqual(portsSourceOf({ 'nerdctl/state-dir': '/var/lib/nerdctl/1935db59/containers/default/abc' }), {
    kind: 'state-dir',
    dir: '/var/lib/nerdctl/1935db59/containers/default/abc',
  });
  assert.deepEqual(portsSourceOf({ 'nerdctl/state-dir': '' }), { kind: 'none' });
  assert.deepEqual(portsSourceOf({ 'io.containerd.image.config.stop-signal': 'SIGTERM' }), { kind: 'none' });
});
