/**
 * The package's entries (package.json `exports`): each subpath's module exists where the map says
 * once built, the root holds every value each subpath exports, and the operators' entry loads
 * none of the backends' libraries.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { execFile } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const pkg = JSON.parse(await readFile(new URL('../../package.json', import.meta.url), 'utf8')) as {
  exports: Record<string, string | { types: string; default: string }>;
  peerDependencies: Record<string, string>;
};
const subpaths = Object.keys(pkg.exports).filter((k) => k !== '.' && k !== './package.json');

test('entries: every subpath maps to src/entry/<name> (types and code), and ./package.json is exported', () => {
  assert.deepEqual(subpaths.sort(), ['./containerd', './docker', './host', './iptables', './kubernetes', './model', './operators', './procnet', './sinks', './status']);
  for (const subpath of subpaths) {
    const name = subpath.slice(2);
    assert.deepEqual(pkg.exports[subpath], { types: `./dist/src/entry/${name}.d.ts`, default: `./dist/src/entry/${name}.js` });
  }
  assert.deepEqual(pkg.exports['.'], { types: './dist/src/index.d.ts', default: './dist/src/index.js' });
  assert.equal(pkg.exports['./package.json'], './package.json');
  assert.equal(pkg.peerDependencies['rxjs'], '>=7.8 <8');
});

test('entries: the root exports every value that a subpath exports, the same object', async () => {
  const root = (await import('../../src/index.js')) as Record<string, unknown>;
  for (const subpath of subpaths) {
    const entry = (await import(`../../src/entry/${subpath.slice(2)}.js`)) as Record<string, unknown>;
    for (const [name, value] of Object.entries(entry)) assert.equal(root[name], value, `${subpath} exports ${name}; the root should too`);
  }
});

/** The packages under node_modules that a fresh process has loaded after importing `entry`. */
async function packagesLoadedBy(entry: string): Promise<Set<string>> {
  const script = `
    import { createRequire } from 'node:module';
    await import(${JSON.stringify(entry)});
    const cache = createRequire(import.meta.url).cache;
    process.stdout.write(JSON.stringify(Object.keys(cache)));`;
  const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    cwd: fileURLToPath(new URL('../..', import.meta.url)),
  });
  const names = (JSON.parse(stdout) as string[]).map((path) => /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(path)?.[1]).filter((n) => n !== undefined);
  return new Set(names);
}

const heavy = ['dockerode', 'docker-modem', 'ssh2', '@grpc/grpc-js', '@grpc/proto-loader', '@kubernetes/client-node'];

test('entries: the root and the operators load no backend library on import (they load at first use)', async () => {
  for (const entry of ['./src/index.ts', './src/entry/operators.ts']) {
    const loaded = await packagesLoadedBy(entry);
    for (const name of heavy) assert.ok(!loaded.has(name), `importing ${entry} loaded ${name}`);
  }
  const operators = await packagesLoadedBy('./src/entry/operators.ts');
  assert.ok(!operators.has('pino'), 'the operators load no logger');
  // The check can fail: a backend's own entry does load its library when its client is imported eagerly.
  assert.ok((await packagesLoadedBy('./streams/containerdClient.ts')).has('@grpc/grpc-js'));
});
