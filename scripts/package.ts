/**
 * `npm run package`: the two artifacts a VM distribution ships, in dist/ beside tsc's dist/src/
 * (the names do not collide: tsc writes only the folders dist/src, dist/streams, dist/operators):
 *
 * - dist/portstream.mjs: one ESM file bundling every dependency, for any Node >= 20 with no
 *   node_modules; dist/portstream.node (the native addon) beside it, needed only for vsock://.
 * - dist/portstream: a Node single executable (SEA) of the same code as CommonJS (Node 20's SEA
 *   runs only CommonJS), with the addon as an asset. It needs no Node on the machine.
 *
 * The version and the containerd protos are written into both at build time: neither has
 * package.json or proto/ beside it. See docs/install.md.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { brotliCompressSync, constants as zlibConstants } from 'node:zlib';
import { build, type BuildOptions, type Plugin } from 'esbuild';
import { containerdProtoJson } from '../streams/containerdClient.js';
import { addonFile } from '../src/native/addon.js';

const root = join(import.meta.dirname, '..');
const dist = join(root, 'dist');
const work = join(root, 'build', 'sea');
const seaFuse = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';

const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string };

/** @kubernetes/client-node as CommonJS, brotli-compressed, base64: see src/embedded.ts. */
function kubernetesLibrary(): Promise<string> {
  return embeddedLibrary("export * from '@kubernetes/client-node';", 'Kubernetes');
}

/** `contents` (JavaScript importing what it embeds) bundled as minified CommonJS, brotli-compressed, base64. */
async function embeddedLibrary(contents: string, what: string): Promise<string> {
  const result = await build({
    stdin: { contents, resolveDir: root, loader: 'js' },
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'cjs',
    minify: true,
    keepNames: true,
    legalComments: 'none',
    logLevel: 'warning',
    write: false,
    alias: { ssh2: join(root, 'scripts', 'ssh2-unsupported.cjs') },
    external: ['cpu-features', 'bufferutil', 'utf-8-validate', '*.node'],
  });
  const code = result.outputFiles[0]?.contents;
  if (code === undefined) throw new Error(`esbuild wrote no ${what} library`);
  return brotliCompressSync(code, { params: { [zlibConstants.BROTLI_PARAM_QUALITY]: 11 } }).toString('base64');
}

/**
 * Libraries only some agents load, each group embedded as one compressed CommonJS bundle like the
 * Kubernetes client (src/embedded.ts) and evaluated when first required: gRPC for containerd,
 * dockerode for a TCP DOCKER_HOST, prom-client for the status endpoint's metrics. In plain text
 * they were most of the bundle, and V8 keeps the source of a script and what its first parse
 * made of it for as long as the script lives.
 */
const embeddedGroups: readonly { readonly name: string; readonly modules: readonly string[] }[] = [
  { name: 'grpc', modules: ['@grpc/grpc-js', '@grpc/proto-loader'] },
  { name: 'dockerode', modules: ['dockerode'] },
  { name: 'prom-client', modules: ['prom-client'] },
];

