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

test('privileged mode: engines and Kubernetes over the vtunnel, iptables (on by default) to placeholder listeners', () => {
  const result = wire(config('-docker', '-containerd', '-kubernetes', '-privilegedService'), nothing);
  assert.ok(result.ok);
  assert.deepEqual(result.wiring.sources, ['docker', 'containerd', 'iptables', 'kubernetes']);
  assert.deepEqual(result.wiring.routes, [
    { sink: 'vtunnel', sources: ['docker', 'containerd', 'kubernetes'] },
    { sink: 'listeners', sources: ['iptables'] },
  ]);
});

test('-iptables=false turns the default backend off', () => {
  const result = wire(config('-docker', '-privilegedService', '-iptables=false'), nothing);
  assert.ok(result.ok);
  assert.deepEqual(result.wiring.routes, [{ sink: 'vtunnel', sources: ['docker'] }]);
});

test('-hostSwitchURL is refused until its sink exists', () => {
  const result = wire(config('-docker', '-hostSwitchURL', 'http://127.0.0.1:9/'), nothing);
  assert.ok(!result.ok);
  assert.match(result.error, /^-hostSwitchURL: the host-switch sink/);
});

test('listener mode: iptables and Kubernetes to listeners, engine ports need none; a terminal also gets the table', () => {
  const quiet = wire(config('-docker', '-kubernetes'), nothing);
  assert.ok(quiet.ok);
  assert.deepEqual(quiet.wiring.routes, [{ sink: 'listeners', sources: ['iptables', 'kubernetes'] }]);
  const onTty = wire(config('-docker', '-iptables=false'), { ...nothing, tty: true });
  assert.ok(onTty.ok);
  assert.deepEqual(onTty.wiring.routes, [{ sink: 'table', sources: ['docker'] }]);
});

test('no arguments: auto-detects what exists and shows the table', () => {
  const result = wire(config(), { ...nothing, dockerSocket: true, iptablesCommand: true });
  assert.ok(result.ok);
  assert.deepEqual(result.wiring.sources, ['docker', 'iptables']);
  assert.deepEqual(result.wiring.routes, [
    { sink: 'listeners', sources: ['iptables'] },
    { sink: 'table', sources: ['docker', 'iptables'] },
  ]);
  assert.match(result.wiring.notices.join('\n'), /auto-detected backends: docker, iptables/);
});

test('no arguments and no engine: waits for Docker rather than doing nothing', () => {
  const result = wire(config(), nothing);
  assert.ok(result.ok);
  assert.deepEqual(result.wiring.sources, ['docker']);
  assert.match(result.wiring.notices.join('\n'), /waiting for the Docker socket/);
});
