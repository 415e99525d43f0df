/**
 * The parsers of outside input never throw, whatever they are given (arbitrary strings and bytes,
 * arbitrary JSON values, real samples with random damage, near-valid shapes with wrong types and
 * lookalike keys): they return their problem or error value instead, and every forward they do
 * return is valid (port 1..65535, tcp or udp, a parseable IP).
 *
 * - iptables: `parseIptablesSave` (whole texts and single rule lines), `tokenize`,
 *   `parsePortRange`, `parseToDestination`;
 * - nerdctl: `portsFromLabel`, `portsFromNetworkConfig`;
 * - Docker: `portsFromInspect`, `portsFromList`;
 * - Kubernetes: `forwardsOfService`;
 * - the vtunnel wire on the host side: `parsePortMapping` (and whatever the agent's own encoder
 *   writes, it reads back exactly).
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { isIP, isIPv4, isIPv6 } from 'node:net';
import { test } from 'node:test';
import fc from 'fast-check';
import { canonicalIp, parsePortMapping, type ParsedPortMapping } from '../../src/wire/parsePortMapping.js';
import { isValidPort, type Forward } from '../../src/model.js';
import { encodePortMapping, splitPortMapping, wirePortKey, type ConnectAddr } from '../../src/wire/portMapping.js';
import { portsFromInspect, portsFromList, type InspectPorts, type ListPort } from '../../streams/dockerPorts.js';
import { parseIptablesSave, parsePortRange, parseToDestination, tokenize, type Family } from '../../streams/iptablesRules.js';
import { forwardsOfService, type KubeService } from '../../streams/kubeServices.js';
import { portsFromLabel, portsFromNetworkConfig } from '../../streams/nerdctlPorts.js';
import { anyJson, assertParsed, damaged, mutated, prototypeKeys, runs } from './arbitraries.js';

const families: readonly Family[] = ['ipv4', 'ipv6'];

/** Text of any kind: unicode, lone surrogates, control characters, and plain ASCII noise. */
const anyText = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 200 }),
  fc.string({ unit: 'grapheme', maxLength: 200 }),
  fc.string({ maxLength: 200 }),
);

/** Calls `parse` and reports a throw as what it is: a bug, with the input that caused it. */
function noThrow<T>(what: string, input: unknown, parse: () => T): T {
  try {
    return parse();
  } catch (error) {
    assert.fail(`${what} threw ${error instanceof Error ? error.message : String(error)} on ${JSON.stringify(input)}`);
  }
}

// ---------------------------------------------------------------------------------------------
// iptables

const fixture = (name: string): string => readFileSync(new URL(`../unit/fixtures/iptables/${name}`, import.meta.url), 'utf8');
const iptablesSamples = ['iptables-save-nat-docker-cni.txt', 'ip6tables-save-nat-cni.txt', 'iptables-save-all-portmap.txt'].map(fixture);
const iptablesAlphabet = ' \t\n"\\!-:*#/[]0123456789abcdefACDNTjpdg.,';

/** The words rules are made of, the odd ones included (prototype names, quotes, bad ranges). */
const ruleToken = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom('-p', '--protocol', '-d', '--dst', '--dport', '--dports', '--ports', '-j', '-g', '--to-destination', '-m', '--comment', '!', '-s', '-i') },
  { weight: 4, arbitrary: fc.constantFrom('tcp', 'udp', 'TCP', '6', '17', 'sctp', 'icmp', 'all', 'DNAT', 'SETMARK', 'CNI-DN-x', 'multiport', 'comment') },
  { weight: 4, arbitrary: fc.constantFrom('80', '0', '65535', '65536', '99999', '1:4096', '8000:7000', '1,2,3', '1:65535', '80,', ':80', '-1', '08') },
  { weight: 4, arbitrary: fc.constantFrom('127.0.0.1/32', '10.0.0.1', '0.0.0.0/0', '10.0.0.0/8', '::1/128', 'fd00::5', '1.2.3.4/32/1', '[fd00::5]:80', '10.4.0.7:80', '10.4.0.7:80-90/85', ':80', '10.0.0.1-10.0.0.9:1-2', '256.1.1.1') },
  { weight: 2, arbitrary: fc.constantFrom(...prototypeKeys) },
  { weight: 2, arbitrary: fc.constantFrom('"', '"a b"', '\\', '"\\"', '""', '-', '--', '-1x') },
  { weight: 1, arbitrary: fc.string({ maxLength: 8 }) },
);
/**
 * A rule's options in any order, each with a value from its own pool (good, bad, and names that
 * a plain-object lookup table would inherit), so that a counting DNAT rule comes up often.
 */
