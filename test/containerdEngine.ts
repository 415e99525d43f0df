/**
 * Helpers for the containerd integration tests (and the containerd benchmark): a containerd of
 * their own (its own socket, root and state, so killing and restarting it never touches the
 * system containerd that dockerd and the other tests use), the busybox image imported into it
 * without a registry, containers made with `ctr run` and `nerdctl/ports` labels, and "the truth"
 * from `ctr tasks ls` to compare with what the agent sees.
 *
 * Every command runs with an argument array (execFile/spawn), never through a shell.
 */
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { PortKey } from '../src/model.js';
import { alive, busyboxImage, ensureBusyboxImage, ensureDockerd, findBinary, run, succeeds, waitFor, type Need } from './engines.js';

/** Everything the containerd integration tests need (dockerd only to build the image: `docker save`). */
export const containerdNeeds: readonly Need[] = ['root', 'containerd', 'ctr', 'dockerd', 'docker', 'busybox', 'tar'];

/** The image as `ctr images import` names the `docker save` of local/busybox:latest. */
export const ctrImage = `docker.io/${busyboxImage}`;

/** Namespaces that tests and benchmarks make in their own containerd start with this. */
const ownNamespace = /^portstream-(test|bench)/;

// The CRI plugin (Kubernetes) is of no use here and slows the start; everything else is default.
const config = 'version = 2\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n';

/** Where one own containerd lives; nothing here is shared with the system containerd or another instance. */
export interface OwnPaths {
  readonly runDir: string;
  readonly socket: string;
  readonly state: string;
  readonly config: string;
  readonly pidFile: string;
  readonly imageTar: string;
  readonly root: string;
  readonly log: string;
}

/** `name` is `portstream-test-containerd` for the tests, `portstream-bench-containerd` for the benchmark. */
export function ownPaths(name: string): OwnPaths {
  const runDir = `/run/${name}`;
  return {
    runDir,
    socket: `${runDir}/containerd.sock`,
    state: `${runDir}/state`,
    config: `${runDir}/config.toml`,
    pidFile: `${runDir}/containerd.pid`,
    imageTar: `${runDir}/busybox.tar`,
    root: `/var/lib/${name}`,
    log: join(tmpdir(), `${name}-own.log`),
  };
}

interface TaskState {
  readonly pid: number;
  readonly status: string;
}

/**
 * A containerd process of our own. `start` begins from whatever an earlier, aborted run left
 * (its tasks' shims may still run), and `sweep` clears it; `stop` sweeps, stops the process,
 * kills any shim of ours that is left, and removes the directories.
 */
export class OwnContainerd {
  readonly paths: OwnPaths;
  pid: number | undefined;

  constructor(name = 'portstream-test-containerd') {
    this.paths = ownPaths(name);
  }

  get socket(): string {
    return this.paths.socket;
  }

  /** `ctr --address <our socket> [-n ns] ...args` → stdout. */
  async ctr(namespace: string | undefined, ...args: string[]): Promise<string> {
    const ns = namespace === undefined ? [] : ['-n', namespace];
    return (await run('ctr', ['--address', this.paths.socket, ...ns, ...args], { timeoutMs: 60_000 })).stdout;
  }

  answers(): Promise<boolean> {
    return succeeds('ctr', ['--address', this.paths.socket, 'version'], 5_000);
  }

