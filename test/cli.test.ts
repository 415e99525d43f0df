/**
 * `runCli`, the agent's command line, in this process: how it starts and stops. A backend that
 * needs no engine here (Kubernetes, waiting for a kubeconfig that does not exist) keeps it from
 * touching anything real.
 */
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { test } from 'node:test';
import { of, timer, type Observable } from 'rxjs';
import { runCli } from '../src/cli.js';

function io(stop$: Observable<unknown>) {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  stderr.resume();
  stdout.resume();
  return { io: { stdout, stderr, env: { PATH: '' }, stop$ } };
}

const waitingForKubeconfig = ['-kubernetes', '-kubeconfig', '/nonexistent/portstream-test/k3s.yaml', '-iptables=false'];

test('a stop asked for before the agent runs (a signal during start-up) ends it with 0 all the same', { timeout: 10_000 }, async () => {
  // what main.ts hands over when a signal came while the backends were still loading
  const { io: streams } = io(of('SIGTERM'));
  assert.equal(await runCli(waitingForKubeconfig, streams), 0);
});

test('flags that leave nothing to forward (Docker alone in listener mode): idle until stopped, then 0, not an exit at once', { timeout: 10_000 }, async () => {
  const { io: streams } = io(timer(300));
  const started = Date.now();
  assert.equal(await runCli(['-docker', '-iptables=false'], streams), 0);
  assert.ok(Date.now() - started >= 290, `returned after ${String(Date.now() - started)} ms, before the stop`);
});
