import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { percentile, report, round } from './stats.js';

const run = promisify(execFile);
const root = fileURLToPath(new URL('..', import.meta.url));

/**
 * What a library user pays to import one entry of the built package (dist/, as npm installs it),
 * in a fresh process that has already imported rxjs: every RxJS user pays for rxjs anyway, so
 * the figure is portstream's own share. The import goes through the package name, so the exports
 * map is what resolves it, as in a user's project.
 */
const child = `
const rxjs = await import('rxjs');
void rxjs;
globalThis.gc?.();
const rss0 = process.memoryUsage().rss;
const t0 = performance.now();
await import(process.argv[1]);
const ms = performance.now() - t0;
process.stdout.write(JSON.stringify({ ms, rssMb: (process.memoryUsage().rss - rss0) / 2 ** 20 }));
`;

async function sample(specifier: string): Promise<{ ms: number; rssMb: number }> {
  const { stdout } = await run(process.execPath, ['--input-type=module', '-e', child, specifier], { cwd: root });
  return JSON.parse(stdout) as { ms: number; rssMb: number };
}

/** The median of 5 fresh processes for each entry, the operators beside the root. */
export async function benchImportCost(): Promise<void> {
  await run(process.execPath, [fileURLToPath(import.meta.resolve('typescript/bin/tsc')), '-p', 'tsconfig.build.json'], { cwd: root });
  const entries = [
    ['operators', 'portstream/operators', { target: '<= 30 ms, <= 15 MB over rxjs' }],
    ['root', 'portstream', {}],
  ] as const;
  for (const [name, specifier, extra] of entries) {
    const samples = [];
    for (let i = 0; i < 5; i++) samples.push(await sample(specifier));
    const ms = percentile(samples.map((s) => s.ms), 50);
    const mb = percentile(samples.map((s) => s.rssMb), 50);
    report({ name: `import.${name}.ms`, value: round(ms, 1), unit: 'ms', specifier, ...extra, note: 'median of 5 fresh processes, each after importing rxjs' });
    report({ name: `import.${name}.rss`, value: round(mb, 1), unit: 'MB', specifier, ...extra });
  }
}
