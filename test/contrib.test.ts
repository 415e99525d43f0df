/**
 * The service files in contrib/ (docs/install.md), checked as far as this machine can: the
 * systemd unit by `systemd-analyze verify`, the OpenRC script by the POSIX shells that run it
 * (dash, busybox sh) and by sourcing it the way openrc-run does, so that the GUESTAGENT_*
 * variables Rancher Desktop writes become exactly the flags portstream parses.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { parseConfig } from '../src/config.js';
import { findBinary, requireOrSkip } from './engines.js';

const exec = promisify(execFile);
const repo = new URL('..', import.meta.url).pathname;
const openrcScript = join(repo, 'contrib/openrc/portstream');
const unit = join(repo, 'contrib/systemd/portstream.service');

const analyze = findBinary('systemd-analyze');
const verifyGate = requireOrSkip('systemd-analyze', analyze !== undefined, 'apt-get install systemd');
test('systemd: the unit verifies with no warning', { skip: verifyGate.status === 'skip' ? verifyGate.reason : false }, async (t) => {
  if (verifyGate.status === 'fail') throw new Error(verifyGate.reason);
  // verify insists that ExecStart exists: point it at a binary that does.
  const dir = await mkdtemp(join(tmpdir(), 'portstream-unit-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const copy = join(dir, 'portstream.service');
  await writeFile(copy, (await readFile(unit, 'utf8')).replaceAll('/usr/local/bin/portstream', process.execPath));
  const { stdout, stderr } = await exec(analyze!, ['verify', copy]);
  assert.equal(stdout + stderr, '');
  // and it does complain about a mistake, so the silence above means something
  await writeFile(copy, (await readFile(unit, 'utf8')).replaceAll('/usr/local/bin/portstream', process.execPath).replace('RestartSec=', 'RestartSecs='));
  const broken = await exec(analyze!, ['verify', copy]);
  assert.match(broken.stdout + broken.stderr, /Unknown key 'RestartSecs'/);
});

test('OpenRC: the script parses in dash and busybox sh', async () => {
  const shells = [findBinary('dash'), findBinary('busybox')].filter((s) => s !== undefined);
  assert.ok(shells.length > 0, 'neither dash nor busybox is installed');
  for (const shell of shells) await exec(shell, shell.endsWith('busybox') ? ['sh', '-n', openrcScript] : ['-n', openrcScript]);
});

/** Sources the script in sh as openrc-run does (with RC_SVCNAME set), returning what it sets. */
async function sourced(vars: Record<string, string>): Promise<{ args: string[]; log: string; respawn: string }> {
  const dash = findBinary('dash') ?? '/bin/sh';
  const { stdout } = await exec(dash, ['-c', '. "$0"; printf "%s\\n%s\\n%s/%s/%s\\n" "$command_args" "$output_log" "$supervisor" "$respawn_delay" "$respawn_max"', openrcScript], {
    env: { PATH: '/usr/bin:/bin', RC_SVCNAME: 'portstream', ...vars },
  });
  const [args = '', log = '', respawn = ''] = stdout.split('\n');
  return { args: args.split(/\s+/).filter((a) => a !== ''), log, respawn };
}

test('OpenRC: the GUESTAGENT_* variables Rancher Desktop writes become the flags, and portstream accepts them', async () => {
  const wsl = await sourced({
    GUESTAGENT_ADMIN_INSTALL: 'false',
    GUESTAGENT_KUBERNETES: 'true',
    GUESTAGENT_CONTAINERD: 'false',
    GUESTAGENT_DOCKER: 'true',
    GUESTAGENT_DEBUG: 'false',
    GUESTAGENT_K8S_SVC_ADDR: '127.0.0.1',
    GUESTAGENT_PRIVILEGED_SERVICE: 'true',
    LOG_DIR: '/mnt/c/logs',
  });
  assert.equal(wsl.log, '/mnt/c/logs/portstream.log');
  assert.equal(wsl.respawn, 'supervise-daemon/5/0');
  const parsed = parseConfig(wsl.args);
  assert.ok(parsed.ok, `${wsl.args.join(' ')}: ${parsed.ok ? '' : (parsed.error ?? '')}`);
  const c = parsed.config;
  assert.deepEqual(
    [c.docker, c.containerd, c.kubernetes, c.iptables, c.privilegedService, c.adminInstall, c.debug, c.k8sServiceListenerAddr],
    [true, false, true, true, true, false, false, '127.0.0.1'],
  );

  // Nothing set: no flags at all (portstream then detects), and the default log file.
  const bare = await sourced({});
  assert.deepEqual(bare.args, []);
  assert.equal(bare.log, '/var/log/portstream.log');

  // portstream's own additions
  const extra = await sourced({ GUESTAGENT_VTUNNEL_ADDR: 'vsock://2:3040', PORTSTREAM_ARGS: '-connectInterface eth1' });
  assert.deepEqual(extra.args, ['-vtunnelAddr=vsock://2:3040', '-connectInterface', 'eth1']);
});
