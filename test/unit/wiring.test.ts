import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseConfig, type AgentConfig } from '../../src/config.js';
import { wire, type Detected } from '../../src/wiring.js';

const nothing: Detected = { dockerSocket: false, containerdSocket: false, kubeconfig: false, iptablesCommand: false, tty: false };

function config(...argv: string[]): AgentConfig {
  const parsed = parseConfig(argv);
  assert.ok(parsed.ok, 'test arguments must parse');
  return parsed.config;
}

test('privileged mode sends engine ports over the vtunnel; the defaulted iptables is dropped with a notice', () => {
  const result = wire(config('-docker', '-privilegedService'), nothing);
  assert.ok(result.ok);
  assert.deepEqual(result.wiring.sources, ['docker']);
  assert.deepEqual(result.wiring.routes, [{ sink: 'vtunnel', sources: ['docker'] }]);
  assert.match(result.wiring.notices.join('\n'), /iptables backend is not implemented yet; running without it/);
});

test('a backend asked for explicitly but missing from this build is an error naming the flag', () => {
  for (const flag of ['-containerd', '-iptables']) {
    const result = wire(config('-docker', flag), nothing);
    assert.ok(!result.ok);
    assert.match(result.error, new RegExp(`^${flag}: .* is not implemented yet`));
  }
});

test('-hostSwitchURL is refused until its sink exists', () => {
  const result = wire(config('-docker', '-hostSwitchURL', 'http://127.0.0.1:9/'), nothing);
  assert.ok(!result.ok);
  assert.match(result.error, /^-hostSwitchURL: the host-switch sink/);
});

test('listener mode needs no sink for engine ports; a terminal still gets the table', () => {
  const quiet = wire(config('-docker'), nothing);
  assert.ok(quiet.ok);
  assert.deepEqual(quiet.wiring.routes, []);
  const onTty = wire(config('-docker'), { ...nothing, tty: true });
  assert.ok(onTty.ok);
  assert.deepEqual(onTty.wiring.routes, [{ sink: 'table', sources: ['docker'] }]);
});

test('no arguments: auto-detects what exists and shows the table', () => {
  const result = wire(config(), { ...nothing, dockerSocket: true, iptablesCommand: true });
  assert.ok(result.ok);
  assert.deepEqual(result.wiring.sources, ['docker']);
  assert.deepEqual(result.wiring.routes, [{ sink: 'table', sources: ['docker'] }]);
  assert.match(result.wiring.notices.join('\n'), /auto-detected backends: docker/);
});

test('no arguments and no engine: waits for Docker rather than doing nothing', () => {
  const result = wire(config(), nothing);
  assert.ok(result.ok);
  assert.deepEqual(result.wiring.sources, ['docker']);
  assert.match(result.wiring.notices.join('\n'), /waiting for the Docker socket/);
});
