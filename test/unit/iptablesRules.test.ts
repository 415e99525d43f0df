import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import {
  cniPortmapRules,
  maxPortsPerRule,
  parseIptablesSave,
  parsePortRange,
  parseToDestination,
  tokenize,
  unreadableTable,
  type CountingRule,
} from '../../streams/iptablesRules.js';
import type { Forward } from '../../src/model.js';

/**
 * Fixtures are real output of iptables-save / ip6tables-save v1.8.9 (nf_tables) on the Debian 12
 * VM this was written on: dockerd's own chains (a container run with
 * `-p 28090:80 -p 127.0.0.1:28091:80 -p 28092:53/udp -p 28093-28094:81-82`) and CNI portmap-style
 * chains made with iptables commands for the purpose, then removed.
 */
const fixture = (name: string): string => readFileSync(new URL(`fixtures/iptables/${name}`, import.meta.url), 'utf8');

const dn1 = 'CNI-DN-portstreamfix01';
const f = (hostPort: number, rule: string, opts: { protocol?: 'tcp' | 'udp'; hostIp?: string; containerPort?: number; chain?: string; ipv6?: boolean } = {}): Forward => {
  const owner = `${opts.chain ?? dn1} ${rule}${opts.ipv6 === true ? ' (ip6tables)' : ''}`;
  return {
    protocol: opts.protocol ?? 'tcp',
    hostIp: opts.hostIp ?? (opts.ipv6 === true ? '::' : '0.0.0.0'),
    hostPort,
    ...(opts.containerPort !== undefined && { containerPort: opts.containerPort }),
    source: 'iptables',
    owner,
  };
};

const tcp28080 = '-p tcp -m tcp --dport 28080 -j DNAT --to-destination 10.88.0.5:80';
const lo28443 = '-d 127.0.0.1/32 -p tcp -m tcp --dport 28443 -j DNAT --to-destination 10.88.0.5:443';
const range = '-p tcp -m tcp --dport 28100:28102 -j DNAT --to-destination 10.88.0.5';
const multiport = '-p udp -m multiport --dports 28053,28054:28055 -j DNAT --to-destination 10.88.0.5:53';
const notD = '! -d 10.0.0.1/32 -p udp -m udp --dport 28056 -j DNAT --to-destination 10.88.0.5-10.88.0.6:100-200';
const quoted = '-p tcp -m tcp --dport 28058 -m comment --comment "it\'s a \\"quoted\\" comment" -j DNAT --to-destination 10.88.0.5:80';
const based = '-p tcp -m tcp --dport 28059 -j DNAT --to-destination 10.88.0.5:1000-2000/3000';
const portOnly = '-p tcp -m tcp --dport 28061 -j DNAT --to-destination :61';

const cni01: Forward[] = [
  f(28080, tcp28080, { containerPort: 80 }),
  f(28443, lo28443, { hostIp: '127.0.0.1', containerPort: 443 }),
  f(28100, range, { containerPort: 28100 }),
  f(28101, range, { containerPort: 28101 }),
  f(28102, range, { containerPort: 28102 }),
  f(28053, multiport, { protocol: 'udp', containerPort: 53 }),
  f(28054, multiport, { protocol: 'udp', containerPort: 53 }),
  f(28055, multiport, { protocol: 'udp', containerPort: 53 }),
  // ! -d: every address but one, which only the wildcard covers; a port range target has no single port
  f(28056, notD, { protocol: 'udp' }),
  f(28058, quoted, { containerPort: 80 }),
  // 1000-2000/3000 shifts: 28059 − 3000 = 25059, mod 1001 = 34 → 1034
  f(28059, based, { containerPort: 1034 }),
  f(28061, portOnly, { containerPort: 61 }),
];

test('real iptables-save -t nat with Docker and CNI chains: the CNI DNAT rules count, Docker\'s do not', () => {
  const { forwards, problems } = parseIptablesSave(fixture('iptables-save-nat-docker-cni.txt'), 'ipv4');
  assert.deepEqual(forwards, cni01);
  assert.ok(!forwards.some((x) => x.hostPort >= 28090 && x.hostPort <= 28094), 'the DOCKER chain is the Docker backend\'s business');
  assert.deepEqual(problems, [
    `line 22 (CNI portmap ${dn1}): ! 28057 matches every other port; skipped`,
    `line 25 (CNI portmap ${dn1}): protocol sctp is not forwarded (tcp and udp are); skipped`,
    `line 26 (CNI portmap ${dn1}): unrecognised destination port "0:100"; skipped`,
    `line 28 (CNI portmap ${dn1}): -d 10.1.0.0/16 names a subnet, not one address to listen on; skipped`,
  ]);
});

