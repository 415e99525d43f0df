import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { agentFlags, agentUsage, parseConfig, parseVtunnelAddr, type AgentConfig } from '../../src/config.js';

function config(argv: string[]): AgentConfig {
  const r = parseConfig(argv);
  if (!r.ok) return assert.fail(`expected ${JSON.stringify(argv)} to parse, got ${JSON.stringify(r)}`);
  return r.config;
}

function error(argv: string[]): string {
  const r = parseConfig(argv);
  if (r.ok || r.error === undefined) return assert.fail(`expected ${JSON.stringify(argv)} to fail, got ${JSON.stringify(r)}`);
  assert.doesNotMatch(r.error, /\n/, 'errors are one line');
  return r.error;
}

const defaults = {
  docker: false,
  containerd: false,
  containerdSock: '/run/k3s/containerd/containerd.sock',
  iptables: true,
  kubernetes: false,
  kubeconfig: '/etc/rancher/k3s/k3s.yaml',
  k8sServiceListenerAddr: '0.0.0.0',
  privilegedService: false,
  vtunnelAddr: '127.0.0.1:3040',
  connectInterface: 'eth0',
  hostSwitchURL: undefined,
  tapInterfaceIp: '192.168.127.2',
  adminInstall: false,
  k8sAPIPort: 6443,
  debug: false,
};

/** The config without the two fields that describe the command line rather than the agent. */
function settings(c: AgentConfig): Record<string, unknown> {
  return Object.fromEntries(Object.entries(c).filter(([key]) => key !== 'explicit' && key !== 'autoDetect'));
}

describe('parseConfig: defaults', () => {
  test('an empty command line: every default from docs/flags.md, and auto-detect', () => {
    const c = config([]);
    assert.deepEqual(settings(c), defaults);
    assert.equal(c.autoDetect, true);
    assert.equal(c.explicit.size, 0);
  });

  test('any argument turns auto-detect off, even one that changes nothing', () => {
    const c = config(['-debug=false']);
    assert.deepEqual(settings(c), defaults);
    assert.equal(c.autoDetect, false);
    assert.deepEqual([...c.explicit], ['debug']);
    assert.equal(config(['--']).autoDetect, false);
  });

  test('the flag table is exactly the contract, in its order', () => {
    assert.deepEqual(
      agentFlags.map((d) => [d.name, d.kind, d.default]),
      [
        ['docker', 'bool', false],
        ['containerd', 'bool', false],
        ['containerdSock', 'string', '/run/k3s/containerd/containerd.sock'],
        ['iptables', 'bool', true],
        ['kubernetes', 'bool', false],
        ['kubeconfig', 'string', '/etc/rancher/k3s/k3s.yaml'],
        ['k8sServiceListenerAddr', 'string', '0.0.0.0'],
        ['privilegedService', 'bool', false],
        ['vtunnelAddr', 'string', '127.0.0.1:3040'],
        ['connectInterface', 'string', 'eth0'],
        ['hostSwitchURL', 'string', ''],
        ['tap-interface-ip', 'string', '192.168.127.2'],
        ['adminInstall', 'bool', false],
        ['k8sAPIPort', 'int', 6443],
        ['debug', 'bool', false],
      ],
    );
  });
});