  async start(timeoutMs = 30_000): Promise<void> {
    const p = this.paths;
    mkdirSync(p.runDir, { recursive: true });
    writeFileSync(p.config, config);
    // One of ours from an aborted run still running: stop it first (it is ours: it runs on our socket).
    const stale = this.pidFromFile();
    if (stale !== undefined && this.isOurs(stale)) await terminate(stale, 'containerd');
    rmSync(p.pidFile, { force: true });
    const containerd = findBinary('containerd');
    if (containerd === undefined) throw new Error('containerd is not installed');
    const fd = openSync(p.log, 'a');
    try {
      const args = ['--address', p.socket, '--root', p.root, '--state', p.state, '--config', p.config];
      const child = spawn(containerd, args, { detached: true, stdio: ['ignore', fd, fd] });
      child.on('error', () => {
        // reported by the wait below
      });
      child.unref();
      if (child.pid === undefined) throw new Error('containerd did not start');
      this.pid = child.pid;
      writeFileSync(p.pidFile, String(child.pid));
    } finally {
      closeSync(fd);
    }
    const pid = this.pid;
    try {
      await waitFor(
        async () => {
          if (!alive(pid)) throw new Error(`containerd (pid ${String(pid)}) exited`);
          return this.answers();
        },
        timeoutMs,
        `our containerd on ${p.socket} to answer`,
        100,
      );
    } catch (error) {
      throw new Error(`${error instanceof Error ? error.message : String(error)}\n--- ${p.log} (tail) ---\n${tail(p.log)}`, { cause: error });
    }
  }

  /** Whether our containerd process runs (it may be down on purpose, between `kill9` and `start`). */
  running(): boolean {
    return this.pid !== undefined && alive(this.pid);
  }

  /** `kill -9` of our containerd; resolves once it is gone. Its shims, and so the tasks, live on. */
  async kill9(): Promise<void> {
    const pid = this.pid;
    if (pid === undefined || !alive(pid)) throw new Error('our containerd is not running');
    process.kill(pid, 'SIGKILL');
    await waitFor(() => !alive(pid), 10_000, `containerd (pid ${String(pid)}) to die after SIGKILL`);
  }

  /** Imports local/busybox:latest (built by `ensureBusyboxImage` with dockerd, saved once) into `namespace`. */
  async importBusybox(namespace: string): Promise<void> {
    if (!existsSync(this.paths.imageTar)) {
      await ensureDockerd();
      await ensureBusyboxImage();
      await run('docker', ['save', '-o', this.paths.imageTar, busyboxImage]);
    }
    await this.ctr(namespace, 'images', 'import', this.paths.imageTar);
  }

  /** `ctr tasks ls` in one namespace: task ID → pid and status. */
  async tasksOf(namespace: string): Promise<Map<string, TaskState>> {
    const tasks = new Map<string, TaskState>();
    for (const line of lines(await this.ctr(namespace, 'tasks', 'ls')).slice(1)) {
      const [id = '', pid = '', status = ''] = line.split(/\s+/);
      tasks.set(id, { pid: Number(pid), status });
    }
    return tasks;
  }

  /** Kills a task with SIGKILL (if it runs), waits for it to stop, and deletes it. */
  async removeTask(namespace: string, id: string): Promise<void> {
    const status = (await this.tasksOf(namespace)).get(id);
    if (status === undefined) return;
    if (status.status !== 'STOPPED') {
      await this.ctr(namespace, 'tasks', 'kill', '-s', 'SIGKILL', id).catch(() => undefined);
      await waitFor(async () => (await this.tasksOf(namespace)).get(id)?.status === 'STOPPED', 15_000, `task ${namespace}/${id} to stop`);
    }
    await this.ctr(namespace, 'tasks', 'delete', id);
  }

  /** Removes every task, container, image and namespace in our containerd (starting it if it is down). */
  async sweep(): Promise<void> {
    if (!(await this.answers())) await this.start();
    for (const ns of lines(await this.ctr(undefined, 'namespaces', 'ls', '-q'))) {
      for (const id of lines(await this.ctr(ns, 'tasks', 'ls', '-q'))) await this.removeTask(ns, id);
      const containers = lines(await this.ctr(ns, 'containers', 'ls', '-q'));
      if (containers.length > 0) await this.ctr(ns, 'containers', 'delete', ...containers);
      const images = lines(await this.ctr(ns, 'images', 'ls', '-q'));
      if (images.length > 0) await this.ctr(ns, 'images', 'rm', '--sync', ...images);
      await this.ctr(undefined, 'namespaces', 'rm', '--cgroup', ns);
      removeNamespaceCgroups(ns);
    }
  }