test('real ip6tables-save -t nat: /128 gives the host IP, none gives ::, bracketed and bare targets', () => {
  const { forwards, problems } = parseIptablesSave(fixture('ip6tables-save-nat-cni.txt'), 'ipv6');
  const dn2 = { chain: 'CNI-DN-portstreamfix02', ipv6: true };
  assert.deepEqual(forwards, [
    f(28080, '-p tcp -m tcp --dport 28080 -j DNAT --to-destination [fd00:88::5]:80', { ...dn2, containerPort: 80 }),
    f(28081, '-d ::1/128 -p tcp -m tcp --dport 28081 -j DNAT --to-destination [fd00:88::5]:81', { ...dn2, hostIp: '::1', containerPort: 81 }),
    f(28082, '-d fd00::1/128 -p udp -m udp --dport 28082 -j DNAT --to-destination fd00:88::5', { ...dn2, protocol: 'udp', hostIp: 'fd00::1', containerPort: 28082 }),
  ]);
  assert.deepEqual(problems, []);
});

test('real full iptables-save (filter and nat): CNI portmap with SETMARK rules and an orphan chain', () => {
  const { forwards, problems } = parseIptablesSave(fixture('iptables-save-all-portmap.txt'), 'ipv4');
  const dn3 = { chain: 'CNI-DN-portstreamfix03' };
  assert.deepEqual(forwards.filter((x) => x.owner.startsWith('CNI-DN-portstreamfix03')), [
    f(28200, '-p tcp -m tcp --dport 28200 -j DNAT --to-destination 10.88.0.7:80', { ...dn3, containerPort: 80 }),
    f(28201, '-d 127.0.0.1/32 -p tcp -m tcp --dport 28201 -j DNAT --to-destination 10.88.0.7:443', { ...dn3, hostIp: '127.0.0.1', containerPort: 443 }),
    f(28202, '-p udp -m udp --dport 28202 -j DNAT --to-destination 10.88.0.7:53', { ...dn3, protocol: 'udp', containerPort: 53 }),
  ]);
  assert.deepEqual(forwards.filter((x) => x.owner.startsWith(dn1)), cni01);
  assert.ok(!forwards.some((x) => x.hostPort === 28203), 'CNI-DN-portstreamfix04 is not reached from CNI-HOSTPORT-DNAT');
  assert.equal(forwards.length, cni01.length + 3, 'the SETMARK rules and the filter table add nothing');
  assert.equal(problems.length, 4);
});