const negated = fc.oneof({ weight: 4, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) });
const odd = <T>(good: fc.Arbitrary<T>, bad: fc.Arbitrary<T>): fc.Arbitrary<T> => fc.oneof({ weight: 3, arbitrary: good }, { weight: 1, arbitrary: bad });
const ruleOptions = fc
  .record(
    {
      protocol: fc.tuple(
        negated,
        fc.constantFrom('-p', '--protocol'),
        fc.oneof(
          { weight: 3, arbitrary: fc.constantFrom('tcp', 'udp', 'TCP', 'Udp', '6', '17') },
          { weight: 2, arbitrary: fc.constantFrom(...prototypeKeys) },
          { weight: 1, arbitrary: fc.oneof(fc.constantFrom('sctp', 'all', '0', ''), fc.string({ maxLength: 5 })) },
        ),
      ),
      destination: fc.tuple(
        negated,
        fc.constantFrom('-d', '--destination', '--dst'),
        odd(
          fc.oneof(fc.constantFrom('127.0.0.1/32', '10.0.0.1', '0.0.0.0/0', '::1/128', 'fd00::5', 'FD00::5/128'), fc.ipV4(), fc.ipV6()),
          fc.oneof(fc.constantFrom('10.0.0.0/8', 'fd00::5/64', '1.2.3.4/32/1', '/32', '256.1.1.1', ...prototypeKeys), fc.string({ maxLength: 5 })),
        ),
      ),
      dports: fc.array(
        fc.tuple(
          negated,
          fc.constantFrom('--dport', '--dports', '--ports', '--destination-port'),
          odd(
            fc.oneof(fc.integer({ min: 1, max: 65535 }).map(String), fc.constantFrom('1:4096', '8000:8002', '1,2,3', '65535')),
            fc.oneof(fc.constantFrom('0', '65536', '1:4097', '8000:7000', '80,', ':80', '-1', '08', '1:65535', ...prototypeKeys), fc.string({ maxLength: 5 })),
          ),
        ),
        { minLength: 1, maxLength: 2 },
      ),
      jump: fc.tuple(
        fc.constantFrom('-j', '--jump', '-g'),
        fc.oneof({ weight: 8, arbitrary: fc.constant('DNAT') }, { weight: 1, arbitrary: fc.constantFrom('SETMARK', 'CNI-DN-x', 'RETURN', 'dnat', ...prototypeKeys) }),
      ),
      to: fc.tuple(
        fc.constant('--to-destination'),
        odd(
          fc.constantFrom('10.4.0.7:80', '10.4.0.7:80-90/85', '10.4.0.7', '10.4.0.7:1000-2000', '[fd00::5]:80', 'fd00::5', ':80'),
          fc.oneof(fc.constantFrom('10.0.0.1-10.0.0.9:1-2', '10.4.0.7:0', '10.4.0.7:9-1', '[fd00::5', '10.4.0.7:1-2/0', ...prototypeKeys), fc.string({ maxLength: 6 })),
        ),
      ),
      // other options with their arguments (whole), now and then a stray word
      noise: fc.array(
        odd(fc.constantFrom('-m tcp', '-m udp', '-m comment --comment "dnat name: \\"cbr0\\" id: x"', '-s 10.0.0.0/8', '-i cni0', '! -i lo', '-m multiport'), ruleToken),
        { maxLength: 2 },
      ),
    },
    { requiredKeys: ['protocol', 'dports', 'jump', 'noise'] },
  )
  .chain(({ protocol, destination, dports, jump, to, noise }) => {
    const withNegation = (t: readonly [boolean, string, string]): string[] => (t[0] ? ['!', t[1], t[2]] : [t[1], t[2]]);
    const parts: string[][] = [withNegation(protocol), ...dports.map(withNegation), [...jump], ...noise.map((t) => [t])];
    if (destination) parts.push(withNegation(destination));
    if (to) parts.push([...to]);
    return fc.shuffledSubarray(parts, { minLength: parts.length, maxLength: parts.length }).map((ps) => ps.flat().join(' '));
  });
const ruleText = fc.oneof({ weight: 3, arbitrary: ruleOptions }, { weight: 1, arbitrary: fc.array(ruleToken, { maxLength: 14 }).map((tokens) => tokens.join(' ')) });