describe('parseConfig: every flag sets its field', () => {
  const cases: [argv: string[], field: keyof typeof defaults, value: unknown][] = [
    [['-docker'], 'docker', true],
    [['-containerd'], 'containerd', true],
    [['-containerdSock', '/run/containerd/containerd.sock'], 'containerdSock', '/run/containerd/containerd.sock'],
    [['-iptables=false'], 'iptables', false],
    [['-kubernetes'], 'kubernetes', true],
    [['-kubeconfig=/root/.kube/config'], 'kubeconfig', '/root/.kube/config'],
    [['-k8sServiceListenerAddr', '127.0.0.1'], 'k8sServiceListenerAddr', '127.0.0.1'],
    [['-privilegedService'], 'privilegedService', true],
    [['-vtunnelAddr', '10.0.0.2:4000'], 'vtunnelAddr', '10.0.0.2:4000'],
    [['-connectInterface', 'wlan0'], 'connectInterface', 'wlan0'],
    [['-hostSwitchURL', 'http://192.168.127.1:80'], 'hostSwitchURL', 'http://192.168.127.1:80'],
    [['-tap-interface-ip', '192.168.127.9'], 'tapInterfaceIp', '192.168.127.9'],
    [['-adminInstall'], 'adminInstall', true],
    [['-k8sAPIPort', '16443'], 'k8sAPIPort', 16443],
    [['-debug'], 'debug', true],
  ];
  for (const [argv, field, value] of cases) {
    test(`${argv.join(' ')} → ${field}`, () => {
      const c = config(argv);
      assert.deepEqual(settings(c), { ...defaults, [field]: value });
      assert.deepEqual([...c.explicit], [argv[0]?.replace(/^-+/, '').replace(/=.*/, '')]);
      assert.equal(c.autoDetect, false);
    });
  }

  test('the Rancher Desktop command line parses as the Go agent would', () => {
    const c = config([
      '-docker', '-kubernetes', '-privilegedService', '-k8sServiceListenerAddr', '127.0.0.1',
      '--vtunnelAddr=127.0.0.1:3040', '-adminInstall=false', '-k8sAPIPort', '6443', '-debug=true',
    ]);
    assert.equal(c.docker, true);
    assert.equal(c.kubernetes, true);
    assert.equal(c.privilegedService, true);
    assert.equal(c.k8sServiceListenerAddr, '127.0.0.1');
    assert.equal(c.adminInstall, false);
    assert.equal(c.debug, true);
    assert.equal(c.iptables, true);
    assert.deepEqual(
      [...c.explicit].sort(),
      ['adminInstall', 'debug', 'docker', 'k8sAPIPort', 'k8sServiceListenerAddr', 'kubernetes', 'privilegedService', 'vtunnelAddr'],
    );
  });

  test('-hostSwitchURL= (empty) means unset, as in the Go agent, but counts as given', () => {
    const c = config(['-hostSwitchURL=']);
    assert.equal(c.hostSwitchURL, undefined);
    assert.ok(c.explicit.has('hostSwitchURL'));
  });

  test('k8sAPIPort takes Go integer syntax', () => {
    assert.equal(config(['-k8sAPIPort=0x1A0B']).k8sAPIPort, 6667);
    assert.equal(config(['-k8sAPIPort=65535']).k8sAPIPort, 65535);
    assert.equal(config(['-k8sAPIPort=1']).k8sAPIPort, 1);
  });
});

describe('parseConfig: flag syntax errors', () => {
  test('unknown flag', () => {
    assert.equal(error(['-foo']), 'flag provided but not defined: -foo');
    assert.equal(error(['-tapInterfaceIp=1.2.3.4']), 'flag provided but not defined: -tapInterfaceIp');
  });

  test('bad int', () => {
    assert.equal(error(['-k8sAPIPort', 'x']), 'invalid value "x" for flag -k8sAPIPort: parse error');
  });

  test('bad bool', () => {
    assert.equal(error(['-iptables=no']), 'invalid boolean value "no" for -iptables: parse error');
  });

  test('missing argument', () => {
    assert.equal(error(['-vtunnelAddr']), 'flag needs an argument: -vtunnelAddr');
  });

  test('help is not an error', () => {
    assert.deepEqual(parseConfig(['-h']), { ok: false, help: true });
    assert.deepEqual(parseConfig(['--help']), { ok: false, help: true });
  });
});

describe('parseConfig: positional arguments are errors', () => {
  test('a stray word', () => {
    assert.equal(error(['foo']), 'unexpected argument "foo": portstream takes only flags');
    assert.equal(error(['-docker', 'foo', '-debug']), 'unexpected argument "foo": portstream takes only flags');
  });

  test('-bool false (Go leaves false behind) names the fix', () => {
    assert.equal(error(['-iptables', 'false']), 'unexpected argument "false": a bool flag takes its value as -iptables=false');
    assert.equal(error(['--debug', '0']), 'unexpected argument "0": a bool flag takes its value as -debug=0');
  });

  test('anything after -- is positional too', () => {
    assert.equal(error(['--', '-docker']), 'unexpected argument "-docker": portstream takes only flags');
    assert.equal(error(['-']), 'unexpected argument "-": portstream takes only flags');
  });

  test('host after a flag says where host belongs', () => {
    assert.equal(error(['-debug', 'host']), 'unexpected argument "host": the host subcommand must come before any flag');
  });
});