test('owners are stable across re-reads and differ between the families', () => {
  const a = parseIptablesSave(fixture('iptables-save-nat-docker-cni.txt'), 'ipv4').forwards.map((x) => x.owner);
  const b = parseIptablesSave(fixture('iptables-save-nat-docker-cni.txt').replace(/^# .*$/gm, '# Generated later'), 'ipv4').forwards.map((x) => x.owner);
  assert.deepEqual(a, b);
  const rule = '-p tcp -m tcp --dport 80 -j DNAT --to-destination :8080';
  const text = ['*nat', ':CNI-HOSTPORT-DNAT - [0:0]', ':CNI-DN-a - [0:0]', '-A CNI-HOSTPORT-DNAT -j CNI-DN-a', `-A CNI-DN-a ${rule}`, 'COMMIT'].join('\n');
  const v4 = parseIptablesSave(text, 'ipv4').forwards[0];
  const v6 = parseIptablesSave(text, 'ipv6').forwards[0];
  assert.equal(v4?.owner, `CNI-DN-a ${rule}`);
  assert.equal(v6?.owner, `CNI-DN-a ${rule} (ip6tables)`);
  assert.equal(v6.hostIp, '::');
});

/** A nat table with one CNI portmap chain holding `rules`. */
function nat(...rules: string[]): string {
  return ['*nat', ':CNI-HOSTPORT-DNAT - [0:0]', ':CNI-DN-x - [0:0]', '-A CNI-HOSTPORT-DNAT -j CNI-DN-x', ...rules.map((r) => `-A CNI-DN-x ${r}`), 'COMMIT', ''].join('\n');
}
const ports = (text: string, family: 'ipv4' | 'ipv6' = 'ipv4'): string[] =>
  parseIptablesSave(text, family).forwards.map((x) => `${x.protocol}/${x.hostIp}:${String(x.hostPort)}${x.containerPort === undefined ? '' : `->${String(x.containerPort)}`}`);

test('-p: names and numbers; other protocols and a negated -p are problems', () => {
  assert.deepEqual(ports(nat('-p 6 --dport 1 -j DNAT --to-destination 10.0.0.1:2', '-p 17 --dport 3 -j DNAT --to-destination 10.0.0.1')), ['tcp/0.0.0.0:1->2', 'udp/0.0.0.0:3->3']);
  const { forwards, problems } = parseIptablesSave(nat('! -p tcp --dport 1 -j DNAT --to-destination 10.0.0.1', '-p icmp -j DNAT --to-destination 10.0.0.1', '--dport 2 -j DNAT --to-destination 10.0.0.1'), 'ipv4');
  assert.deepEqual(forwards, []);
  assert.equal(problems.length, 3);
  assert.match(problems[0]!, /-p ! tcp matches every other protocol/);
  assert.match(problems[1]!, /protocol icmp is not forwarded/);
  assert.match(problems[2]!, /without -p/);
});

test('-d: /32 and a bare address name one address, /0 is the wildcard, a subnet or the wrong family is a problem', () => {
  assert.deepEqual(ports(nat('-d 192.168.5.2/32 -p tcp --dport 1 -j DNAT --to-destination 10.0.0.1', '-d 127.0.0.1 -p tcp --dport 2 -j DNAT --to-destination 10.0.0.1', '-d 0.0.0.0/0 -p tcp --dport 3 -j DNAT --to-destination 10.0.0.1')), [
    'tcp/192.168.5.2:1->1',
    'tcp/127.0.0.1:2->2',
    'tcp/0.0.0.0:3->3',
  ]);
  assert.deepEqual(ports(nat('-d FD00::1/128 -p tcp --dport 1 -j DNAT --to-destination [fd00::2]:3'), 'ipv6'), ['tcp/fd00::1:1->3']);
  const { problems } = parseIptablesSave(nat('-d 10.0.0.0/8 -p tcp --dport 1 -j DNAT --to-destination 10.0.0.1', '-d ::1/128 -p tcp --dport 1 -j DNAT --to-destination 10.0.0.1'), 'ipv4');
  assert.equal(problems.length, 2);
  assert.match(problems[0]!, /names a subnet/);
  assert.match(problems[1]!, /unrecognised -d "::1\/128" for ipv4/);
});

test('--dport forms: one port, A:B, multiport lists, the long names; bad and negated ports are problems', () => {
  assert.deepEqual(ports(nat(
    '-p tcp -m tcp --destination-port 5:6 -j DNAT --to-destination 10.0.0.1',
    '-p udp -m multiport --destination-ports 7,9:10 -j DNAT --to-destination 10.0.0.1:53',
    '-p tcp -m multiport --ports 11 -j DNAT --to-destination 10.0.0.1',
  )), ['tcp/0.0.0.0:5->5', 'tcp/0.0.0.0:6->6', 'udp/0.0.0.0:7->53', 'udp/0.0.0.0:9->53', 'udp/0.0.0.0:10->53', 'tcp/0.0.0.0:11->11']);
  const { forwards, problems } = parseIptablesSave(nat(
    '-p tcp -m tcp --dport 70000 -j DNAT --to-destination 10.0.0.1',
    '-p tcp -m tcp --dport 9:8 -j DNAT --to-destination 10.0.0.1',
    '-p tcp -m multiport ! --dports 1,2 -j DNAT --to-destination 10.0.0.1',
    '-p tcp -j DNAT --to-destination 10.0.0.1',
    `-p tcp -m tcp --dport 1:${String(maxPortsPerRule + 1)} -j DNAT --to-destination 10.0.0.1`,
    // the cap is per rule, not per range of a list
    `-p tcp -m multiport --dports 1:${String(maxPortsPerRule)},${String(maxPortsPerRule + 1)}:${String(maxPortsPerRule + 2)} -j DNAT --to-destination 10.0.0.1`,
    '-p tcp -m tcp --dport 80 -m multiport --dports 81,82 -j DNAT --to-destination 10.0.0.1',
  ), 'ipv4');
  assert.deepEqual(forwards, []);
  assert.deepEqual(problems.map((p) => p.replace(/^line \d+ \(CNI portmap CNI-DN-x\): /, '')), [
    'unrecognised destination port "70000"; skipped',
    'unrecognised destination port "9:8"; skipped',
    '! 1,2 matches every other port; skipped',
    'a DNAT rule without a destination port matches every port; skipped',
    `destination ports 1:${String(maxPortsPerRule + 1)} are more than ${String(maxPortsPerRule)}; skipped`,
    `destination ports 1:${String(maxPortsPerRule)},${String(maxPortsPerRule + 1)}:${String(maxPortsPerRule + 2)} are more than ${String(maxPortsPerRule)}; skipped`,
    'its port matches leave no port in common; skipped',
  ]);
  // Two port matches must both hold: the ports are those they share.
  assert.deepEqual(ports(nat('-p tcp -m tcp --dport 80 -m multiport --dports 80,81 -j DNAT --to-destination 10.0.0.1')), ['tcp/0.0.0.0:80->80']);
  // A comment is one argument, even one that looks like an option (iptables-save leaves it unquoted).
  assert.deepEqual(ports(nat('-m comment --comment --dport -p tcp -m tcp --dport 90 -j DNAT --to-destination 10.0.0.1')), ['tcp/0.0.0.0:90->90']);
  assert.deepEqual(parsePortRange('8000:8002'), { first: 8000, last: 8002 });
  assert.equal(parsePortRange('0'), undefined);
  assert.equal(parsePortRange('1-2'), undefined, 'iptables writes ranges with a colon');
});

test('DNAT --to-destination forms', () => {
  assert.deepEqual(parseToDestination('10.0.0.1', 'ipv4'), { addresses: ['10.0.0.1', '10.0.0.1'] });
  assert.deepEqual(parseToDestination('10.0.0.1:80', 'ipv4'), { addresses: ['10.0.0.1', '10.0.0.1'], ports: { first: 80, last: 80 } });
  assert.deepEqual(parseToDestination('10.0.0.1-10.0.0.9:80-90', 'ipv4'), { addresses: ['10.0.0.1', '10.0.0.9'], ports: { first: 80, last: 90 } });
  assert.deepEqual(parseToDestination('10.0.0.1:1000-2000/3000', 'ipv4'), { addresses: ['10.0.0.1', '10.0.0.1'], ports: { first: 1000, last: 2000, base: 3000 } });
  assert.deepEqual(parseToDestination(':61', 'ipv4'), { ports: { first: 61, last: 61 } });
  assert.deepEqual(parseToDestination('[fd00::5]:80', 'ipv6'), { addresses: ['fd00::5', 'fd00::5'], ports: { first: 80, last: 80 } });
  assert.deepEqual(parseToDestination('[fd00::5]', 'ipv6'), { addresses: ['fd00::5', 'fd00::5'] });
  assert.deepEqual(parseToDestination('fd00::5', 'ipv6'), { addresses: ['fd00::5', 'fd00::5'] });
  assert.deepEqual(parseToDestination('[fd00::5]-[fd00::9]:80', 'ipv6'), undefined);
  assert.deepEqual(parseToDestination('fd00::5-fd00::9', 'ipv6'), { addresses: ['fd00::5', 'fd00::9'] });
  for (const bad of ['10.0.0.1:', '10.0.0.1:0', '10.0.0.1:90-80', 'nope', '10.0.0.1:80:90', '']) {
    assert.equal(parseToDestination(bad, 'ipv4'), undefined, bad);
  }
  // a target it cannot read still publishes the port, with a problem and no container port
  const { forwards, problems } = parseIptablesSave(nat('-p tcp --dport 5 -j DNAT --to-destination what'), 'ipv4');
  assert.deepEqual(forwards.map((x) => [x.hostPort, x.containerPort]), [[5, undefined]]);
  assert.match(problems[0]!, /unrecognised --to-destination "what"; published without a container port/);
});

test('tokenize follows iptables-restore: double quotes anywhere in a word, backslash escapes inside them', () => {
  assert.deepEqual(tokenize('-m comment --comment "dnat name: \\"cbr0\\" id: \\"abc\\\'s \\\\\\\\ q\\"" -j X'), [
    '-m', 'comment', '--comment', 'dnat name: "cbr0" id: "abc\'s \\\\ q"', '-j', 'X',
  ]);
  assert.deepEqual(tokenize('a"b c"d  e\t"" \\x'), ['ab cd', 'e', '', '\\x']);
  assert.equal(tokenize('--comment "open'), 'unterminated quote');
  assert.equal(tokenize('--comment "ends in an escape\\"'), 'unterminated quote');
  // the real line from the fixture
  const line = fixture('iptables-save-nat-docker-cni.txt').split('\n').find((l) => l.startsWith('-A CNI-HOSTPORT-DNAT'))!;
  const tokens = tokenize(line);
  assert.ok(Array.isArray(tokens));
  assert.equal(tokens[tokens.indexOf('--comment') + 1], 'dnat name: "cbr0" id: "abc\'s \\\\ q"');
});

test('quoting: a quoted word that looks like an option is an argument, and a comment with -j inside does not jump', () => {
  const text = nat('-p tcp -m comment --comment "-j DNAT --dport 9" --dport 5 -j DNAT --to-destination 10.0.0.1');
  assert.deepEqual(ports(text), ['tcp/0.0.0.0:5->5']);
  // broken quoting in a counting chain: one problem, the other rules still count
  const broken = parseIptablesSave(nat('-p tcp --dport 5 -m comment --comment "open -j DNAT --to-destination 10.0.0.1', '-p tcp --dport 6 -j DNAT --to-destination 10.0.0.1'), 'ipv4');
  assert.deepEqual(broken.forwards.map((x) => x.hostPort), [6]);
  assert.deepEqual(broken.problems, ['line 5 (CNI-DN-x): unterminated quote']);
});

test('reachability: -j and -g from CNI-HOSTPORT-DNAT count; chains nothing enters, and other targets, do not', () => {
  const text = [
    '*nat',
    ':CNI-HOSTPORT-DNAT - [0:0]',
    ':CNI-DN-a - [0:0]',
    ':CNI-DN-b - [0:0]',
    ':CNI-DN-c - [0:0]',
    '-A CNI-HOSTPORT-DNAT -p tcp -m multiport --dports 1 -j CNI-DN-a',
    '-A CNI-HOSTPORT-DNAT -p tcp -m multiport --dports 2 -g CNI-DN-b',
    '-A CNI-DN-a -s 10.88.0.0/16 -p tcp -m tcp --dport 1 -j CNI-HOSTPORT-SETMARK',
    '-A CNI-DN-a -p tcp -m tcp --dport 1 -j DNAT --to-destination 10.88.0.2:80',
    '-A CNI-DN-b -p tcp -m tcp --dport 2 -j DNAT --to-destination 10.88.0.3:80',
    '-A CNI-DN-b -p tcp -m tcp --dport 4 -j RETURN',
    '-A CNI-DN-c -p tcp -m tcp --dport 3 -j DNAT --to-destination 10.88.0.4:80',
    'COMMIT',
  ].join('\n');
  assert.deepEqual(ports(text), ['tcp/0.0.0.0:1->80', 'tcp/0.0.0.0:2->80']);
});

test('the counting rules are data: a different table says what counts', () => {
  const dockerToo: CountingRule[] = [...cniPortmapRules, { name: 'Docker', table: 'nat', chain: 'DOCKER', target: 'DNAT' }];
  const { forwards } = parseIptablesSave(fixture('iptables-save-nat-docker-cni.txt'), 'ipv4', dockerToo);
  assert.deepEqual(
    forwards.filter((x) => x.owner.startsWith('DOCKER ')).map((x) => `${x.protocol}/${x.hostIp}:${String(x.hostPort)}->${String(x.containerPort)}`),
    ['tcp/0.0.0.0:28094->82', 'tcp/0.0.0.0:28093->81', 'tcp/127.0.0.1:28091->80', 'tcp/0.0.0.0:28090->80', 'udp/0.0.0.0:28092->53'],
  );
  assert.deepEqual(parseIptablesSave(fixture('iptables-save-nat-docker-cni.txt'), 'ipv4', []).forwards, []);
});

test('tables, declarations, comments: odd lines are one problem each (a table not understood, one for all of it) and the rest still counts', () => {
  const text = [
    '# a comment',
    '-A CNI-DN-x -p tcp --dport 1 -j DNAT --to-destination 10.0.0.1',
    '*nat',
    ':CNI-HOSTPORT-DNAT - [0:0]',
    ':CNI-DN-x - [0:0]',
    ':broken declaration with words',
    'garbage here',
    '-A CNI-HOSTPORT-DNAT -j CNI-DN-x',
    '-A CNI-DN-x -p tcp --dport 2 -j DNAT --to-destination 10.0.0.1',
    'COMMIT',
    '*Not-A-Table',
    '-A CNI-DN-x -p tcp --dport 3 -j DNAT --to-destination 10.0.0.1',
    ':CNI-DN-y - [0:0]',
    'COMMIT',
    'stray after the commit',
    '',
  ].join('\n');
  const { forwards, problems } = parseIptablesSave(text, 'ipv4');
  assert.deepEqual(forwards.map((x) => x.hostPort), [2]);
  assert.deepEqual(problems, [
    'line 2: "-A CNI-DN-x -p tcp --dport 1 -j DNAT --to-destination 10.0.0.1" outside a table',
    'line 6: unrecognised chain declaration ":broken declaration with words"',
    'line 7: unrecognised line "garbage here"',
    'line 11: unrecognised table "*Not-A-Table"; skipped to its COMMIT',
    'line 15: "stray after the commit" outside a table',
  ]);
});

test('a nat table iptables-save cannot show (rules made with nft) is unreadable, not empty; legacy tables beside it are one problem', () => {
  // What iptables-nft 1.8.9 prints, exit 0, when `ip nat` also holds a rule made with nft (seen here).
  const incompatible = "# Table `nat' is incompatible, use 'nft' tool.\n";
  assert.match(unreadableTable(incompatible) ?? '', /^the nat table also holds rules made with nft that iptables-save cannot show \(Table `nat' is incompatible/);
  assert.equal(unreadableTable(incompatible, 'filter'), undefined);
  assert.equal(unreadableTable(nat('-p tcp --dport 1 -j DNAT --to-destination 10.0.0.1')), undefined);
  const legacy = `# Warning: iptables-legacy tables present, use iptables-legacy-save to see them\n${nat('-p tcp --dport 1 -j DNAT --to-destination 10.0.0.1')}`;
  const parsed = parseIptablesSave(legacy, 'ipv4');
  assert.deepEqual(parsed.forwards.map((f) => f.hostPort), [1]);
  assert.deepEqual(parsed.problems, ['iptables-legacy tables are present as well; rules there are not read (iptables-legacy-save shows them)']);
});

test('the parser never throws, whatever it is given', () => {
  const real = fixture('iptables-save-all-portmap.txt');
  let seed = 42;
  const random = (): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const alphabet = ' \t\n"\\!-:*#/[]0123456789abcdefACDNTjpdg.';
  for (let i = 0; i < 500; i++) {
    // real text with random damage, and plain noise
    const chars = Array.from(real); // the fixture is ASCII
    for (let k = 0; k < 20; k++) chars[Math.floor(random() * chars.length)] = alphabet[Math.floor(random() * alphabet.length)]!;
    const noise = Array.from({ length: 200 }, () => alphabet[Math.floor(random() * alphabet.length)]).join('');
    for (const text of [chars.join(''), noise]) {
      for (const family of ['ipv4', 'ipv6'] as const) {
        const parsed = parseIptablesSave(text, family);
        assert.ok(Array.isArray(parsed.forwards) && Array.isArray(parsed.problems));
      }
    }
  }
  assert.deepEqual(parseIptablesSave('', 'ipv4'), { forwards: [], problems: [] });
});
