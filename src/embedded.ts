import { createRequire, Module } from 'node:module';
import { lazyBuiltin } from './builtin.js';

const vm = lazyBuiltin('node:vm');
const zlib = lazyBuiltin('node:zlib');

/**
 * Runs a CommonJS module that the build embedded as base64 of its brotli-compressed source, and
 * returns its exports. The bundle and the single executable carry large, rarely used libraries
 * this way: a compressed string costs a fraction of the memory V8 keeps for code it has parsed,
 * and the code is only parsed when used. It works in both (a single executable cannot import()).
 */
export function evaluateEmbedded(base64: string, filename: string): unknown {
  const source = zlib().brotliDecompressSync(Buffer.from(base64, 'base64')).toString('utf8');
  const wrapper = vm().runInThisContext(Module.wrap(source), { filename }) as (
    exports: unknown,
    require: NodeJS.Require,
    module: { exports: unknown },
    filename: string,
    dirname: string,
  ) => void;
  const module = { exports: {} as unknown };
  // Only built-in modules are left to require: the embedded module bundles its dependencies.
  wrapper(module.exports, createRequire(process.execPath), module, filename, '/');
  return module.exports;
}