describe('parseConfig: validation', () => {
  test('-k8sServiceListenerAddr is 0.0.0.0 or 127.0.0.1 only', () => {
    assert.equal(config(['-k8sServiceListenerAddr=0.0.0.0']).k8sServiceListenerAddr, '0.0.0.0');
    for (const bad of ['192.168.1.1', '::', 'localhost', '', '127.0.0.01']) {
      assert.equal(
        error([`-k8sServiceListenerAddr=${bad}`]),
        `invalid value ${JSON.stringify(bad)} for flag -k8sServiceListenerAddr: must be 0.0.0.0 or 127.0.0.1`,
      );
    }
  });

  test('-k8sAPIPort is 1..65535', () => {
    for (const bad of ['0', '65536', '-1', '0x10000']) {
      assert.equal(
        error([`-k8sAPIPort=${bad}`]),
        `invalid value "${String(Number(bad))}" for flag -k8sAPIPort: must be a port number 1..65535`,
      );
    }
  });

  test('-vtunnelAddr accepts HOST:PORT, [IPv6]:PORT and vsock://CID:PORT', () => {
    for (const good of ['127.0.0.1:3040', '[::1]:3040', '[fe80::1%eth0]:1', 'localhost:1', 'host.docker.internal:65535', 'vsock://2:17381']) {
      assert.equal(config(['-vtunnelAddr', good]).vtunnelAddr, good);
    }
  });

  test('-vtunnelAddr errors say what is wrong', () => {
    const bad: [string, string][] = [
      ['127.0.0.1', 'must be HOST:PORT or vsock://CID:PORT'],
      ['127.0.0.1:', 'must be HOST:PORT or vsock://CID:PORT'],
      ['127.0.0.1:http', 'must be HOST:PORT or vsock://CID:PORT'],
      [':3040', '"" is not a host name or IPv4 address'],
      ['::1:3040', 'an IPv6 host must be in brackets, as [::1]:3040'],
      ['[1.2.3.4]:3040', '"1.2.3.4" is not an IPv6 address'],
      ['[::1]3040', 'must be HOST:PORT or vsock://CID:PORT'],
      ['bad_host!:3040', '"bad_host!" is not a host name or IPv4 address'],
      ['127.0.0.1:0', 'port must be 1..65535'],
      ['127.0.0.1:65536', 'port must be 1..65535'],
      ['vsock://2', 'must be vsock://CID:PORT'],
      ['vsock://host:1', 'must be vsock://CID:PORT'],
      ['vsock://4294967295:1', 'vsock CID must be below 4294967295'],
      ['vsock://2:0', 'vsock port must be 1..4294967294'],
      ['vsock://2:4294967295', 'vsock port must be 1..4294967294'],
    ];
    for (const [addr, why] of bad) {
      assert.equal(error(['-vtunnelAddr', addr]), `invalid value ${JSON.stringify(addr)} for flag -vtunnelAddr: ${why}`);
    }
  });

  test('-hostSwitchURL must be an http(s) URL', () => {
    assert.equal(config(['-hostSwitchURL=https://host-switch.local/api']).hostSwitchURL, 'https://host-switch.local/api');
    for (const bad of ['192.168.127.1:80', 'ftp://h/', 'unix:///run/sock', 'http://', 'not a url']) {
      assert.equal(
        error([`-hostSwitchURL=${bad}`]),
        `invalid value ${JSON.stringify(bad)} for flag -hostSwitchURL: must be an http:// or https:// URL`,
      );
    }
  });

  test('-tap-interface-ip must be IPv4', () => {
    for (const bad of ['::1', '192.168.127', '192.168.127.256', 'tap0', '']) {
      assert.equal(error([`-tap-interface-ip=${bad}`]), `invalid value ${JSON.stringify(bad)} for flag -tap-interface-ip: must be an IPv4 address`);
    }
  });

  test('with several bad values, the first in table order is reported', () => {
    assert.match(error(['-k8sAPIPort=0', '-k8sServiceListenerAddr=1.1.1.1']), /-k8sServiceListenerAddr/);
  });
});

describe('parseVtunnelAddr', () => {
  test('splits each form', () => {
    assert.deepEqual(parseVtunnelAddr('127.0.0.1:3040'), { kind: 'tcp', host: '127.0.0.1', port: 3040 });
    assert.deepEqual(parseVtunnelAddr('[::1]:3040'), { kind: 'tcp', host: '::1', port: 3040 });
    assert.deepEqual(parseVtunnelAddr('peer:7'), { kind: 'tcp', host: 'peer', port: 7 });
    assert.deepEqual(parseVtunnelAddr('vsock://2:17381'), { kind: 'vsock', cid: 2, port: 17381 });
  });
});

describe('agentUsage', () => {
  test('lists every flag with its default, Go style', () => {
    const text = agentUsage();
    assert.ok(text.startsWith('Usage of portstream:\n'));
    for (const d of agentFlags) assert.match(text, new RegExp(`^  -${d.name}( |$)`, 'm'), d.name);
    assert.match(text, /^ {2}-iptables\n {4}\t.*\(default true\)$/m);
    assert.match(text, /^ {2}-k8sAPIPort int\n {4}\t.*\(default 6443\)$/m);
    assert.match(text, /^ {2}-vtunnelAddr string\n {4}\t.*vsock:\/\/CID:PORT.*\(default "127\.0\.0\.1:3040"\)$/m);
    assert.doesNotMatch(text, /-hostSwitchURL URL\n.*\(default/);
  });
});
