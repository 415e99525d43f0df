/**
 * The npm package as a consumer installs it (docs/install.md, "The native addon"): `npm pack`,
 * then install the tarball into a fresh project on a machine with no C compiler and no Node
 * headers, and once with `--ignore-scripts`. Both must succeed and import without the addon's
 * help; the shipped prebuilt addon must load; and where none fits, a vsock:// address must be
 * refused in one clear line while everything else goes on working. No engines are touched.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, test } from 'node:test';
import { promisify } from 'node:util';
import { repoRoot } from './distArtifacts.js';
import { findBinary } from './engines.js';

const exec = promisify(execFile);
let work = '';
let tarball = '';
let noCompilerEnv: NodeJS.ProcessEnv = {};

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'portstream-install-'));
  const { stdout } = await exec('npm', ['pack', '--silent', '--pack-destination', work], { cwd: repoRoot, maxBuffer: 16 * 1024 * 1024, timeout: 300_000 });
  tarball = join(work, stdout.trim().split('\n').pop() ?? '');
  // A PATH with node, npm and sh (npm runs scripts with it) and nothing else: no cc, gcc, make or
  // python for node-gyp to find.
  const bin = join(work, 'bin');
  await mkdir(bin);
  for (const tool of ['node', 'npm', 'sh']) await symlink(findBinary(tool) ?? tool, join(bin, tool));
  noCompilerEnv = { HOME: process.env['HOME'] ?? '/root', PATH: bin, CC: '/bin/false', CXX: '/bin/false', npm_config_nodedir: join(work, 'no-headers') };
}, { timeout: 300_000 });

async function freshProject(name: string): Promise<string> {
  const dir = join(work, name);
  await mkdir(dir);
  await writeFile(join(dir, 'package.json'), JSON.stringify({ name, private: true, type: 'module' }));
  return dir;
}

function install(dir: string, ...extra: string[]): Promise<{ stdout: string; stderr: string }> {
  return exec('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', ...extra, tarball], { cwd: dir, env: noCompilerEnv, timeout: 300_000 });
}

/** In the consumer project: a vsock-free import that works, and whether the addon loads (its error line if not). */
async function probe(dir: string): Promise<{ table: string; vsock: string }> {
  const script = `
    const m = await import('portstream');
    const { renderTable } = m;
    let vsock = 'loaded';
    try { m.vsockSender(3, 5000, 100); } catch (e) { vsock = e.message; }
    console.log(JSON.stringify({ table: renderTable(new Map()), vsock }));`;
  const { stdout } = await exec(process.execPath, ['--input-type=module', '-e', script], { cwd: dir, env: noCompilerEnv });
  return JSON.parse(stdout) as { table: string; vsock: string };
}

test.after(() => rm(work, { recursive: true, force: true }));

test('the packed tarball ships the prebuilt addon and not the build artifacts', async () => {
  const { stdout } = await exec('tar', ['-tzf', tarball]);
  const files = stdout.split('\n');
  assert.ok(files.includes(`package/prebuilds/${process.platform}-${process.arch}/portstream.node`), files.join('\n'));
  assert.ok(files.includes('package/native/install.mjs'));
  assert.ok(!files.some((f) => /^package\/(build\/|dist\/portstream(\.mjs|\.node)?$)/.test(f)), files.filter((f) => f.includes('dist/portstream') || f.includes('build/')).join('\n'));
});

test('npm install with no compiler and no Node headers succeeds; the prebuilt addon loads; without it, vsock:// is one clear line and the rest works', { timeout: 300_000 }, async () => {
  const dir = await freshProject('no-compiler');
  await install(dir);
  const pkg = join(dir, 'node_modules', 'portstream');
  assert.ok(!existsSync(join(pkg, 'build')), 'a build was attempted although a prebuilt addon fits');
  const withPrebuilt = await probe(dir);
  assert.match(withPrebuilt.table, /0 ports forwarded/);
  assert.equal(withPrebuilt.vsock, 'loaded');

  // A platform with no prebuilt addon: the install script tries a build, which fails here; the
  // install still succeeds and says so in one line.
  await rm(join(pkg, 'prebuilds'), { recursive: true });
  const rebuilt = await exec('npm', ['rebuild', '--foreground-scripts', 'portstream'], { cwd: dir, env: noCompilerEnv, timeout: 300_000 });
  assert.match(rebuilt.stdout + rebuilt.stderr, /portstream: no prebuilt AF_VSOCK addon for linux-x64 and building one failed; everything but vsock:\/\/ vtunnel addresses works without it/);
  const without = await probe(dir);
  assert.match(without.table, /0 ports forwarded/);
  assert.match(without.vsock, /^AF_VSOCK support is not available \(no portstream\.node for linux-x64 [^\n]*\); [^\n]*TCP vtunnel peer \(HOST:PORT\)$/);

  // The agent itself: a vsock:// address is refused in one line, exit 2.
  const agent = await exec(join(dir, 'node_modules', '.bin', 'portstream'), ['-privilegedService', '-kubernetes', '-kubeconfig', '/nonexistent/k3s.yaml', '-iptables=false', '-vtunnelAddr', 'vsock://3:5000'], { cwd: dir, env: noCompilerEnv }).then(
    () => ({ code: 0, stderr: '' }),
    (error: unknown) => error as { code: number; stderr: string },
  );
  assert.equal(agent.code, 2);
  assert.match(agent.stderr, /^portstream: AF_VSOCK support is not available [^\n]*\n$/);
});

test('npm install --ignore-scripts succeeds and the prebuilt addon is used as it is', { timeout: 300_000 }, async () => {
  const dir = await freshProject('ignore-scripts');
  await install(dir, '--ignore-scripts');
  const result = await probe(dir);
  assert.match(result.table, /0 ports forwarded/);
  assert.equal(result.vsock, 'loaded');
});