async function embedLibraries(): Promise<Plugin> {
  const groups = new Map<string, string>();
  for (const group of embeddedGroups) {
    const contents = `module.exports = {${group.modules.map((m) => `${JSON.stringify(m)}: require(${JSON.stringify(m)})`).join(', ')}};`;
    groups.set(group.name, await embeddedLibrary(contents, group.name));
  }
  const groupOf = new Map(embeddedGroups.flatMap((g) => g.modules.map((m) => [m, g.name] as const)));
  const escaped = [...groupOf.keys()].map((m) => m.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&'));
  return {
    name: 'embedded-libraries',
    setup(b) {
      b.onResolve({ filter: new RegExp(`^(${escaped.join('|')})$`) }, (args) => ({ path: args.path, namespace: 'embedded-module' }));
      b.onResolve({ filter: /^embedded-group:/ }, (args) => ({ path: args.path.slice('embedded-group:'.length), namespace: 'embedded-group' }));
      // One module per import, each taking its part of its group's exports.
      b.onLoad({ filter: /.*/, namespace: 'embedded-module' }, (args) => ({
        contents: `module.exports = require(${JSON.stringify(`embedded-group:${groupOf.get(args.path) ?? ''}`)})[${JSON.stringify(args.path)}];`,
        loader: 'js',
      }));
      // One module per group, evaluated once, at its first require.
      b.onLoad({ filter: /.*/, namespace: 'embedded-group' }, (args) => ({
        contents: `const { evaluateEmbedded } = require(${JSON.stringify(join(root, 'src', 'embedded.ts'))}); module.exports = evaluateEmbedded(${JSON.stringify(groups.get(args.path) ?? '')}, ${JSON.stringify(`${args.path}.cjs`)});`,
        loader: 'js',
        resolveDir: root,
      }));
    },
  };
}

const common: BuildOptions = {
  entryPoints: [join(root, 'src', 'main.ts')],
  bundle: true,
  platform: 'node',
  target: 'node20',
  minifySyntax: true,
  minifyWhitespace: true,
  legalComments: 'none',
  logLevel: 'warning',
  define: {
    PORTSTREAM_VERSION: JSON.stringify(pkg.version),
    PORTSTREAM_CONTAINERD_PROTO: JSON.stringify(containerdProtoJson()),
    PORTSTREAM_KUBERNETES_LIBRARY: JSON.stringify(await kubernetesLibrary()),
  },
  // rxjs's ESM build, not the CommonJS one its "node" export condition picks: only the operators
  // used are bundled, and nothing is evaluated through esbuild's CommonJS wrappers.
  alias: { ssh2: join(root, 'scripts', 'ssh2-unsupported.cjs'), rxjs: join(root, 'node_modules', 'rxjs', 'dist', 'esm', 'index.js') },
  // Optional native parts of dependencies, each required inside a try with a JS fallback: ssh2's
  // crypto binding and cpu-features (dockerode's SSH transport), ws's bufferutil and utf-8-validate.
  // The Kubernetes client is embedded compressed instead (the define above).
  external: ['cpu-features', 'bufferutil', 'utf-8-validate', '*.node', '@kubernetes/client-node'],
  plugins: [await embedLibraries()],
};

async function bundle(): Promise<void> {
  await build({
    ...common,
    format: 'esm',
    outfile: join(dist, 'portstream.mjs'),
    // CommonJS dependencies use require, __filename and __dirname; an ESM file has none of its own.
    banner: {
      js:
        "import { createRequire as __cr } from 'node:module'; import { fileURLToPath as __fu } from 'node:url'; " +
        "const require = __cr(import.meta.url); const __filename = __fu(import.meta.url); const __dirname = __fu(new URL('.', import.meta.url));",
    },
  });
  chmodSync(join(dist, 'portstream.mjs'), 0o755);
}

async function sea(addon: string | undefined): Promise<void> {
  const main = join(work, 'portstream.cjs');
  await build({
    ...common,
    format: 'cjs',
    outfile: main,
    define: { ...common.define, 'import.meta.url': '__portstreamUrl' },
    // A SEA's own require() loads only built-in modules and warns for anything else (the optional
    // natives above, which are then missing as intended): a real require() fails quietly instead.
    banner: {
      js: "var require = require('node:module').createRequire(process.execPath); var __portstreamUrl = require('node:url').pathToFileURL(process.execPath).href;",
    },
  });
  const blob = join(work, 'portstream.blob');
  const config = {
    main,
    output: blob,
    disableExperimentalSEAWarning: true,
    useCodeCache: true,
    ...(addon !== undefined && { assets: { [addonFile]: addon } }),
  };
  writeFileSync(join(work, 'sea-config.json'), JSON.stringify(config));
  execFileSync(process.execPath, ['--experimental-sea-config', join(work, 'sea-config.json')], { stdio: 'inherit' });
  const out = join(dist, 'portstream');
  rmSync(out, { force: true });
  copyFileSync(process.execPath, out);
  // Node's static symbol table and debug info (~13 MB here) are not needed to run; the dynamic
  // symbols that addons link against stay.
  execFileSync('strip', ['--strip-all', out], { stdio: 'ignore' });
  const postject = join(root, 'node_modules', 'postject', 'dist', 'cli.js');
  execFileSync(process.execPath, [postject, out, 'NODE_SEA_BLOB', blob, '--sentinel-fuse', seaFuse], { stdio: ['ignore', 'ignore', 'inherit'] });
  chmodSync(out, 0o755);
}

/** The source build of the addon (npm install made it), copied beside the bundle. */
function addonBesideBundle(): string | undefined {
  const built = join(root, 'build', 'Release', addonFile);
  if (!existsSync(built)) {
    process.stderr.write(`package: ${built} is missing (npm install builds it); the artifacts will have no AF_VSOCK support\n`);
    return undefined;
  }
  copyFileSync(built, join(dist, addonFile));
  return built;
}

mkdirSync(work, { recursive: true });
mkdirSync(dist, { recursive: true });
const addon = addonBesideBundle();
await bundle();
await sea(addon);
for (const file of ['portstream.mjs', 'portstream', addonFile]) {
  const path = join(dist, file);
  if (existsSync(path)) process.stdout.write(`dist/${file}\t${String(statSync(path).size)} bytes\n`);
}
