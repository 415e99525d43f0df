import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

/**
 * A built-in module, loaded at the first call rather than with the module that names it. In the
 * bundle and the single executable every `import … from 'node:…'` is hoisted to the start, so a
 * built-in that only one rarely used backend needs (https and its TLS and crypto for an https
 * host-switch URL, child_process for iptables, zlib for the embedded Kubernetes client) would be
 * loaded, and take its memory, in every agent.
 */
export function lazyBuiltin<N extends keyof LazyBuiltins>(name: N): () => LazyBuiltins[N] {
  let loaded: LazyBuiltins[N] | undefined;
  return () => (loaded ??= require(name) as LazyBuiltins[N]);
}

/** The built-ins loaded this way. */
export interface LazyBuiltins {
  'node:child_process': typeof import('node:child_process');
  'node:https': typeof import('node:https');
  'node:vm': typeof import('node:vm');
  'node:zlib': typeof import('node:zlib');
}
