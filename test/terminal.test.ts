/**
 * The agent on a real terminal (tmux), as a person sees it: the live table stays whole, with the
 * log lines drawn below it rather than over it; `-h` and `-version` print what they should.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { PassThrough } from 'node:stream';
import { NEVER } from 'rxjs';
import { runCli } from '../src/cli.js';
import { findBinary, requireOrSkip, waitFor } from './engines.js';
import { packageVersion } from './distArtifacts.js';

const exec = promisify(execFile);
const repo = new URL('..', import.meta.url).pathname;
const tmux = findBinary('tmux');
const gate = requireOrSkip('tmux', tmux !== undefined, 'apt-get install tmux');

test('on a terminal, log lines are drawn below the live table, never over it', { skip: gate.status === 'skip' ? gate.reason : false, timeout: 60_000 }, async (t) => {
  if (gate.status === 'fail') throw new Error(gate.reason);
  const socket = `portstream-test-${String(process.pid)}`;
  const tm = (...args: string[]): Promise<{ stdout: string }> => exec(tmux!, ['-L', socket, ...args]);
  t.after(() => tm('kill-server').catch(() => undefined));
  const command = [process.execPath, '--import', 'tsx', 'src/main.ts', '-kubernetes', '-kubeconfig', '/nonexistent/portstream-test/k3s.yaml', '-iptables=false'];
  // `; sleep` keeps the pane open after the agent exits, to read what it left on the screen.
  await tm('new-session', '-d', '-x', '160', '-y', '30', '-c', repo, `${command.map((a) => `'${a}'`).join(' ')}; sleep 30`);
  const screen = async (): Promise<string> => (await tm('capture-pane', '-p')).stdout;

  await waitFor(async () => (await screen()).includes('waiting for the kubeconfig'), 30_000, async () => `the log pane:\n${await screen()}`);
  const lines = (await screen()).split('\n');
  assert.match(lines[0] ?? '', /^PROTO +HOST IP +HOST PORT +TO PORT +SOURCE +OWNER$/, lines.join('\n'));
  const summary = lines.indexOf('0 ports forwarded');
  assert.ok(summary > 0, lines.join('\n'));
  const logs = lines.slice(summary + 1).filter((l) => l.trim() !== '');
  assert.ok(logs.some((l) => /^\d\d:\d\d:\d\d INFO {2}agent: portstream agent running$/.test(l)), logs.join('\n'));
  assert.ok(logs.some((l) => /^\d\d:\d\d:\d\d INFO {2}kubernetes: waiting for the kubeconfig/.test(l)), logs.join('\n'));
  assert.ok(!lines.some((l) => l.includes('{"level"')), `raw JSON on the screen:\n${lines.join('\n')}`);

  // Ctrl-C: the table sink ends, and the last lines go to the terminal as usual.
  await tm('send-keys', 'C-c');
  await waitFor(async () => (await screen()).includes('withdrew'), 15_000, async () => `the withdrawal line:\n${await screen()}`);
});

function captured(): { stream: PassThrough; text: () => string } {
  const stream = new PassThrough();
  let text = '';
  stream.setEncoding('utf8').on('data', (chunk: string) => (text += chunk));
  return { stream, text: () => text };
}

test('-version and --version print the version and exit 0; -h says what no arguments does', async () => {
  for (const flag of ['-version', '--version']) {
    const out = captured();
    assert.equal(await runCli([flag], { stdout: out.stream, stderr: out.stream, env: {}, stop$: NEVER }), 0);
    assert.equal(out.text(), `portstream ${packageVersion}\n`);
  }
  const help = captured();
  assert.equal(await runCli(['-h'], { stdout: help.stream, stderr: help.stream, env: {}, stop$: NEVER }), 0);
  const text = help.text();
  for (const expected of [/With no arguments at all/, /portstream host \[flags\]/, /portstream status/, /PORTSTREAM_LOG_LEVEL/, /DOCKER_HOST/, /^Examples:$/m, /^ {2}-vtunnelAddr string$/m]) {
    assert.match(text, expected);
  }
});
