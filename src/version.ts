import { readFileSync } from 'node:fs';

/**
 * The version in package.json. The bundle and the single executable have no package.json beside
 * them, so scripts/package.ts writes the version in at build time; compiled or under tsx it is
 * read from package.json (from src/ or dist/src/).
 */
export function version(): string {
  if (typeof PORTSTREAM_VERSION !== 'undefined') return PORTSTREAM_VERSION;
  for (const relative of ['../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(relative, import.meta.url), 'utf8')) as { name?: unknown; version?: unknown };
      if (pkg.name === 'portstream' && typeof pkg.version === 'string') return pkg.version;
    } catch {
      // not this one
    }
  }
  return 'unknown';
}

declare const PORTSTREAM_VERSION: string | undefined;