  /** Sweeps, stops our containerd, kills shims of ours that are left, and removes its directories. */
  async stop(): Promise<void> {
    const p = this.paths;
    const problems: string[] = [];
    try {
      await this.sweep();
    } catch (error) {
      problems.push(`sweep: ${error instanceof Error ? error.message : String(error)}`);
    }
    const pid = this.pid ?? this.pidFromFile();
    if (pid !== undefined && this.isOurs(pid)) await terminate(pid, 'containerd');
    this.pid = undefined;
    // Only when the sweep failed: a shim's container processes are its children; they go first.
    for (const shim of this.shims()) {
      for (const child of childrenOf(shim)) if (alive(child)) process.kill(child, 'SIGKILL');
      await terminate(shim, 'containerd shim');
    }
    const mounted = mountsUnder([p.root, p.state]);
    if (mounted.length > 0) {
      problems.push(`left ${p.root} and ${p.runDir} in place because something is still mounted there: ${mounted.join(', ')}`);
    } else {
      rmSync(p.root, { recursive: true, force: true });
      rmSync(p.runDir, { recursive: true, force: true });
    }
    if (problems.length > 0) throw new Error(`cleaning up our containerd: ${problems.join('; ')}`);
  }

  /** The shims our containerd started (`containerd-shim-runc-v2 ... -address <our socket>`). */
  shims(): number[] {
    const pids: number[] = [];
    for (const pid of processes()) {
      const argv = argvOf(pid);
      const i = argv.indexOf('-address');
      if ((argv[0] ?? '').includes('containerd-shim') && i >= 0 && argv[i + 1] === this.paths.socket) pids.push(pid);
    }
    return pids;
  }

  private pidFromFile(): number | undefined {
    try {
      const pid = Number(readFileSync(this.paths.pidFile, 'utf8').trim());
      return Number.isInteger(pid) && pid > 0 ? pid : undefined;
    } catch {
      return undefined;
    }
  }

  /** Whether `pid` is a containerd on our socket (so a pid file's pid that was reused is never touched). */
  private isOurs(pid: number): boolean {
    const argv = argvOf(pid);
    return alive(pid) && (argv[0] ?? '').endsWith('containerd') && argv.includes(this.paths.socket);
  }
}

/** A container the tests made, and the port keys its labels should publish while its task runs. */
export interface TestContainer {
  readonly namespace: string;
  readonly id: string;
  readonly keys: readonly PortKey[];
}

/**
 * The containers one test made. `run` starts one with `ctr run -d` and the given labels;
 * `removeAll` (call it from `t.after`) kills and deletes their tasks and deletes them.
 */
export class TestTasks {
  readonly containers: TestContainer[] = [];

  constructor(private readonly containerd: OwnContainerd) {}

  /** `ctr run -d --label k=v ... docker.io/local/busybox:latest ID sleep 600`; `keys` is what it should publish. */
  async run(namespace: string, id: string, labels: Readonly<Record<string, string>>, keys: readonly PortKey[]): Promise<TestContainer> {
    const container = { namespace, id, keys };
    this.containers.push(container);
    await this.containerd.ctr(namespace, 'run', '-d', ...labelArgs(labels), ctrImage, id, 'sleep', '600');
    return container;
  }

  /** `ctr containers create` only: a container with labels and no task. */
  async create(namespace: string, id: string, labels: Readonly<Record<string, string>>): Promise<TestContainer> {
    const container = { namespace, id, keys: [] };
    this.containers.push(container);
    await this.containerd.ctr(namespace, 'containers', 'create', ...labelArgs(labels), ctrImage, id, 'sleep', '600');
    return container;
  }

