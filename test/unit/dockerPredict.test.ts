import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { fixedBindings, learnExpansions, predictPorts, StartPredictor, type BindingsInspect, type Expansions } from '../../streams/dockerPredict.js';
import { runs } from '../properties/arbitraries.js';

/** What dockerd 20.10 shows for `docker run -p 8080:80 -p 127.0.0.1:5353:53/udp`, created and then started. */
const created: BindingsInspect = {
  HostConfig: {
    NetworkMode: 'default',
    PortBindings: { '80/tcp': [{ HostIp: '', HostPort: '8080' }], '53/udp': [{ HostIp: '127.0.0.1', HostPort: '5353' }] },
  },
  NetworkSettings: { Ports: {} },
};
const started: BindingsInspect = {
  ...created,
  NetworkSettings: {
    Ports: {
      '80/tcp': [
        { HostIp: '0.0.0.0', HostPort: '8080' },
        { HostIp: '::', HostPort: '8080' },
      ],
      '53/udp': [{ HostIp: '127.0.0.1', HostPort: '5353' }],
    },
  },
};

test('dockerPredict: what a started container shows is learned, and predicts the next container on that network exactly', () => {
  const learned = learnExpansions(new Map(), started);
  assert.deepEqual([...learned], [
    ['default\u0000', ['0.0.0.0', '::']],
    ['default\u0000127.0.0.1', ['127.0.0.1']],
  ]);
  const next = fixedBindings({ HostConfig: { NetworkMode: 'default', PortBindings: { '80/tcp': [{ HostIp: '', HostPort: '9090' }] } } });
  assert.ok(next);
  assert.deepEqual(predictPorts(learned, next), {
    '80/tcp': [
      { HostIp: '0.0.0.0', HostPort: '9090' },
      { HostIp: '::', HostPort: '9090' },
    ],
  });
  // the container it was learned from is predicted as it was started
  const again = fixedBindings(created);
  assert.ok(again);
  assert.deepEqual(predictPorts(learned, again), started.NetworkSettings?.Ports);
});

test('dockerPredict: nothing is assumed: an address or a network not seen yet predicts nothing', () => {
  const learned = learnExpansions(new Map(), started);
  const otherNetwork = fixedBindings({ HostConfig: { NetworkMode: 'backend', PortBindings: { '80/tcp': [{ HostIp: '', HostPort: '9090' }] } } });
  const otherAddress = fixedBindings({ HostConfig: { NetworkMode: 'default', PortBindings: { '80/tcp': [{ HostIp: '10.0.0.5', HostPort: '9090' }] } } });
  assert.ok(otherNetwork && otherAddress);
  assert.equal(predictPorts(learned, otherNetwork), undefined);
  assert.equal(predictPorts(learned, otherAddress), undefined);
  assert.equal(predictPorts(new Map(), otherNetwork), undefined);
});

test('dockerPredict: ports the engine picks, and networks without ports of their own, are never predicted', () => {
  const asking = (hostPort: string, NetworkMode = 'default'): BindingsInspect => ({ HostConfig: { NetworkMode, PortBindings: { '80/tcp': [{ HostIp: '', HostPort: hostPort }] } } });
  for (const port of ['', '0', '8000-8010', '70000', ' 80', '-1']) assert.equal(fixedBindings(asking(port)), undefined, `host port ${JSON.stringify(port)}`);
  for (const mode of ['host', 'none', 'container:abc']) assert.equal(fixedBindings(asking('8080', mode)), undefined, mode);
  // one dynamic binding makes the whole container the inspect's to read
  assert.equal(fixedBindings({ HostConfig: { PortBindings: { '80/tcp': [{ HostPort: '8080' }], '81/tcp': [{ HostPort: '' }] } } }), undefined);
  // publishes nothing, or nothing readable
  assert.equal(fixedBindings({ HostConfig: { PortBindings: {} } }), undefined);
  assert.equal(fixedBindings({ HostConfig: { PortBindings: { '80/tcp': null } } }), undefined);
  assert.equal(fixedBindings({}), undefined);
  assert.equal(fixedBindings({ HostConfig: { PortBindings: { '80/tcp': 'nonsense' } } } as unknown as BindingsInspect), undefined);
  assert.equal(fixedBindings({ HostConfig: { PortBindings: { '80/tcp': [{ HostIp: 5, HostPort: '80' }] } } } as unknown as BindingsInspect), undefined);
});

