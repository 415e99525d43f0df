// Builds the native addon from native/*.c and copies it to prebuilds/<platform>-<arch>[-musl]/,
// which the package ships so that `npm install portstream` needs no compiler (package.json
// "prepack" runs this). Node-API is ABI-stable, so one build serves every Node >= 20.
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const musl = process.platform === 'linux' && process.report.getReport().header.glibcVersionRuntime === undefined;
const tag = `${process.platform}-${process.arch}${musl ? '-musl' : ''}`;
const nodeGyp = process.env.npm_config_node_gyp ?? nodeGypOfNpm();
execFileSync(process.execPath, [nodeGyp, 'rebuild', ...localHeaders()], { cwd: root, stdio: ['ignore', 2, 2] }); // progress on stderr: `npm pack --json` owns stdout
mkdirSync(join(root, 'prebuilds', tag), { recursive: true });
copyFileSync(join(root, 'build', 'Release', 'portstream.node'), join(root, 'prebuilds', tag, 'portstream.node'));
execFileSync('strip', ['--strip-unneeded', join(root, 'prebuilds', tag, 'portstream.node')]);
process.stderr.write(`prebuilds/${tag}/portstream.node\n`);

/** npm's bundled node-gyp, when this runs outside an npm script. */
function nodeGypOfNpm() {
  const npmCli = execFileSync('npm', ['root', '-g'], { encoding: 'utf8' }).trim();
  return createRequire(join(npmCli, 'npm', 'package.json')).resolve('node-gyp/bin/node-gyp.js');
}

/** Node's own headers when they are installed beside it (as Debian's and the official builds do), so node-gyp downloads nothing. */
function localHeaders() {
  const prefix = join(dirname(process.execPath), '..');
  return process.env.npm_config_nodedir === undefined && existsSync(join(prefix, 'include', 'node', 'node_api.h')) ? [`--nodedir=${prefix}`] : [];
}