/** A rule line where CNI portmap counts it: in a CNI-DN chain reached from CNI-HOSTPORT-DNAT. */
const inCniChain = (rule: string): string =>
  ['*nat', ':CNI-HOSTPORT-DNAT - [0:0]', ':CNI-DN-x - [0:0]', '-A CNI-HOSTPORT-DNAT -j CNI-DN-x', `-A CNI-DN-x ${rule}`, 'COMMIT', ''].join('\n');

/** Whole texts made of table headers, declarations, rules and COMMITs in any order. */
const saveText = fc
  .array(
    fc.oneof(
      fc.constantFrom('*nat', '*filter', '*Nat', '*', 'COMMIT', '# comment', '', ':CNI-HOSTPORT-DNAT - [0:0]', ':CNI-DN-x - [1:2]', ':bad decl here'),
      ruleText.map((r) => `-A CNI-DN-x ${r}`),
      ruleText.map((r) => `-A CNI-HOSTPORT-DNAT ${r}`),
      fc.constantFrom('-A CNI-HOSTPORT-DNAT -j CNI-DN-x', '-A CNI-HOSTPORT-DNAT -g CNI-DN-x', '-A CNI-HOSTPORT-DNAT -j "CNI-DN-x'),
      ruleText,
    ),
    { maxLength: 20 },
  )
  .map((lines) => lines.join('\n'));

function checkIptables(text: string): void {
  for (const family of families) {
    const parsed = noThrow(`parseIptablesSave(…, ${family})`, text, () => parseIptablesSave(text, family));
    assertParsed(parsed, `parseIptablesSave ${family}`);
    for (const f of parsed.forwards) {
      // the family's addresses only, as the source says
      assert.ok(family === 'ipv4' ? isIPv4(f.hostIp) : isIPv6(f.hostIp), `${family} forward on ${f.hostIp}`);
      assert.equal(f.source, 'iptables');
    }
  }
}

test('iptables: parseIptablesSave never throws on arbitrary text, and returns only valid forwards', () => {
  fc.assert(fc.property(anyText, checkIptables), runs(900));
});

test('iptables: ... nor on iptables-like texts and single rule lines in a counting chain', () => {
  fc.assert(fc.property(saveText, checkIptables), runs(900));
  fc.assert(
    fc.property(ruleText, (rule) => {
      checkIptables(inCniChain(rule));
    }),
    runs(1500),
  );
});

test('iptables: ... nor on real iptables-save output with random damage', () => {
  fc.assert(
    fc.property(fc.constantFrom(...iptablesSamples).chain((sample) => mutated(sample, iptablesAlphabet)), checkIptables),
    runs(900),
  );
});

test('iptables: a well-formed CNI DNAT rule publishes exactly its port, protocol and address', () => {
  const rule = fc.record({
    family: fc.constantFrom(...families),
    protocol: fc.constantFrom('tcp', 'udp'),
    v4: fc.ipV4(),
    v6: fc.ipV6(),
    bound: fc.boolean(),
    port: fc.integer({ min: 1, max: 65535 }),
    to: fc.integer({ min: 1, max: 65535 }),
  });
  fc.assert(
    fc.property(rule, ({ family, protocol, v4, v6, bound, port, to }) => {
      const ip = family === 'ipv4' ? v4 : v6;
      const dest = family === 'ipv4' ? `10.4.0.7:${String(to)}` : `[fd00::7]:${String(to)}`;
      const line = `${bound ? `-d ${ip}/${family === 'ipv4' ? '32' : '128'} ` : ''}-p ${protocol} -m ${protocol} --dport ${String(port)} -j DNAT --to-destination ${dest}`;
      const { forwards, problems } = parseIptablesSave(inCniChain(line), family);
      assert.deepEqual(problems, []);
      assert.equal(forwards.length, 1);
      const [f] = forwards as [Forward];
      assert.equal(f.protocol, protocol);
      assert.equal(f.hostPort, port);
      assert.equal(f.containerPort, to);
      assert.equal(f.hostIp, bound ? (family === 'ipv6' ? ip.toLowerCase() : ip) : family === 'ipv4' ? '0.0.0.0' : '::');
    }),
    runs(600),
  );
});

