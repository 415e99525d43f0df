/**
 * The agent as a user runs it: `node --import tsx src/main.ts FLAGS` as a child process, its
 * stderr (pino JSON lines) kept for failure messages, its exit awaited. For tests that drive the
 * real agent end to end (test/faults.test.ts).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { Writable } from 'node:stream';
import { alive, waitFor } from './engines.js';

const main = new URL('../src/main.ts', import.meta.url).pathname;

export interface AgentExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

export interface AgentProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly args: readonly string[];
  /** Everything the agent wrote on stderr so far (the last 1 MiB). */
  stderr(): string;
  /** The last `n` lines of stderr, for failure messages. */
  tail(n?: number): string;
  /** Whether the process has exited. */
  exitedYet(): boolean;
  readonly exited: Promise<AgentExit>;
  /** SIGKILL if it still runs, then waits for the exit (for `after` hooks). */
  kill(): Promise<void>;
}

/** Starts the agent with `args` (its stdout to `stdout`, a pipe we drain by default); call `kill()` from an `after` hook. */
export function startAgent(args: readonly string[], env: NodeJS.ProcessEnv = process.env, stdout: 'pipe' | Writable = 'pipe'): AgentProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', main, ...args], { stdio: ['ignore', stdout, 'pipe'], env });
  if (child.pid === undefined) throw new Error('the agent process did not start');
  const pid = child.pid;
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
    if (stderr.length > 2 * 1024 * 1024) stderr = stderr.slice(-1024 * 1024);
  });
  child.stdout?.resume();
  let done = false;
  const exited = new Promise<AgentExit>((resolve) => {
    child.once('exit', (code, signal) => {
      done = true;
      resolve({ code, signal });
    });
  });
  return {
    child,
    pid,
    args,
    stderr: () => stderr,
    tail: (n = 30) => `--- agent ${args.join(' ')} (last ${String(n)} stderr lines) ---\n${stderr.trimEnd().split('\n').slice(-n).join('\n')}`,
    exitedYet: () => done,
    exited,
    kill: async () => {
      if (done) return;
      if (alive(pid)) child.kill('SIGKILL');
      await exited;
    },
  };
}

/** Waits until the agent logs a line whose `msg` matches `pattern` (it is up and has done that). */
export async function waitForLog(agent: AgentProcess, pattern: RegExp, timeoutMs = 15_000): Promise<void> {
  await waitFor(
    () => {
      if (agent.exitedYet()) throw new Error('the agent exited');
      return agent.stderr().split('\n').some((line) => pattern.test(line));
    },
    timeoutMs,
    () => `the agent to log ${String(pattern)}\n${agent.tail()}`,
  );
}
