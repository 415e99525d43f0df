/**
 * The artifacts of `npm run package` as a VM distribution runs them (docs/install.md):
 * - the single executable in a root file system that holds nothing but it and the shared
 *   libraries `ldd` names (no Node anywhere), started with chroot: it forwards a real Docker
 *   container's port to a vtunnel peer, prints its version, and on SIGTERM withdraws and exits 0;
 * - the bundle, run by plain `node` from a folder without node_modules, the same way; without the
 *   addon beside it, a vsock:// address is refused in one line and nothing else changes.
 */
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import { copyFile, link, mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { promisify } from 'node:util';
import { before } from 'node:test';
import { addon, buildArtifacts, bundle, packageVersion, sea } from './distArtifacts.js';
import { busyboxImage, dockerNeeds, docker, engineTest, ensureBusyboxImage, ensureDockerd, findBinary, TestContainers, waitFor } from './engines.js';
import { startReceiver, type Receiver } from './vtunnelReceiver.js';

before(buildArtifacts, { timeout: 300_000 });

const dockerSocket = '/run/docker.sock';
const chroot = findBinary('chroot') ?? '/usr/sbin/chroot';

interface Started {
  readonly output: () => string;
  readonly exited: Promise<number | null>;
  readonly kill: () => void;
}

function start(command: string, args: readonly string[], env: NodeJS.ProcessEnv, cwd?: string): Started {
  const child = spawn(command, args, { env, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  const exited = new Promise<number | null>((resolve) => {
    child.once('exit', (code) => {
      resolve(code);
    });
  });
  return { output: () => output, exited, kill: () => child.kill('SIGTERM') };
}

async function runToEnd(command: string, args: readonly string[], env: NodeJS.ProcessEnv, cwd?: string): Promise<{ code: number | null; output: string }> {
  const run = start(command, args, env, cwd);
  const code = await run.exited;
  return { code, output: run.output() };
}

/**
 * `command args` is an agent: started with `-docker -privilegedService` towards a fresh vtunnel
 * peer, it must forward a new container's port, then on SIGTERM withdraw it and exit 0.
 */
async function forwardsAndWithdraws(command: string, args: readonly string[], env: NodeJS.ProcessEnv, cwd?: string): Promise<void> {
  const containers = new TestContainers();
  let receiver: Receiver | undefined;
  let agent: Started | undefined;
  try {
    receiver = await startReceiver();
    const peer = receiver;
    agent = start(command, [...args, '-docker', '-privilegedService', '-iptables=false', '-procnet=false', '-vtunnelAddr', `127.0.0.1:${String(peer.port)}`], env, cwd);
    const running = agent;
    await waitFor(() => running.output().includes('connected to the Docker engine'), 20_000, () => `the agent to reach dockerd:\n${running.output()}`);
    const id = await containers.run('-p', '127.0.0.1::80', busyboxImage, 'httpd', '-f', '-p', '80');
    const hostPort = (await docker('port', id, '80/tcp')).trim().split(':').pop() ?? '';
    const key = `tcp/127.0.0.1:${hostPort}`;
    await waitFor(() => peer.view.has(key), 15_000, () => `${key} at the vtunnel peer (it has ${[...peer.view.keys()].join(', ')}):\n${running.output()}`);
    running.kill();
    assert.equal(await running.exited, 0, running.output());
    assert.equal(peer.view.has(key), false, `${key} was not withdrawn before the exit`);
    assert.deepEqual(peer.violations, []);
  } finally {
    agent?.kill();
    await agent?.exited;
    await receiver?.close();
    await containers.removeAll();
  }
}

/** A root holding only the executable, the libraries ldd names, an empty /tmp and dockerd's socket (a hard link). */
async function emptyRoot(executable: string): Promise<string> {
  // In /run, beside dockerd's socket: a hard link cannot cross file systems.
  const root = await mkdtemp(join(dirname(dockerSocket), 'portstream-sea-'));
  await copyFile(executable, join(root, 'portstream'));
  const { stdout } = await promisify(execFile)('ldd', [executable]);
  for (const library of stdout.match(/\/\S+/g) ?? []) {
    await mkdir(join(root, dirname(library)), { recursive: true });
    await copyFile(library, join(root, library));
  }
  await mkdir(join(root, 'tmp'), { mode: 0o1777 });
  await link(dockerSocket, join(root, 'docker.sock'));
  return root;
}

async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries.filter((e) => !e.isDirectory()).map((e) => relative(dir, join(e.parentPath, e.name))).sort();
}

engineTest('the single executable, alone in a root with no Node: --version, forwards a container, SIGTERM withdraws and exits 0', { needs: [...dockerNeeds, 'root'], timeout: 120_000 }, async (t) => {
  await ensureDockerd();
  await ensureBusyboxImage();
  const root = await emptyRoot(sea);
  t.after(() => rm(root, { recursive: true, force: true }));
  const files = await filesUnder(root);
  assert.ok(!files.some((f) => /(^|\/)(node|node_modules|.*\.js|.*\.mjs|.*\.node)$/.test(f)), `the root holds more than it should: ${files.join(', ')}`);

  const env = { DOCKER_HOST: 'unix:///docker.sock' };
  const version = await runToEnd(chroot, [root, '/portstream', '--version'], env);
  assert.deepEqual(version, { code: 0, output: `portstream ${packageVersion}\n` });
  await forwardsAndWithdraws(chroot, [root, '/portstream'], env);
});

engineTest('the bundle, run by plain node in a folder without node_modules: --version, forwards a container, SIGTERM withdraws and exits 0', { needs: [...dockerNeeds], timeout: 120_000 }, async (t) => {
  await ensureDockerd();
  await ensureBusyboxImage();
  const dir = await mkdtemp(join(tmpdir(), 'portstream-bundle-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  await copyFile(bundle, join(dir, 'portstream.mjs'));
  const env = { PATH: '/usr/bin:/bin', DOCKER_HOST: `unix://${dockerSocket}` };
  const version = await runToEnd(process.execPath, ['portstream.mjs', '-version'], env, dir);
  assert.deepEqual(version, { code: 0, output: `portstream ${packageVersion}\n` });
  await forwardsAndWithdraws(process.execPath, ['portstream.mjs'], env, dir);

  // No addon beside the bundle: a vsock:// address is refused in one line naming what is missing.
  const vsockArgs = ['portstream.mjs', '-kubernetes', '-kubeconfig', '/nonexistent/k3s.yaml', '-iptables=false', '-privilegedService', '-vtunnelAddr', 'vsock://3:5000'];
  const refused = await runToEnd(process.execPath, vsockArgs, env, dir);
  assert.equal(refused.code, 2, refused.output);
  assert.match(refused.output, /^portstream: AF_VSOCK support is not available \(no portstream\.node for linux-x64[^\n]*\); [^\n]*TCP vtunnel peer \(HOST:PORT\)\n$/);

  // With the addon beside it, the same command line runs (the addon loads; nothing is sent).
  await copyFile(addon, join(dir, 'portstream.node'));
  const withAddon = start(process.execPath, vsockArgs, env, dir);
  await waitFor(() => withAddon.output().includes('portstream agent running'), 20_000, () => `the agent to run with the addon:\n${withAddon.output()}`);
  withAddon.kill();
  assert.equal(await withAddon.exited, 0, withAddon.output());
  assert.doesNotMatch(withAddon.output(), /AF_VSOCK support/);
});

engineTest('the libraries embedded compressed load in both artifacts: gRPC reaches containerd, prom-client serves /metrics, dockerode speaks to a TCP DOCKER_HOST', { needs: ['root', 'containerd'], timeout: 120_000 }, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'portstream-embedded-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  await copyFile(bundle, join(dir, 'portstream.mjs'));
  const env = { PATH: '/usr/bin:/bin:/usr/sbin:/sbin' };
  for (const [name, command, args] of [
    ['bundle', process.execPath, ['portstream.mjs']],
    ['single executable', sea, []],
  ] as const) {
    const status = 19_870 + (name === 'bundle' ? 0 : 1);
    const agent = start(command, [...args, '-containerd', '-iptables=false', '-procnet=false', '-privilegedService', '-vtunnelAddr', '127.0.0.1:9', '-statusAddr', `127.0.0.1:${String(status)}`], env, dir);
    try {
      await waitFor(() => agent.output().includes('connected to containerd'), 20_000, () => `${name}: gRPC to containerd:\n${agent.output()}`);
      const metrics = await (await fetch(`http://127.0.0.1:${String(status)}/metrics`)).text();
      assert.match(metrics, /^portstream_source_forwards\{source="containerd"\} \d+$/m, `${name}: /metrics`);
    } finally {
      agent.kill();
      await agent.exited;
    }
    // Nothing listens on port 1: the refusal comes from dockerode's own request, so dockerode loaded.
    const tcp = start(command, [...args, '-docker', '-iptables=false', '-procnet=false', '-privilegedService', '-vtunnelAddr', '127.0.0.1:9'], { ...env, DOCKER_HOST: 'tcp://127.0.0.1:1' }, dir);
    try {
      await waitFor(() => tcp.output().includes('cannot reach the Docker engine (connect ECONNREFUSED 127.0.0.1:1)'), 20_000, () => `${name}: dockerode on TCP:\n${tcp.output()}`);
    } finally {
      tcp.kill();
      await tcp.exited;
    }
  }
});
