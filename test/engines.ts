/**
 * Helpers for the integration tests in `test/`: find the engines' binaries, skip (or, with
 * `PORTSTREAM_REQUIRE_ENGINES=1`, fail) when one is missing, start containerd and dockerd when
 * they do not answer yet, kill and restart dockerd, build a busybox image without a registry,
 * and read "the truth" from `docker ps` to compare with what the agent sees.
 *
 * Every command runs with an argument array (execFile/spawn), never through a shell.
 */
import { execFile, spawn } from 'node:child_process';
import { accessSync, constants, closeSync, existsSync, openSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { copyFile, mkdtemp, rm, mkdir, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { test, type TestContext } from 'node:test';
import type { Observable, Subscription } from 'rxjs';
import { portKey, type PortKey, type PortSet, type Protocol } from '../src/model.js';

// ---------------------------------------------------------------------------------------------
// Skip or fail when something is missing

/** `PORTSTREAM_REQUIRE_ENGINES=1` turns every "missing, skipped" into a failure (`.ci/run` sets it). */
export const enginesRequired = process.env['PORTSTREAM_REQUIRE_ENGINES'] === '1';

/** What a test can need. Binaries are looked up on PATH and in the sbin directories. */
export type Need = 'root' | 'docker' | 'dockerd' | 'containerd' | 'ctr' | 'busybox' | 'tar' | 'iptables' | 'nft' | 'ip' | 'openssl';

const installHints: Readonly<Record<Need, string>> = {
  root: 'run the tests as root (they start engines and change the network)',
  docker: 'apt-get install -y docker.io',
  dockerd: 'apt-get install -y docker.io',
  containerd: 'apt-get install -y containerd',
  ctr: 'apt-get install -y containerd',
  busybox: 'apt-get install -y busybox-static',
  tar: 'apt-get install -y tar',
  iptables: 'apt-get install -y iptables',
  nft: 'apt-get install -y nftables',
  ip: 'apt-get install -y iproute2',
  openssl: 'apt-get install -y openssl',
};

/** Everything the Docker integration tests need. */
export const dockerNeeds: readonly Need[] = ['root', 'containerd', 'ctr', 'dockerd', 'docker', 'busybox', 'tar'];

/** The outcome of checking what a test needs. */
export type Gate = { readonly status: 'ok' } | { readonly status: 'skip' | 'fail'; readonly reason: string };

/**
 * The gate for one requirement: `ok` when `available`; otherwise `skip` with a message saying
 * what to install, or `fail` with the same message when `PORTSTREAM_REQUIRE_ENGINES=1`.
 */
export function requireOrSkip(what: string, available: boolean, installHint: string): Gate {
  if (available) return { status: 'ok' };
  const reason = `needs ${what}, not available here; to run it: ${installHint}`;
  return enginesRequired
    ? { status: 'fail', reason: `${reason} (PORTSTREAM_REQUIRE_ENGINES=1, so a missing engine is a failure)` }
    : { status: 'skip', reason: `${reason} (PORTSTREAM_REQUIRE_ENGINES=1 makes this a failure)` };
}

/** The combined gate for several needs: one message listing everything that is missing. */
export function gateFor(needs: readonly Need[]): Gate {
  const missing = needs.filter((need) => (need === 'root' ? process.getuid?.() !== 0 : findBinary(need) === undefined));
  if (missing.length === 0) return { status: 'ok' };
  const hints = [...new Set(missing.map((need) => installHints[need]))].join('; ');
  const what = missing.map((need) => (need === 'root' ? 'root privileges' : `\`${need}\``)).join(', ');
  return requireOrSkip(what, false, hints);
}

export interface EngineTestOptions {
  readonly needs: readonly Need[];
  /** Per-test timeout in ms (node:test has none by default). */
  readonly timeout?: number;
}

/**
 * A node:test `test` that runs only when everything in `needs` is there: otherwise it is
 * skipped with a message saying what to install, or fails when `PORTSTREAM_REQUIRE_ENGINES=1`.
 */
export function engineTest(name: string, opts: EngineTestOptions, fn: (t: TestContext) => Promise<void> | void): void {
  const gate = gateFor(opts.needs);
  const base = opts.timeout === undefined ? {} : { timeout: opts.timeout };
  if (gate.status === 'ok') {
    void test(name, base, fn);
  } else if (gate.status === 'skip') {
    void test(name, { ...base, skip: gate.reason }, fn);
  } else {
    const reason = gate.reason;
    void test(name, base, () => {
      throw new Error(reason);
    });
  }
}

/** Where `name` is installed, searching PATH and then the sbin directories root has. */
export function findBinary(name: string): string | undefined {
  const dirs = [...(process.env['PATH'] ?? '').split(delimiter), '/usr/local/sbin', '/usr/sbin', '/sbin', '/usr/bin', '/bin'];
  for (const dir of dirs) {
    if (dir === '') continue;
    const path = join(dir, name);
    try {
      accessSync(path, constants.X_OK);
      return path;
    } catch {
      // not here
    }
  }
  return undefined;
}

function binary(name: string): string {
  const path = findBinary(name);
  if (path === undefined) throw new Error(`${name} is not installed`);
  return path;
}

// ---------------------------------------------------------------------------------------------
// Running commands

export interface RunResult {
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs `cmd args` (no shell); rejects with the exit code and stderr when it fails. */
export function run(cmd: string, args: readonly string[], opts: { timeoutMs?: number; input?: string } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      binary(cmd),
      args,
      { maxBuffer: 64 * 1024 * 1024, timeout: opts.timeoutMs ?? 120_000, killSignal: 'SIGKILL' },
      (error, stdout, stderr) => {
        if (error) {
          const why = error.killed ? `killed after ${String(opts.timeoutMs ?? 120_000)} ms` : `exit ${String(error.code)}`;
          reject(new Error(`${cmd} ${args.join(' ')} failed (${why}): ${stderr.trim() || stdout.trim()}`, { cause: error }));
        } else {
          resolve({ stdout, stderr });
        }
      },
    );
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

/** Whether `cmd args` exits 0 within `timeoutMs`. */
export async function succeeds(cmd: string, args: readonly string[], timeoutMs = 10_000): Promise<boolean> {
  try {
    await run(cmd, args, { timeoutMs });
    return true;
  } catch {
    return false;
  }
}

/** `docker ...args` → its stdout. */
export async function docker(...args: string[]): Promise<string> {
  return (await run('docker', args)).stdout;
}

/**
 * Polls `predicate` every `intervalMs` until it is true; rejects after `timeoutMs` with `what`
 * (a string, or a function called then, to describe the state that was not reached).
 */
export async function waitFor(
  predicate: () => boolean | Promise<boolean>,
  timeoutMs = 15_000,
  what: string | (() => string | Promise<string>) = 'a condition',
  intervalMs = 50,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      if (await predicate()) return;
      lastError = undefined;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() >= deadline) {
      const description = typeof what === 'string' ? what : await what();
      const cause = lastError === undefined ? '' : ` (last error: ${describeError(lastError)})`;
      throw new Error(`timed out after ${String(timeoutMs)} ms waiting for ${description}${cause}`);
    }
    await sleep(intervalMs);
  }
}

function describeError(error: unknown): string {
  if (error instanceof Error) return error.message;
  return typeof error === 'string' ? error : JSON.stringify(error);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// ---------------------------------------------------------------------------------------------
// Engines

export const containerdSocket = '/run/containerd/containerd.sock';
export const dockerPidFile = '/var/run/docker.pid';
export const containerdLog = join(tmpdir(), 'portstream-test-containerd.log');
export const dockerdLog = join(tmpdir(), 'portstream-test-dockerd.log');

export interface EngineStatus {
  /** True when this call started the engine; false when it already answered. */
  readonly started: boolean;
  readonly pid?: number;
}

export function containerdAnswers(): Promise<boolean> {
  return succeeds('ctr', ['--address', containerdSocket, 'version']);
}

export function dockerAnswers(): Promise<boolean> {
  return succeeds('docker', ['info', '--format', '{{.ServerVersion}}']);
}

/** Uses the running containerd, or starts one on its default socket and waits for `ctr version`. */
export async function ensureContainerd(timeoutMs = 60_000): Promise<EngineStatus> {
  if (await containerdAnswers()) return { started: false };
  const child = startDetached('containerd', [], containerdLog);
  await waitForEngine('containerd', child, containerdAnswers, containerdLog, timeoutMs);
  return { started: true, ...(child.pid !== undefined && { pid: child.pid }) };
}

/** Uses the running dockerd, or starts one on the running (or started) containerd and waits for `docker info`. */
export async function ensureDockerd(timeoutMs = 60_000): Promise<EngineStatus> {
  if (await dockerAnswers()) return { started: false };
  await ensureContainerd(timeoutMs);
  return startDockerd(timeoutMs);
}

/** The pid in docker's pid file, if there is one. */
export function dockerdPid(): number | undefined {
  try {
    const pid = Number(readFileSync(dockerPidFile, 'utf8').trim());
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** `kill -9` of the running dockerd (its pid from /var/run/docker.pid); resolves once it is gone. */
export async function killDockerd9(timeoutMs = 30_000): Promise<number> {
  const pid = dockerdPid();
  if (pid === undefined || !alive(pid)) throw new Error(`no running dockerd found through ${dockerPidFile}`);
  process.kill(pid, 'SIGKILL');
  await waitFor(() => !alive(pid), timeoutMs, `dockerd (pid ${String(pid)}) to die after SIGKILL`);
  return pid;
}

/** Starts dockerd again the way `ensureDockerd` does and waits until `docker info` answers. */
export async function restartDockerd(timeoutMs = 60_000): Promise<EngineStatus> {
  const old = dockerdPid();
  if (old !== undefined) await waitFor(() => !alive(old), timeoutMs, `the old dockerd (pid ${String(old)}) to be gone`);
  return ensureDockerd(timeoutMs);
}

async function startDockerd(timeoutMs: number): Promise<EngineStatus> {
  // A pid file whose process is gone (or a zombie nobody reaped yet) makes dockerd refuse to start.
  const stale = dockerdPid();
  if (stale !== undefined) {
    if (alive(stale)) throw new Error(`dockerd (pid ${String(stale)}) is running but does not answer; see ${dockerdLog}`);
    rmSync(dockerPidFile, { force: true });
  }
  const child = startDetached('dockerd', [`--containerd=${containerdSocket}`], dockerdLog);
  await waitForEngine('dockerd', child, dockerAnswers, dockerdLog, timeoutMs);
  return { started: true, ...(child.pid !== undefined && { pid: child.pid }) };
}

/** Runs `cmd` in its own session with its output appended to `logFile`, not tied to this process. */
function startDetached(cmd: string, args: readonly string[], logFile: string): ReturnType<typeof spawn> {
  const fd = openSync(logFile, 'a');
  try {
    const child = spawn(binary(cmd), args, { detached: true, stdio: ['ignore', fd, fd] });
    child.on('error', () => {
      // reported by waitForEngine through the exit/answer checks
    });
    child.unref();
    return child;
  } finally {
    closeSync(fd);
  }
}

async function waitForEngine(
  name: string,
  child: ReturnType<typeof spawn>,
  answers: () => Promise<boolean>,
  logFile: string,
  timeoutMs: number,
): Promise<void> {
  let exited: string | undefined;
  child.once('exit', (code, signal) => (exited = signal ?? `exit ${String(code)}`));
  child.once('error', (error) => (exited = error.message));
  try {
    await waitFor(
      async () => {
        if (exited !== undefined) throw new Error(`${name} stopped (${exited})`);
        return answers();
      },
      timeoutMs,
      `${name} to answer`,
      200,
    );
  } catch (error) {
    throw new Error(`${name} did not start: ${describeError(error)}\n--- ${logFile} (tail) ---\n${tail(logFile)}`, {
      cause: error,
    });
  }
}

/** Whether `pid` is a live process; a zombie counts as gone. */
/** The processes whose parent is `pid` (this process by default), from /proc/PID/stat. */
export function childProcesses(pid: number = process.pid): { pid: number; comm: string }[] {
  const children: { pid: number; comm: string }[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const close = stat.lastIndexOf(')');
      const ppid = Number(stat.slice(close + 2).split(' ')[1]);
      if (ppid === pid) children.push({ pid: Number(entry), comm: stat.slice(stat.indexOf('(') + 1, close) });
    } catch {
      // gone meanwhile
    }
  }
  return children;
}

export function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${String(pid)}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

function tail(file: string, lines = 30): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

// ---------------------------------------------------------------------------------------------
// A busybox image without a registry

export const busyboxImage = 'local/busybox:latest';

/**
 * Builds `local/busybox:latest` from /bin/busybox (with `sh`, `httpd`, `sleep` and `nc` linked
 * to it) by `tar -C ROOT -c . | docker import - local/busybox:latest`, unless it exists already.
 */
export async function ensureBusyboxImage(): Promise<void> {
  if (await succeeds('docker', ['image', 'inspect', busyboxImage])) return;
  const busybox = existsSync('/bin/busybox') ? '/bin/busybox' : binary('busybox');
  const root = await mkdtemp(join(tmpdir(), 'portstream-busybox-'));
  try {
    await mkdir(join(root, 'bin'));
    await copyFile(busybox, join(root, 'bin', 'busybox'));
    for (const applet of ['sh', 'httpd', 'sleep', 'nc']) await symlink('busybox', join(root, 'bin', applet));
    await pipe(['tar', ['-C', root, '-c', '.']], ['docker', ['import', '-', busyboxImage]]);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
  if (!(await succeeds('docker', ['image', 'inspect', busyboxImage]))) throw new Error(`${busyboxImage} was not created`);
}

/** `a | b` without a shell: a's stdout goes to b's stdin; rejects unless both exit 0. */
function pipe(a: readonly [string, readonly string[]], b: readonly [string, readonly string[]]): Promise<void> {
  const producer = spawn(binary(a[0]), a[1], { stdio: ['ignore', 'pipe', 'pipe'] });
  const consumer = spawn(binary(b[0]), b[1], { stdio: ['pipe', 'pipe', 'pipe'] });
  producer.stdout.pipe(consumer.stdin);
  consumer.stdin.on('error', () => {
    // the consumer died early: its exit status says why
  });
  const done = (child: ReturnType<typeof spawn>, name: string): Promise<void> =>
    new Promise((resolve, reject) => {
      let stderr = '';
      child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      if (child === consumer) child.stdout?.resume();
      child.once('error', reject);
      child.once('close', (code, signal) => {
        if (code === 0) resolve();
        else reject(new Error(`${name} failed (${signal ?? `exit ${String(code)}`}): ${stderr.trim()}`));
      });
    });
  return Promise.all([done(producer, a[0]), done(consumer, b[0])]).then(() => undefined);
}

// ---------------------------------------------------------------------------------------------
// Containers the tests make

/** Every container a test makes carries this label, so a sweep can always find it. */
export const testLabel = 'portstream-test=1';

/**
 * The containers one test made. `run` adds the test label; `removeAll` (call it from `t.after`
 * or a `finally`) removes them with `docker rm -f`, starting dockerd first if a test left it dead.
 */
export class TestContainers {
  readonly ids: string[] = [];

  /** `docker run -d --label portstream-test=1 ...args` → the container ID. */
  async run(...args: string[]): Promise<string> {
    const id = (await docker('run', '-d', '--label', testLabel, ...args)).trim();
    this.ids.push(id);
    return id;
  }

  async removeAll(): Promise<void> {
    if (this.ids.length === 0) return;
    await ensureDockerd();
    const ids = this.ids.splice(0);
    try {
      await docker('rm', '-f', ...ids);
    } catch (error) {
      // rm -f reports containers that are already gone, and still removes the rest
      if (!(error instanceof Error && /No such container/i.test(error.message))) throw error;
    }
  }
}

/** Removes every container carrying the test label (a sweep before and after a test file). */
export async function removeTestContainers(): Promise<void> {
  const ids = (await docker('ps', '-aq', '--filter', `label=${testLabel}`)).split('\n').filter((id) => id !== '');
  if (ids.length > 0) await docker('rm', '-f', ...ids);
}

/** The main pid of a running container, as the host sees it. */
export async function containerPid(id: string): Promise<number> {
  return Number((await docker('inspect', '--format', '{{.State.Pid}}', id)).trim());
}

// ---------------------------------------------------------------------------------------------
// The truth, from `docker ps`

/**
 * Parses the PORTS column of `docker ps` (`0.0.0.0:8080->80/tcp, [::]:8080->80/tcp`, older
 * clients write `:::8080->80/tcp`, ranges as `0.0.0.0:8000-8002->80-82/tcp`) into port keys.
 * Exposed but unpublished ports (`80/tcp`) are skipped.
 */
export function portKeysFromPsPorts(column: string): PortKey[] {
  const keys: PortKey[] = [];
  for (const entry of column.split(',')) {
    const text = entry.trim();
    if (!text.includes('->')) continue;
    const match = /^(.*):(\d+)(?:-(\d+))?->\d+(?:-\d+)?\/(tcp|udp|sctp)$/.exec(text);
    if (!match) throw new Error(`cannot parse docker ps port ${JSON.stringify(text)}`);
    const [, rawIp = '', first = '', last, protocol = ''] = match;
    if (protocol === 'sctp') continue;
    const hostIp = rawIp.replace(/^\[(.*)\]$/, '$1');
    for (let port = Number(first); port <= Number(last ?? first); port++) {
      keys.push(portKey({ protocol: protocol as Protocol, hostIp, hostPort: port }));
    }
  }
  return keys;
}

/** The published ports of all running containers, per `docker ps`, as port keys. */
export async function dockerPsPortKeys(): Promise<Set<PortKey>> {
  const out = await docker('ps', '--no-trunc', '--format', '{{.Ports}}');
  return new Set(out.split('\n').flatMap(portKeysFromPsPorts));
}

/** The port keys of one container, per `docker port` (`80/tcp -> 0.0.0.0:8080`, `[::]:8080` or `:::8080`). */
export async function dockerPortKeys(id: string): Promise<Set<PortKey>> {
  const out = await docker('port', id);
  const keys = new Set<PortKey>();
  for (const line of out.split('\n')) {
    const match = /^\d+\/(tcp|udp|sctp) -> (.*):(\d+)$/.exec(line.trim());
    if (!match) continue;
    const [, protocol = '', rawIp = '', port = ''] = match;
    if (protocol === 'sctp') continue;
    keys.add(portKey({ protocol: protocol as Protocol, hostIp: rawIp.replace(/^\[(.*)\]$/, '$1'), hostPort: Number(port) }));
  }
  return keys;
}

// ---------------------------------------------------------------------------------------------
// Watching the agent's view

/** The sets a port-set stream emitted, the latest last. */
export interface PortSetRecorder {
  readonly sets: readonly PortSet[];
  latest(): PortSet | undefined;
  /** The latest set's keys (empty before the first set). */
  keys(): Set<PortKey>;
  /** Set when the stream errored or completed: it never should. */
  ended(): string | undefined;
  stop(): void;
}

export function recordPortSets(sets$: Observable<PortSet>): PortSetRecorder {
  const sets: PortSet[] = [];
  let end: string | undefined;
  const subscription: Subscription = sets$.subscribe({
    next: (set) => sets.push(set),
    error: (error: unknown) => (end = `errored: ${describeError(error)}`),
    complete: () => (end = 'completed'),
  });
  return {
    sets,
    latest: () => sets.at(-1),
    keys: () => new Set(sets.at(-1)?.keys() ?? []),
    ended: () => end,
    stop: () => { subscription.unsubscribe(); },
  };
}

/** Sorted keys, for assertions with readable diffs. */
export function sorted(keys: Iterable<PortKey>): PortKey[] {
  return [...keys].sort();
}

export function sameKeys(a: Iterable<PortKey>, b: Iterable<PortKey>): boolean {
  const x = sorted(a);
  const y = sorted(b);
  return x.length === y.length && x.every((k, i) => k === y[i]);
}
