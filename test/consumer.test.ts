/**
 * The package as a tool author gets it: `npm pack`, the tarball installed into a fresh TypeScript
 * project (nodenext, strict, exactOptionalPropertyTypes, skipLibCheck false), where the README's
 * example and a custom source feeding a custom sink must compile and run, and the package must
 * load through `require()` from CommonJS. The install is offline (`--prefer-offline`, from the
 * npm cache this checkout was installed from) and skips install scripts: whether the native
 * addon installs without a compiler is the install checks' business, not this test's.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { startReceiver } from './vtunnelReceiver.js';

const run = promisify(execFile);
const root = fileURLToPath(new URL('..', import.meta.url));
const tsc = fileURLToPath(import.meta.resolve('typescript/bin/tsc'));

const tsconfig = {
  compilerOptions: {
    target: 'ES2022',
    module: 'nodenext',
    moduleResolution: 'nodenext',
    strict: true,
    exactOptionalPropertyTypes: true,
    noUncheckedIndexedAccess: true,
    skipLibCheck: false,
    outDir: 'out',
  },
  include: ['*.ts'],
};

/** The README's example ("Composing portstream"), sending to `PEER` instead of the real host end. */
async function readmeExample(): Promise<string> {
  const readme = await readFile(join(root, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## Composing portstream'));
  const code = /```ts\n([\s\S]*?)```/.exec(section)?.[1];
  if (code?.includes("'127.0.0.1:3040'") !== true) assert.fail('the README example should send to 127.0.0.1:3040');
  return code.replace("'127.0.0.1:3040'", "process.env['PEER'] ?? ''");
}

/** A source of the user's own into a sink of the user's own, through the subpath entries. */
const custom = `
import { Observable, of } from 'rxjs';
import { createAgent, type AgentPlan } from 'portstream';
import { snapshot, portKey, type Forward, type PortDelta } from 'portstream/model';
import { toPortDeltas } from 'portstream/operators';
import type { Sink, SinkReport, VtunnelSinkOptions } from 'portstream/sinks';
import type { HostReceiverOptions } from 'portstream/host';

const web: Forward = { protocol: 'tcp', hostIp: '0.0.0.0', hostPort: 8080, containerPort: 80, source: 'mine', owner: 'c1' };
const seen: string[] = [];
const sink: Sink = (deltas: Observable<PortDelta>) =>
  new Observable<SinkReport>((subscriber) =>
    deltas.subscribe({
      next: (d) => {
        for (const f of d.added) seen.push('+' + portKey(f));
        for (const f of d.removed) seen.push('-' + portKey(f));
        subscriber.next({ sink: 'mine', type: 'wrote', added: d.added, removed: d.removed });
      },
      complete: () => {
        seen.push('withdrawn');
        subscriber.next({ sink: 'mine', type: 'withdrawn', count: 1 });
        subscriber.complete();
      },
    }),
  );

// Options take an explicit undefined (exactOptionalPropertyTypes).
const plan: AgentPlan<'mine'> = { sources: { mine: of(snapshot([['c1', [web]]])) }, routes: [{ sink, sources: ['mine'] }], coalesceMs: undefined };
const vtunnel: VtunnelSinkOptions = { connectAddrs: [], sendTimeoutMs: undefined };
const host: HostReceiverOptions = { listen: '127.0.0.1:0', maxClients: undefined };
void [vtunnel, host];

export function typo(): void {
  // @ts-expect-error -- a route naming a source the plan does not have does not compile
  createAgent({ sources: { mine: of() }, routes: [{ sink, sources: ['mien'] }] });
}

const deltas: PortDelta[] = [];
of(snapshot([['c1', [web]]]), snapshot([])).pipe(toPortDeltas()).subscribe((d) => deltas.push(d));

const types: string[] = [];
createAgent(plan, { signal: AbortSignal.timeout(100) }).subscribe({
  next: (r) => types.push(r.type),
  complete: () => { console.log(JSON.stringify({ seen, types, deltas: deltas.length })); },
});
`;

const commonJs = `
const portstream = require('portstream');
const operators = require('portstream/operators');
const { name } = require('portstream/package.json');
console.log(JSON.stringify({ name, createAgent: typeof portstream.createAgent, toPortDeltas: typeof operators.toPortDeltas }));
`;

test('the packed package installs, type-checks and runs in a fresh TypeScript project', { timeout: 240_000 }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'portstream-consumer-'));
  const peer = await startReceiver();
  try {
    const { stdout: packed } = await run('npm', ['pack', '--json', '--pack-destination', dir], { cwd: root, maxBuffer: 64 * 2 ** 20 });
    const tarball = join(dir, (JSON.parse(packed) as [{ filename: string }])[0].filename);
    const app = join(dir, 'app');
    const rxjsVersion = (JSON.parse(await readFile(join(root, 'node_modules/rxjs/package.json'), 'utf8')) as { version: string }).version;
    await run('mkdir', [app]);
    await writeFile(join(app, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }));
    await writeFile(join(app, 'tsconfig.json'), JSON.stringify(tsconfig));
    await writeFile(join(app, 'readme.ts'), await readmeExample());
    await writeFile(join(app, 'custom.ts'), custom);
    await writeFile(join(app, 'require.cjs'), commonJs);
    const install = ['install', tarball, `rxjs@${rxjsVersion}`, '--prefer-offline', '--ignore-scripts', '--no-audit', '--no-fund'];
    await run('npm', install, { cwd: app, maxBuffer: 64 * 2 ** 20 });
    await assert.rejects(readFile(join(app, 'node_modules/portstream/node_modules/rxjs/package.json')), 'rxjs is shared with the app, not nested');
    // Declaration maps lead from the types to the TypeScript sources, which ship beside them.
    const mapFile = join(app, 'node_modules/portstream/dist/src/agent.d.ts.map');
    const { sources } = JSON.parse(await readFile(mapFile, 'utf8')) as { sources: string[] };
    await readFile(join(dirname(mapFile), sources[0] ?? 'none'));

    await run(process.execPath, [tsc, '-p', app], { cwd: app }).catch((error: unknown) => {
      const { stdout = '' } = error as { stdout?: string };
      assert.fail(`the consumer project does not compile:\n${stdout}`);
    });

    const { stdout: customOut } = await run(process.execPath, ['out/custom.js'], { cwd: app });
    assert.deepEqual(JSON.parse(customOut), { seen: ['+tcp/0.0.0.0:8080', 'withdrawn'], types: ['wrote', 'withdrawn'], deltas: 2 });

    const { stdout: cjsOut } = await run(process.execPath, ['require.cjs'], { cwd: app });
    assert.deepEqual(JSON.parse(cjsOut), { name: 'portstream', createAgent: 'function', toPortDeltas: 'function' });

    // The README example runs until SIGTERM, then withdraws and ends by itself.
    const example = spawn(process.execPath, ['out/readme.js'], { cwd: app, env: { ...process.env, PEER: `127.0.0.1:${String(peer.port)}` }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    example.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const exited = once(example, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    example.kill('SIGTERM');
    const timer = setTimeout(() => example.kill('SIGKILL'), 10_000);
    const [code, signal] = await exited;
    clearTimeout(timer);
    assert.equal(signal, null, `the example did not end by itself after SIGTERM; stderr:\n${stderr}`);
    assert.equal(code, 0, stderr);
    assert.match(stderr, /vtunnel withdrawn/);
    assert.deepEqual(peer.violations, []);
    assert.equal(peer.view.size, 0, 'the example left nothing on its vtunnel peer');
  } finally {
    await peer.close();
    await rm(dir, { recursive: true, force: true });
  }
});
