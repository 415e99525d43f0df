/**
 * Builds the distribution artifacts (`npm run package`: dist/portstream, dist/portstream.mjs,
 * dist/portstream.node) once per test process, so that every CI run builds and tests them.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';

export const repoRoot = new URL('..', import.meta.url).pathname;
export const sea = `${repoRoot}dist/portstream`;
export const bundle = `${repoRoot}dist/portstream.mjs`;
export const addon = `${repoRoot}dist/portstream.node`;
export const packageVersion = (JSON.parse(readFileSync(`${repoRoot}package.json`, 'utf8')) as { version: string }).version;

let built: Promise<void> | undefined;

export function buildArtifacts(): Promise<void> {
  built ??= promisify(execFile)('npm', ['run', 'package'], { cwd: repoRoot, maxBuffer: 16 * 1024 * 1024, timeout: 300_000 }).then(() => undefined);
  return built;
}