test('dockerPredict: two bindings on one port teach nothing, since their addresses cannot be told apart', () => {
  const both: BindingsInspect = {
    HostConfig: { PortBindings: { '80/tcp': [{ HostIp: '127.0.0.1', HostPort: '8080' }, { HostIp: '::1', HostPort: '8080' }] } },
    NetworkSettings: { Ports: { '80/tcp': [{ HostIp: '127.0.0.1', HostPort: '8080' }, { HostIp: '::1', HostPort: '8080' }] } },
  };
  assert.equal(learnExpansions(new Map(), both).size, 0);
});

test('dockerPredict: learning what is already known returns the same map; a change replaces it', () => {
  const learned = learnExpansions(new Map(), started);
  assert.equal(learnExpansions(learned, started), learned);
  const v4only: BindingsInspect = { ...created, NetworkSettings: { Ports: { '80/tcp': [{ HostIp: '0.0.0.0', HostPort: '8080' }] } } };
  assert.deepEqual(learnExpansions(learned, v4only).get('default\u0000'), ['0.0.0.0']);
});

test('dockerPredict: StartPredictor remembers each container from its create until its destroy, and for its next start', () => {
  const p = new StartPredictor();
  p.remember('c1', created);
  assert.equal(p.predict('c1'), undefined, 'nothing learned yet');
  p.learn('c1', started);
  assert.deepEqual(p.predict('c1'), started.NetworkSettings?.Ports, 'a restart is predicted');
  p.remember('c2', created);
  assert.deepEqual(p.predict('c2'), started.NetworkSettings?.Ports);
  p.forget('c2');
  assert.equal(p.predict('c2'), undefined);
  p.remember('c1', { HostConfig: { PortBindings: { '80/tcp': [{ HostPort: '' }] } } });
  assert.equal(p.predict('c1'), undefined, 'an inspect that shows a dynamic port replaces what was remembered');
});

test('dockerPredict: StartPredictor keeps a bounded number of containers, dropping the oldest', () => {
  const p = new StartPredictor();
  p.learn('seed', started);
  for (let i = 0; i < 5000; i++) p.remember(`c${String(i)}`, created);
  assert.equal(p.predict('c0'), undefined);
  assert.ok(p.predict('c4999'));
});

/** Any inspect-shaped value, well formed or not. */
const anyPorts = fc.dictionary(
  fc.constantFrom('80/tcp', '53/udp', '443/tcp', 'x'),
  fc.oneof(fc.constant(null), fc.array(fc.record({ HostIp: fc.constantFrom('', '0.0.0.0', '::', '127.0.0.1', 'bad'), HostPort: fc.constantFrom('', '0', '80', '8080', '8000-8001', 'x') }, { requiredKeys: [] }), { maxLength: 3 })),
);
const anyInspect: fc.Arbitrary<BindingsInspect> = fc.record(
  { HostConfig: fc.record({ NetworkMode: fc.constantFrom('default', 'bridge', 'host', 'backend'), PortBindings: anyPorts }, { requiredKeys: [] }), NetworkSettings: fc.record({ Ports: anyPorts }) },
  { requiredKeys: [] },
);

test('dockerPredict (property): a prediction only ever holds the ports asked for, on addresses seen for them, and never throws', () => {
  fc.assert(
    fc.property(fc.array(anyInspect, { maxLength: 6 }), anyInspect, (seen, next) => {
      let learned: Expansions = new Map();
      for (const inspect of seen) learned = learnExpansions(learned, inspect);
      const asked = fixedBindings(next);
      const predicted = asked && predictPorts(learned, asked);
      if (!asked || !predicted) return;
      const seenIps = new Set([...learned.values()].flat());
      for (const [spec, list] of Object.entries(predicted)) {
        for (const b of list ?? []) {
          assert.ok(asked.bindings.some(([s, , port]) => s === spec && port === b.HostPort), `${spec} ${String(b.HostPort)} was not asked for`);
          assert.ok(seenIps.has(b.HostIp ?? ''), `${String(b.HostIp)} was never seen`);
        }
      }
    }),
    runs(500),
  );
});
