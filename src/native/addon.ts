import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * portstream's one native addon, `portstream.node`, built from every `native/*.c` (see
 * native/addon.c). Each source adds its functions here; only what needs a system call that Node
 * lacks lives in it, and nothing else in portstream loads it.
 */
export interface NativeAddon {
  /** native/vsock.c: one vtunnel message over AF_VSOCK to `cid:port` (connect, write, half-close, wait for close). */
  send(cid: number, port: number, data: Buffer, timeoutMs: number): Promise<void>;
  /** native/sockdiag.c: the namespace's listening TCP and bound UDP sockets, as 28-byte records (streams/procnetClient.ts decodes them). */
  listeners(): Buffer;
  /** native/trim.c: glibc's `malloc_trim(0)`; true when pages went back to the kernel, false where there is no such call. */
  trimHeap(): boolean;
}

/** The file name of the addon everywhere it is looked for, and of the SEA asset that carries it. */
export const addonFile = 'portstream.node';

/**
 * Where the addon may be, best first, for a module at `moduleUrl` (this file, or the bundle that
 * contains it):
 * - beside the bundle (`dist/portstream.mjs` with `dist/portstream.node`);
 * - `build/Release/` of a source build (`npm install` with a compiler), from `src/native/` under
 *   tsx or `dist/src/native/` compiled;
 * - `prebuilds/<platform>-<arch>[-musl]/`, shipped in the npm package.
 * A single executable carries it as an asset instead (`seaAddon`).
 */
export function addonCandidates(moduleUrl: string, tag: string): string[] {
  return [...builtCandidates(moduleUrl), ...prebuiltCandidates(moduleUrl, tag)];
}

const up = ['../../', '../../../'];

/** Beside the bundle, and a source build's: found without knowing the C library. */
function builtCandidates(moduleUrl: string): string[] {
  return [`./${addonFile}`, ...up.map((u) => `${u}build/Release/${addonFile}`)].map((relative) => fileURLToPath(new URL(relative, moduleUrl)));
}

function prebuiltCandidates(moduleUrl: string, tag: string): string[] {
  return up.map((u) => fileURLToPath(new URL(`${u}prebuilds/${tag}/${addonFile}`, moduleUrl)));
}

/** `linux-x64`, `linux-arm64-musl`...: the prebuilds/ folder for this process. */
export function platformTag(): string {
  const header = process.report.getReport() as { header?: { glibcVersionRuntime?: string } };
  const musl = process.platform === 'linux' && header.header?.glibcVersionRuntime === undefined;
  return `${process.platform}-${process.arch}${musl ? '-musl' : ''}`;
}

let loaded: NativeAddon | Error | undefined;

/**
 * The addon, loaded on first use and kept. Throws one line saying what is missing and what to
 * do. Only vsock:// vtunnel addresses cannot do without it: the host-network source falls back
 * to /proc/net, and the heap trim does nothing.
 */
export function nativeAddon(): NativeAddon {
  loaded ??= load();
  if (loaded instanceof Error) throw loaded;
  return loaded;
}

function load(): NativeAddon | Error {
  try {
    const fromSea = seaAddon();
    if (fromSea !== undefined) return fromSea;
    // The built ones first: telling glibc from musl takes a diagnostic report (5 ms and more,
    // growing with the process's handles), which only the prebuilt folders' names need.
    const built = builtCandidates(import.meta.url).find((path) => existsSync(path));
    if (built !== undefined) return dlopen(built);
    const tag = platformTag();
    const found = prebuiltCandidates(import.meta.url, tag).find((path) => existsSync(path));
    if (found !== undefined) return dlopen(found);
    return missing(`no ${addonFile} for ${tag} (looked in ${addonCandidates(import.meta.url, tag).join(', ')})`);
  } catch (error) {
    return missing(error instanceof Error ? (error.message.split('\n')[0] ?? '') : String(error));
  }
}

function missing(why: string): Error {
  return new Error(
    `AF_VSOCK support is not available (${why}); install portstream with its prebuilt addon or a C compiler, ` +
      'or use a TCP vtunnel peer (HOST:PORT)',
  );
}

function dlopen(path: string): NativeAddon {
  const module = { exports: {} };
  process.dlopen(module, path);
  return module.exports as NativeAddon;
}

/**
 * In a single executable the addon is an asset: it is written to a private temporary folder
 * (mode 0700, removed again once loaded: a loaded library no longer needs its file) and loaded
 * from there. Undefined outside a single executable, or one built without the addon.
 */
function seaAddon(): NativeAddon | undefined {
  const sea = seaModule();
  if (sea?.isSea() !== true) return undefined;
  let asset: ArrayBuffer;
  try {
    asset = sea.getRawAsset(addonFile);
  } catch {
    return undefined;
  }
  const dir = mkdtempSync(join(tmpdir(), 'portstream-'));
  try {
    const path = join(dir, addonFile);
    writeFileSync(path, new Uint8Array(asset), { mode: 0o500 });
    return dlopen(path);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

interface SeaModule {
  isSea(): boolean;
  getRawAsset(key: string): ArrayBuffer;
}

/** `node:sea`, where this Node has it (20.12 and later); required lazily so older Nodes still import this file. */
function seaModule(): SeaModule | undefined {
  try {
    return createRequire(import.meta.url)('node:sea') as SeaModule;
  } catch {
    return undefined;
  }
}
