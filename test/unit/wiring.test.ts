import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseConfig, type AgentConfig } from '../../src/config.js';
import { decideRoutes, type Detected } from '../../src/wiring.js';

const nothing: Detected = { dockerSocket: false, containerdSocket: false, kubeconfig: false, iptablesCommand: false, tty: false };

function config(...argv: string[]): AgentConfig {
  const parsed = parseConfig(argv);
  assert.ok(parsed.ok, 'test arguments must parse');
  return parsed.config;
}

test('privileged mode: engines and Kubernetes over the vtunnel, iptables (on by default) to placeholder listeners', () => {
  const wiring = decideRoutes(config('-docker', '-containerd', '-kubernetes', '-privilegedService'), nothing);
  assert.deepEqual(wiring.sources, ['docker', 'containerd', 'iptables', 'kubernetes']);
  assert.deepEqual(wiring.routes, [
    { sink: 'vtunnel', sources: ['docker', 'containerd', 'kubernetes'] },
    { sink: 'listeners', sources: ['iptables'] },
    { sink: 'loopback', sources: ['docker', 'containerd', 'kubernetes'] },
  ]);
});

test('-iptables=false turns the default backend off', () => {
  assert.deepEqual(decideRoutes(config('-docker', '-privilegedService', '-iptables=false'), nothing).routes, [
    { sink: 'vtunnel', sources: ['docker'] },
    { sink: 'loopback', sources: ['docker'] },
  ]);
});

test('-hostSwitchURL sends every source to the expose API, and wins over -privilegedService', () => {
  const wiring = decideRoutes(config('-docker', '-kubernetes', '-privilegedService', '-hostSwitchURL', 'http://127.0.0.1:9/'), nothing);
  assert.deepEqual(wiring.routes, [
    { sink: 'hostswitch', sources: ['docker', 'iptables', 'kubernetes'] },
    { sink: 'loopback', sources: ['docker', 'iptables', 'kubernetes'] },
  ]);
});

test('listener mode: iptables and Kubernetes to listeners, engine ports need none; a terminal also gets the table', () => {
  assert.deepEqual(decideRoutes(config('-docker', '-kubernetes'), nothing).routes, [{ sink: 'listeners', sources: ['iptables', 'kubernetes'] }]);
  assert.deepEqual(decideRoutes(config('-docker', '-iptables=false'), { ...nothing, tty: true }).routes, [{ sink: 'table', sources: ['docker'] }]);
  // without a terminal, Docker alone has nowhere to go: said, and no route
  const alone = decideRoutes(config('-docker', '-iptables=false'), nothing);
  assert.deepEqual(alone.routes, []);
  assert.deepEqual(alone.notices, [
    "docker: nothing to forward in listener mode (engine ports are already listened on in the VM by the engine's own proxy); not watched",
  ]);
});

test('no arguments: auto-detects what exists, publishes through listeners and shows the table', () => {
  const wiring = decideRoutes(config(), { ...nothing, dockerSocket: true, iptablesCommand: true });
  assert.deepEqual(wiring.sources, ['docker', 'iptables']);
  assert.deepEqual(wiring.routes, [
    { sink: 'listeners', sources: ['iptables'] },
    { sink: 'table', sources: ['docker', 'iptables'] },
  ]);
  assert.match(wiring.notices.join('\n'), /auto-detected backends: docker, iptables/);
});

test('no arguments and no engine: waits for Docker rather than doing nothing', () => {
  const wiring = decideRoutes(config(), nothing);
  assert.deepEqual(wiring.sources, ['docker']);
  assert.match(wiring.notices.join('\n'), /waiting for the Docker socket/);
});

test('loopback forwarders only beside the vtunnel and host-switch sinks: listener mode makes none (WSL forwards 127.0.0.1 itself)', () => {
  for (const argv of [[], ['-docker', '-kubernetes'], ['-docker', '-containerd', '-kubernetes', '-iptables']]) {
    const wiring = decideRoutes(config(...argv), { ...nothing, dockerSocket: true, iptablesCommand: true, tty: true });
    assert.deepEqual(wiring.routes.filter((r) => r.sink === 'loopback'), [], argv.join(' '));
  }
});