/** iptables-save's quoting: a word with blanks or quotes in double quotes, `\` before `"` and `\`. */
const quoteWord = (word: string): string => (word === '' || /[\s"'\\]/.test(word) ? `"${word.replace(/[\\"]/g, (c) => `\\${c}`)}"` : word);

test('iptables: tokenize never throws, and reads back any words quoted the way iptables-save writes them', () => {
  fc.assert(
    fc.property(anyText, (text) => {
      const tokens = noThrow('tokenize', text, () => tokenize(text));
      assert.ok(typeof tokens === 'string' || (Array.isArray(tokens) && tokens.every((t) => typeof t === 'string')));
    }),
    runs(900),
  );
  fc.assert(
    fc.property(fc.array(fc.oneof(ruleToken, fc.string({ unit: 'binary', maxLength: 10 })), { maxLength: 10 }), fc.constantFrom(' ', '\t', '  '), (words, blank) => {
      assert.deepEqual(tokenize(words.map(quoteWord).join(blank)), words);
    }),
    runs(900),
  );
});

test('iptables: parsePortRange and parseToDestination never throw and return only valid ports', () => {
  const portish = fc.oneof(anyText, ruleToken, fc.tuple(fc.integer({ min: -2, max: 70000 }), fc.integer({ min: -2, max: 70000 })).map(([a, b]) => `${String(a)}:${String(b)}`));
  fc.assert(
    fc.property(portish, (text) => {
      const range = noThrow('parsePortRange', text, () => parsePortRange(text));
      if (range) assert.ok(isValidPort(range.first) && isValidPort(range.last) && range.first <= range.last, JSON.stringify(range));
      for (const family of families) {
        const to = noThrow('parseToDestination', text, () => parseToDestination(text, family));
        if (to?.ports) {
          const { first, last, base } = to.ports;
          assert.ok(isValidPort(first) && isValidPort(last) && first <= last && (base === undefined || isValidPort(base)), JSON.stringify(to));
        }
        for (const address of to?.addresses ?? []) assert.ok(family === 'ipv4' ? isIPv4(address) : isIPv6(address), address);
      }
    }),
    runs(1500),
  );
});

// ---------------------------------------------------------------------------------------------
// nerdctl (containerd)

/** A key that go-cni's decoder would take for a field, in any case, or a lookalike. */
const mappingKey = fc.oneof(
  fc.constantFrom('HostPort', 'hostPort', 'HOSTPORT', 'ContainerPort', 'containerport', 'Protocol', 'PROTOCOL', 'HostIP', 'hostIp', 'hostip'),
  fc.constantFrom(...prototypeKeys),
  fc.string({ maxLength: 6 }),
);
/** What a field may hold: right, nearly right, or of another type. */
const mappingValue: fc.Arbitrary<unknown> = fc.oneof(
  fc.integer({ min: -2, max: 70000 }),
  fc.constantFrom(0, 1, 80, 65535, 65536, 1.5, -0, 1e21, Number.MAX_SAFE_INTEGER),
  fc.constantFrom('tcp', 'UDP', 'Udp', 'sctp', '', '80', '0.0.0.0', '::', '[::1]', '127.0.0.1', 'fe80::1%eth0', '[::1', 'localhost', '1.2.3.4.5'),
  fc.ipV4(),
  fc.ipV6(),
  fc.constantFrom(null, true, false, [], {}),
  anyJson,
);
const mappingEntry = fc.oneof(
  { weight: 5, arbitrary: fc.dictionary(mappingKey, mappingValue, { maxKeys: 5 }) },
  {
    weight: 3,
    arbitrary: fc.record(
      { HostPort: mappingValue, ContainerPort: mappingValue, Protocol: mappingValue, HostIP: mappingValue },
      { requiredKeys: [] },
    ),
  },
  { weight: 1, arbitrary: anyJson },
);
const validMapping = fc.record(
  {
    HostPort: fc.integer({ min: 1, max: 65535 }),
    ContainerPort: fc.integer({ min: 1, max: 65535 }),
    Protocol: fc.constantFrom('tcp', 'udp'),
    HostIP: fc.oneof(fc.constantFrom('', '0.0.0.0', '::'), fc.ipV4(), fc.ipV6()),
  },
  { requiredKeys: ['HostPort'] },
);
const mappingList = fc.oneof(
  fc.array(mappingEntry, { maxLength: 6 }),
  damaged(fc.array(validMapping, { minLength: 1, maxLength: 4 }), mappingValue, mappingKey),
);

const labelSample = JSON.stringify([
  { HostPort: 8080, ContainerPort: 80, Protocol: 'tcp', HostIP: '0.0.0.0' },
  { HostPort: 5353, ContainerPort: 53, Protocol: 'udp', HostIP: '::1' },
]);
const networkConfigSample = JSON.stringify({ portMappings: JSON.parse(labelSample) as unknown, networks: ['bridge'], ipAddress: '10.4.0.7' });
const jsonAlphabet = '{}[]":,0123456789.-eE tnrufals\\HostPIpCnaiUD';

function checkNerdctl(text: string): void {
  assertParsed(noThrow('portsFromLabel', text, () => portsFromLabel('default/c1', text)), 'portsFromLabel');
  assertParsed(noThrow('portsFromNetworkConfig', text, () => portsFromNetworkConfig('default/c1', text)), 'portsFromNetworkConfig');
}

test('nerdctl: the label and network-config.json parsers never throw on arbitrary text or JSON, and return only valid forwards', () => {
  fc.assert(fc.property(anyText, checkNerdctl), runs(900));
  fc.assert(
    fc.property(anyJson, (value) => {
      checkNerdctl(JSON.stringify(value));
    }),
    runs(900),
  );
});

test('nerdctl: ... nor on near-valid port mappings (keys in any case, values of any type) or damaged real ones', () => {
  const portMappingsKey = fc.constantFrom('portMappings', 'PortMappings', 'portmappings', 'ports', '__proto__');
  fc.assert(
    fc.property(mappingList, portMappingsKey, (list, key) => {
      checkNerdctl(JSON.stringify(list));
      checkNerdctl(`{${JSON.stringify(key)}:${JSON.stringify(list)}}`);
    }),
    runs(1200),
  );
  fc.assert(fc.property(fc.oneof(mutated(labelSample, jsonAlphabet, 6), mutated(networkConfigSample, jsonAlphabet, 6)), checkNerdctl), runs(900));
});

test('nerdctl: a well-formed mapping gives exactly its forward', () => {
  const mapping = fc.record({ HostPort: fc.integer({ min: 1, max: 65535 }), ContainerPort: fc.integer({ min: 1, max: 65535 }), Protocol: fc.constantFrom('tcp', 'udp', 'TCP', 'UDP'), HostIP: fc.oneof(fc.ipV4(), fc.ipV6()) });
  fc.assert(
    fc.property(fc.array(mapping, { maxLength: 5 }), (list) => {
      const { forwards, problems } = portsFromLabel('o', JSON.stringify(list));
      assert.deepEqual(problems, []);
      assert.deepEqual(
        forwards.map((f) => [f.hostPort, f.containerPort, f.protocol, f.hostIp]),
        list.map((m) => [m.HostPort, m.ContainerPort, m.Protocol.toLowerCase(), m.HostIP]),
      );
    }),
    runs(600),
  );
});

// ---------------------------------------------------------------------------------------------
// Docker

const portSpec = fc.oneof(
  fc.tuple(fc.integer({ min: -1, max: 70000 }), fc.constantFrom('tcp', 'udp', 'sctp', 'TCP', '')).map(([p, proto]) => `${String(p)}/${proto}`),
  fc.constantFrom('80/tcp', '53/udp', '8000-8002/tcp', '80', '80/tcp/x', '/tcp', '0/tcp', ...prototypeKeys),
  fc.string({ maxLength: 8 }),
);
const hostPortText: fc.Arbitrary<unknown> = fc.oneof(
  fc.integer({ min: 0, max: 70000 }).map(String),
  fc.constantFrom('', '8000-8002', '9000-8000', '1-65535', '80 ', 'x', '0'),
  mappingValue,
);
const inspectBinding: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ HostIp: fc.oneof(fc.constantFrom('', '0.0.0.0', '::', '127.0.0.1'), fc.ipV4(), fc.ipV6(), mappingValue), HostPort: hostPortText }, { requiredKeys: [] }) },
  { weight: 1, arbitrary: anyJson },
);
const dockerKey = fc.oneof(fc.constantFrom('HostIp', 'HostPort', 'IP', 'PrivatePort', 'PublicPort', 'Type', '80/tcp', '53/udp'), mappingKey);
const validInspectPorts = fc.dictionary(
  fc.tuple(fc.integer({ min: 1, max: 65535 }), fc.constantFrom('tcp', 'udp')).map(([p, proto]) => `${String(p)}/${proto}`),
  fc.oneof(
    fc.array(fc.record({ HostIp: fc.oneof(fc.constantFrom('', '0.0.0.0', '::'), fc.ipV4(), fc.ipV6()), HostPort: fc.integer({ min: 1, max: 65535 }).map(String) }), { minLength: 1, maxLength: 2 }),
    fc.constant(null),
  ),
  { minKeys: 1, maxKeys: 3 },
);
const inspectPorts: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 4, arbitrary: fc.dictionary(portSpec, fc.oneof(fc.array(inspectBinding, { maxLength: 3 }), fc.constant(null), anyJson), { maxKeys: 4 }) },
  { weight: 4, arbitrary: damaged(validInspectPorts, mappingValue, dockerKey) },
  { weight: 1, arbitrary: anyJson },
);
const validListPorts = fc.array(
  fc.record(
    {
      IP: fc.oneof(fc.constantFrom('0.0.0.0', '::'), fc.ipV4(), fc.ipV6()),
      PrivatePort: fc.integer({ min: 1, max: 65535 }),
      PublicPort: fc.integer({ min: 0, max: 65535 }),
      Type: fc.constantFrom('tcp', 'udp'),
    },
    { requiredKeys: ['PrivatePort', 'Type'] },
  ),
  { minLength: 1, maxLength: 4 },
);
const listPorts: fc.Arbitrary<unknown> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.array(
      fc.oneof(
        { weight: 5, arbitrary: fc.record({ IP: fc.oneof(fc.constantFrom('', '0.0.0.0', '::'), fc.ipV4(), fc.ipV6(), mappingValue), PrivatePort: mappingValue, PublicPort: mappingValue, Type: fc.oneof(fc.constantFrom('tcp', 'udp', 'sctp'), mappingValue) }, { requiredKeys: [] }) },
        { weight: 1, arbitrary: anyJson },
      ),
      { maxLength: 4 },
    ),
  },
  { weight: 4, arbitrary: damaged(validListPorts, mappingValue, dockerKey) },
  { weight: 1, arbitrary: anyJson },
);

test('docker: portsFromInspect and portsFromList never throw on any JSON, and return only valid forwards', () => {
  fc.assert(
    fc.property(inspectPorts, listPorts, (inspect, list) => {
      assertParsed(noThrow('portsFromInspect', inspect, () => portsFromInspect('c1', inspect as InspectPorts)), 'portsFromInspect');
      assertParsed(noThrow('portsFromList', list, () => portsFromList('c1', list as ListPort[])), 'portsFromList');
    }),
    runs(1500),
  );
});

// ---------------------------------------------------------------------------------------------
// Kubernetes

const kubePort: fc.Arbitrary<unknown> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record(
      {
        name: fc.oneof(fc.constantFrom('http', ''), mappingValue),
        protocol: fc.oneof(fc.constantFrom('TCP', 'UDP', 'SCTP', 'tcp', 'udp', 'CONSTRUCTOR', '__PROTO__', ...prototypeKeys), mappingValue),
        port: mappingValue,
        nodePort: mappingValue,
      },
      { requiredKeys: [] },
    ),
  },
  { weight: 1, arbitrary: anyJson },
);
const kubeService: fc.Arbitrary<unknown> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record(
      {
        kind: fc.constantFrom('Service', 'Status'),
        metadata: fc.oneof(fc.record({ name: mappingValue, namespace: mappingValue, uid: fc.oneof(fc.uuid(), fc.constantFrom(''), mappingValue) }, { requiredKeys: [] }), anyJson),
        spec: fc.oneof(
          fc.record({ type: fc.oneof(fc.constantFrom('NodePort', 'LoadBalancer', 'ClusterIP', 'ExternalName', ...prototypeKeys), mappingValue), ports: fc.oneof(fc.array(kubePort, { maxLength: 4 }), anyJson) }, { requiredKeys: [] }),
          anyJson,
        ),
      },
      { requiredKeys: [] },
    ),
  },
  // any JSON value at all: null, numbers and strings included (a broken watch line's object)
  { weight: 1, arbitrary: anyJson },
  // real-looking Services with a few places damaged
  {
    weight: 6,
    arbitrary: damaged(
      fc.record({
        kind: fc.constant('Service'),
        metadata: fc.record({ name: fc.constantFrom('web', 'dns'), namespace: fc.constant('default'), uid: fc.uuid(), resourceVersion: fc.nat().map(String) }),
        spec: fc.record({
          type: fc.constantFrom('NodePort', 'LoadBalancer', 'ClusterIP'),
          ports: fc.array(
            fc.record(
              { name: fc.constantFrom('http', 'dns'), protocol: fc.constantFrom('TCP', 'UDP'), port: fc.integer({ min: 1, max: 65535 }), nodePort: fc.integer({ min: 30000, max: 32767 }) },
              { requiredKeys: ['port', 'nodePort'] },
            ),
            { minLength: 1, maxLength: 3 },
          ),
        }),
      }),
      mappingValue,
      fc.oneof(fc.constantFrom('uid', 'type', 'ports', 'port', 'nodePort', 'protocol', 'metadata', 'spec'), mappingKey),
    ),
  },
);

test('kubernetes: forwardsOfService never throws on any JSON value, and returns only valid forwards owned by the UID', () => {
  fc.assert(
    fc.property(kubeService, fc.constantFrom('0.0.0.0', '127.0.0.1'), (svc, hostIp) => {
      const result = noThrow('forwardsOfService', svc, () => forwardsOfService(svc as KubeService, hostIp));
      assertParsed(result, 'forwardsOfService');
      for (const f of result.forwards) {
        assert.equal(f.owner, result.owner);
        assert.equal(f.hostIp, hostIp);
      }
      if (result.forwards.length > 0) assert.ok(typeof result.owner === 'string' && result.owner !== '');
    }),
    runs(1500),
  );
});

// ---------------------------------------------------------------------------------------------
// vtunnel messages on the host side

function checkMapping(parsed: ParsedPortMapping, input: unknown): void {
  if (!parsed.ok) {
    assert.ok(typeof parsed.error === 'string' && parsed.error !== '', `an empty error for ${JSON.stringify(input)}`);
    return;
  }
  assert.equal(typeof parsed.mapping.remove, 'boolean');
  for (const b of parsed.mapping.bindings) {
    const show = JSON.stringify(b);
    assert.ok(['tcp', 'udp'].includes(b.protocol), show);
    assert.ok(isValidPort(b.hostPort) && isValidPort(b.containerPort), show);
    assert.ok(isIP(b.hostIp) !== 0, show);
  }
  for (const a of parsed.mapping.connectAddrs) {
    assert.equal(isIP(a.ip), a.family, JSON.stringify(a));
    assert.ok(Number.isInteger(a.prefix) && a.prefix >= 0 && a.prefix <= (a.family === 4 ? 32 : 128), JSON.stringify(a));
  }
}

const parseChecked = (input: string | Uint8Array): void => {
  checkMapping(noThrow('parsePortMapping', typeof input === 'string' ? input : [...input], () => parsePortMapping(input)), input);
};

const wireExample =
  '{"remove":false,"ports":{"80/tcp":[{"HostIp":"0.0.0.0","HostPort":"8080"}],"53/udp":[{"HostIp":"::1","HostPort":"5353"}]},"connectAddrs":[{"network":"ip+net","addr":"172.26.112.5/20"},{"network":"ip+net","addr":"fe80::1/64"}]}\n';

/** Messages of the contract's shape with any part wrong: extra or missing keys, wrong types. */
const nearMessage: fc.Arbitrary<unknown> = fc.record(
  {
    remove: fc.oneof(fc.boolean(), mappingValue),
    ports: fc.oneof(
      fc.dictionary(
        fc.oneof(portSpec, fc.constantFrom('80/tcp', '53/udp', '65536/tcp', '080/tcp')),
        fc.oneof(fc.array(fc.oneof(fc.record({ HostIp: mappingValue, HostPort: fc.oneof(hostPortText, mappingValue) }, { requiredKeys: [] }), anyJson), { maxLength: 3 }), anyJson),
        { maxKeys: 3 },
      ),
      anyJson,
    ),
    connectAddrs: fc.oneof(
      fc.array(fc.oneof(fc.record({ network: fc.oneof(fc.constant('ip+net'), mappingValue), addr: fc.oneof(fc.constantFrom('10.0.0.1/24', '::1/128', 'fe80::1/64', '10.0.0.1', '10.0.0.1/33', '::1/129', '/8', '1.2.3.4/08'), mappingValue) }, { requiredKeys: [] }), anyJson), { maxLength: 3 }),
      anyJson,
    ),
    [prototypeKeys[0]]: mappingValue,
  },
  { requiredKeys: [] },
);

test('vtunnel: parsePortMapping never throws on arbitrary text, bytes or JSON; it returns an error value instead', () => {
  fc.assert(
    fc.property(fc.oneof(anyText, fc.uint8Array({ maxLength: 200 }), anyJson.map((v) => `${JSON.stringify(v)}\n`)), parseChecked),
    runs(1200),
  );
});

const wireForward: fc.Arbitrary<Forward> = fc
  .record({
    protocol: fc.constantFrom('tcp' as const, 'udp' as const),
    hostIp: fc.oneof(fc.ipV4(), fc.ipV6(), fc.constantFrom('0.0.0.0', '::', '127.0.0.1', '::1')),
    hostPort: fc.integer({ min: 1, max: 65535 }),
    containerPort: fc.option(fc.integer({ min: 1, max: 65535 }), { nil: undefined }),
  })
  .map(({ containerPort, ...rest }) => ({ ...rest, ...(containerPort !== undefined && { containerPort }), source: 'docker', owner: 'c1' }));
const connectAddr: fc.Arbitrary<ConnectAddr> = fc.oneof(
  fc.tuple(fc.ipV4(), fc.integer({ min: 0, max: 32 })).map(([ip, p]) => ({ network: 'ip+net' as const, addr: `${ip}/${String(p)}` })),
  fc.tuple(fc.ipV6(), fc.integer({ min: 0, max: 128 })).map(([ip, p]) => ({ network: 'ip+net' as const, addr: `${ip}/${String(p)}` })),
);
/** What the agent sends, parsed back into a value, to be damaged. */
const validMessage: fc.Arbitrary<unknown> = fc
  .tuple(fc.boolean(), fc.array(wireForward, { minLength: 1, maxLength: 4 }), fc.array(connectAddr, { minLength: 1, maxLength: 2 }))
  .map(([remove, forwards, addrs]) => JSON.parse(encodePortMapping(remove, forwards, addrs)) as unknown);
const wireValue = fc.oneof(
  mappingValue,
  fc.constantFrom('10.0.0.1/33', '::1/129', '10.0.0.1', '/8', '1.2.3.4/08', 'fe80::1%eth0/64', '[::1]/128', 'ip', 'ip+net', '080', '65536', '0', '80/tcp', '80/sctp'),
);
const wireKey = fc.oneof(fc.constantFrom('remove', 'ports', 'connectAddrs', 'HostIp', 'HostPort', 'hostIp', 'network', 'addr', '80/tcp', '0/tcp', '65536/udp', '80/TCP'), mappingKey);

test('vtunnel: ... nor on near-valid messages or damaged real ones', () => {
  fc.assert(
    fc.property(damaged(validMessage, wireValue, wireKey), (message) => {
      parseChecked(JSON.stringify(message));
    }),
    runs(1500),
  );
  fc.assert(
    fc.property(nearMessage, fc.boolean(), (message, newline) => {
      parseChecked(`${JSON.stringify(message)}${newline ? '\n' : ''}`);
    }),
    runs(1200),
  );
  fc.assert(
    fc.property(mutated(wireExample, jsonAlphabet, 6), (text) => {
      parseChecked(text);
      parseChecked(Buffer.from(text));
    }),
    runs(900),
  );
});

test('vtunnel: whatever the agent encodes, the host side reads back exactly', () => {
  fc.assert(
    fc.property(fc.boolean(), fc.array(wireForward, { maxLength: 8 }), fc.array(connectAddr, { maxLength: 3 }), (remove, forwards, addrs) => {
      const parsed = parsePortMapping(encodePortMapping(remove, forwards, addrs));
      assert.ok(parsed.ok, parsed.ok ? '' : parsed.error);
      assert.equal(parsed.mapping.remove, remove);
      const sent = forwards.map((f) => `${f.protocol}/${String(canonicalIp(f.hostIp))}:${String(f.hostPort)}<-${wirePortKey(f)}`).sort();
      const read = parsed.mapping.bindings.map((b) => `${b.protocol}/${b.hostIp}:${String(b.hostPort)}<-${String(b.containerPort)}/${b.protocol}`).sort();
      assert.deepEqual(read, sent);
      assert.deepEqual(
        parsed.mapping.connectAddrs.map((a) => `${a.ip}/${String(a.prefix)}`),
        addrs.map((a) => {
          const [ip = '', prefix = ''] = a.addr.split('/');
          return `${String(canonicalIp(ip))}/${prefix}`;
        }),
      );
    }),
    runs(900),
  );
});

test('vtunnel: a state split into parts keeps every forward, in order, and no part is over the bound', () => {
  fc.assert(
    fc.property(
      fc.boolean(),
      fc.array(wireForward, { maxLength: 60 }),
      fc.array(connectAddr, { maxLength: 3 }),
      fc.integer({ min: 150, max: 3000 }),
      (remove, forwards, addrs, maxBytes) => {
        const parts = splitPortMapping(remove, forwards, addrs, maxBytes);
        assert.deepEqual(parts.flatMap((part) => part.forwards), forwards);
        for (const part of parts) {
          assert.equal(part.line, encodePortMapping(remove, part.forwards, addrs));
          assert.ok(part.forwards.length > 0);
          if (part.forwards.length > 1) assert.ok(Buffer.byteLength(part.line) <= maxBytes, `${String(Buffer.byteLength(part.line))} > ${String(maxBytes)}`);
          const parsed = parsePortMapping(part.line, Math.max(maxBytes, Buffer.byteLength(part.line)));
          assert.ok(parsed.ok, parsed.ok ? '' : parsed.error);
        }
      },
    ),
    runs(600),
  );
});
