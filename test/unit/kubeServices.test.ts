import assert from 'node:assert/strict';
import { test } from 'node:test';
import { apiServerForward, forwardsOfService, serviceName, type KubeService, type KubeServicePort } from '../../streams/kubeServices.js';
import type { Forward } from '../../src/model.js';

const service = (type: string | undefined, ports: readonly KubeServicePort[] | null | undefined, uid: string | null = 'uid-1'): KubeService => ({
  metadata: { namespace: 'ns', name: 'svc', ...(uid !== null && { uid }) },
  spec: { ...(type !== undefined && { type }), ports },
});

const f = (hostPort: number, protocol: 'tcp' | 'udp' = 'tcp', hostIp = '0.0.0.0', owner = 'uid-1'): Forward => ({
  protocol,
  hostIp,
  hostPort,
  source: 'kubernetes',
  owner,
});

test('NodePort: each port publishes its nodePort, owned by the Service UID, on the listener address', () => {
  const r = forwardsOfService(
    service('NodePort', [
      { name: 'http', protocol: 'TCP', port: 80, nodePort: 30080 },
      { name: 'https', protocol: 'TCP', port: 443, nodePort: 30443 },
    ]),
    '127.0.0.1',
  );
  assert.deepEqual(r, { owner: 'uid-1', forwards: [f(30080, 'tcp', '127.0.0.1'), f(30443, 'tcp', '127.0.0.1')], problems: [] });
});

test('LoadBalancer: each port publishes its port, not its nodePort', () => {
  const r = forwardsOfService(service('LoadBalancer', [{ name: 'http', protocol: 'TCP', port: 8080, nodePort: 31080 }]), '0.0.0.0');
  assert.deepEqual(r.forwards, [f(8080)]);
  assert.deepEqual(r.problems, []);
});

test('TCP and UDP on one number are two forwards', () => {
  const r = forwardsOfService(
    service('NodePort', [
      { name: 'dns-tcp', protocol: 'TCP', port: 53, nodePort: 30053 },
      { name: 'dns-udp', protocol: 'UDP', port: 53, nodePort: 30053 },
    ]),
    '0.0.0.0',
  );
  assert.deepEqual(r.forwards, [f(30053, 'tcp'), f(30053, 'udp')]);
});

test('a port without a protocol is TCP, as the API defaults it', () => {
  assert.deepEqual(forwardsOfService(service('NodePort', [{ port: 80, nodePort: 30080 }]), '0.0.0.0').forwards, [f(30080, 'tcp')]);
});

test('ClusterIP, an absent type, ExternalName and headless Services publish nothing and are not problems', () => {
  for (const type of ['ClusterIP', undefined, 'ExternalName']) {
    assert.deepEqual(forwardsOfService(service(type, [{ port: 80, nodePort: 30080 }]), '0.0.0.0'), { owner: 'uid-1', forwards: [], problems: [] }, String(type));
  }
  assert.deepEqual(forwardsOfService(service('ClusterIP', null), '0.0.0.0').problems, []);
});

test('no ports at all is one problem', () => {
  for (const ports of [[], null, undefined]) {
    const r = forwardsOfService(service('NodePort', ports), '0.0.0.0');
    assert.deepEqual(r.forwards, []);
    assert.deepEqual(r.problems, ['is of type NodePort but has no ports']);
  }
});

test('a nodePort of 0 or missing, a port out of range, SCTP: each a problem; the other ports still count', () => {
  const r = forwardsOfService(
    service('NodePort', [
      { name: 'zero', port: 80, nodePort: 0 },
      { name: 'unallocated', port: 81 },
      { name: 'big', port: 82, nodePort: 65536 },
      { name: 'sctp', protocol: 'SCTP', port: 83, nodePort: 30083 },
      { name: 'ok', protocol: 'UDP', port: 84, nodePort: 30084 },
    ]),
    '0.0.0.0',
  );
  assert.deepEqual(r.forwards, [f(30084, 'udp')]);
  assert.deepEqual(r.problems, [
    'port "zero" has nodePort 0, not a port in 1..65535',
    'port "unallocated" has nodePort null, not a port in 1..65535',
    'port "big" has nodePort 65536, not a port in 1..65535',
    'port "sctp" has protocol "SCTP", which cannot be forwarded (only TCP and UDP)',
  ]);
});

test('LoadBalancer ports out of range or not integers are problems; unnamed ports are named by index', () => {
  const r = forwardsOfService(service('LoadBalancer', [{ port: 0 }, { port: 80.5 }, { port: -1 }, { port: 65535 }]), '0.0.0.0');
  assert.deepEqual(r.forwards, [f(65535)]);
  assert.deepEqual(r.problems, [
    'port #0 has port 0, not a port in 1..65535',
    'port #1 has port 80.5, not a port in 1..65535',
    'port #2 has port -1, not a port in 1..65535',
  ]);
});

test('garbage in place of a port or a protocol is a problem, never an exception', () => {
  const ports = [null, 'x', { port: 80, nodePort: 30080, protocol: 7 }] as unknown as KubeServicePort[];
  const r = forwardsOfService(service('NodePort', ports), '0.0.0.0');
  assert.deepEqual(r.forwards, []);
  assert.deepEqual(r.problems, ['port #0 is not an object', 'port #1 is not an object', 'port #2 has protocol 7, which cannot be forwarded (only TCP and UDP)']);
  assert.deepEqual(forwardsOfService({}, '0.0.0.0'), { owner: undefined, forwards: [], problems: [] });
  assert.deepEqual(forwardsOfService({ metadata: null, spec: null }, '0.0.0.0'), { owner: undefined, forwards: [], problems: [] });
});

test('a NodePort Service without a UID cannot be owned: a problem, no forwards', () => {
  const r = forwardsOfService(service('NodePort', [{ port: 80, nodePort: 30080 }], null), '0.0.0.0');
  assert.deepEqual(r, { owner: undefined, forwards: [], problems: ['has no metadata.uid'] });
});

test('serviceName is namespace/name; the API server forward is TCP on the listener address', () => {
  assert.equal(serviceName(service('NodePort', [])), 'ns/svc');
  assert.equal(serviceName({}), '?/?');
  assert.deepEqual(apiServerForward('127.0.0.1', 6443), f(6443, 'tcp', '127.0.0.1', 'kubernetes/apiserver'));
});