  async removeAll(): Promise<void> {
    if (!(await this.containerd.answers())) return; // the file's after hook restarts it and sweeps
    for (const { namespace, id } of this.containers.splice(0)) {
      await this.containerd.removeTask(namespace, id);
      await this.containerd.ctr(namespace, 'containers', 'delete', id).catch(() => undefined); // already gone is fine
    }
  }
}

/**
 * The truth: the keys of every container in `containers` whose task runs now, per `ctr tasks ls`
 * (running or paused: the ports of a paused container stay published).
 */
export async function ctrTruth(containerd: OwnContainerd, containers: Iterable<TestContainer>): Promise<Set<PortKey>> {
  const byNamespace = new Map<string, Map<string, TaskState>>();
  const keys = new Set<PortKey>();
  for (const c of containers) {
    let tasks = byNamespace.get(c.namespace);
    if (!tasks) {
      tasks = await containerd.tasksOf(c.namespace);
      byNamespace.set(c.namespace, tasks);
    }
    const status = tasks.get(c.id)?.status;
    if (status === 'RUNNING' || status === 'PAUSED') for (const k of c.keys) keys.add(k);
  }
  return keys;
}

/** cgroups named after the tests' (or the benchmark's) namespaces, in any hierarchy. */
export function leftCgroups(): string[] {
  const base = '/sys/fs/cgroup';
  const found: string[] = [];
  for (const dir of [base, ...readdirSync(base).map((h) => join(base, h))]) {
    try {
      for (const name of readdirSync(dir)) if (ownNamespace.test(name)) found.push(join(dir, name));
    } catch {
      // not a directory
    }
  }
  return found;
}

/**
 * `namespaces rm --cgroup` removes the namespace's cgroup from the v1 hierarchies only; on a
 * hybrid set-up the one in the unified (v2) hierarchy stays. Only our own namespaces, and rmdir
 * removes only an empty cgroup, so nothing in use is touched.
 */
function removeNamespaceCgroups(ns: string): void {
  if (!ownNamespace.test(ns)) return;
  const base = '/sys/fs/cgroup';
  for (const dir of [join(base, ns), ...readdirSync(base).map((h) => join(base, h, ns))]) {
    try {
      rmdirSync(dir);
    } catch {
      // not there, or not empty
    }
  }
}

function labelArgs(labels: Readonly<Record<string, string>>): string[] {
  return Object.entries(labels).flatMap(([k, v]) => ['--label', `${k}=${v}`]);
}

function lines(text: string): string[] {
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '');
}

function processes(): number[] {
  return readdirSync('/proc')
    .filter((e) => /^\d+$/.test(e))
    .map(Number);
}

function argvOf(pid: number): string[] {
  try {
    return readFileSync(`/proc/${String(pid)}/cmdline`, 'utf8').split('\0').filter((a) => a !== '');
  } catch {
    return [];
  }
}

function childrenOf(parent: number): number[] {
  return processes().filter((pid) => {
    try {
      const stat = readFileSync(`/proc/${String(pid)}/stat`, 'utf8');
      return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === parent;
    } catch {
      return false; // gone meanwhile
    }
  });
}

/** SIGTERM, up to 15 s, then SIGKILL; resolves once `pid` is gone. */
async function terminate(pid: number, what: string): Promise<void> {
  if (!alive(pid)) return;
  process.kill(pid, 'SIGTERM');
  try {
    await waitFor(() => !alive(pid), 15_000, `${what} (pid ${String(pid)}) to stop`, 100);
  } catch {
    if (alive(pid)) process.kill(pid, 'SIGKILL');
    await waitFor(() => !alive(pid), 10_000, `${what} (pid ${String(pid)}) to die after SIGKILL`, 100);
  }
}

function mountsUnder(dirs: readonly string[]): string[] {
  const mounts = readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[1] ?? '');
  return mounts.filter((m) => dirs.some((d) => m === d || m.startsWith(`${d}/`)));
}

function tail(file: string, n = 30): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-n).join('\n');
  } catch {
    return '(no log)';
  }
}
