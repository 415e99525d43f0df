// npm's install step for portstream (package.json "install"). The AF_VSOCK addon is needed only
// for vsock:// vtunnel addresses, so this never fails an install:
//  1. a prebuilt addon shipped in prebuilds/<platform>-<arch>[-musl]/ that loads: nothing to do;
//  2. otherwise build it from native/*.c with npm's own node-gyp;
//  3. if that fails too (no compiler, no Node headers, no network), say so in one line and go on.
// `npm install --ignore-scripts` skips this file; the loader (src/native/addon.ts) then uses the
// prebuilt addon directly.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const musl = process.report?.getReport().header.glibcVersionRuntime === undefined && process.platform === 'linux';
const tag = `${process.platform}-${process.arch}${musl ? '-musl' : ''}`;

function loads(path) {
  try {
    process.dlopen({ exports: {} }, path);
    return true;
  } catch {
    return false;
  }
}

const prebuilt = join(root, 'prebuilds', tag, 'portstream.node');
if (existsSync(prebuilt) && loads(prebuilt)) process.exit(0);

// npm puts the path of its bundled node-gyp in npm_config_node_gyp for install scripts.
const nodeGyp = process.env.npm_config_node_gyp;
const built =
  nodeGyp !== undefined &&
  existsSync(nodeGyp) &&
  spawnSync(process.execPath, [nodeGyp, 'rebuild', ...localHeaders()], { cwd: root, stdio: ['ignore', 'ignore', 'pipe'], timeout: 300_000 }).status === 0;
if (!built) {
  process.stderr.write(
    `portstream: no prebuilt AF_VSOCK addon for ${tag} and building one failed; ` +
      'everything but vsock:// vtunnel addresses works without it\n',
  );
}

/** Node's own headers when installed beside it (Debian's and the official builds), so node-gyp downloads nothing. */
function localHeaders() {
  const prefix = join(dirname(process.execPath), '..');
  return process.env.npm_config_nodedir === undefined && existsSync(join(prefix, 'include', 'node', 'node_api.h')) ? [`--nodedir=${prefix}`] : [];
}
