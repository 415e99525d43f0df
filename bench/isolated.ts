import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { report, type Figure } from './stats.js';

/**
 * Runs a part of the bench in a process of its own and relays its figures. Loopback throughput
 * depends on the measuring process: with the heap that the earlier parts leave behind (~300 MB),
 * a direct transfer runs at half its speed, and proxied ones lose more. A real host side runs
 * in a process of its own too.
 */
export async function runIsolated(entry: URL, args: readonly string[]): Promise<void> {
  await runIsolatedIn([], entry, args);
}

/** `runIsolated` under a command that runs it (`ip netns exec NS`), when `prefix` is not empty. */
export async function runIsolatedIn(prefix: readonly string[], entry: URL, args: readonly string[]): Promise<void> {
  const command = [...prefix, process.execPath, '--import', 'tsx', fileURLToPath(entry), ...args];
  const child = spawn(command[0]!, command.slice(1), { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
  for await (const line of createInterface({ input: child.stdout })) {
    try {
      report(JSON.parse(line) as Figure);
    } catch {
      process.stderr.write(`${line}\n`);
    }
  }
  const [code, signal] = await exited;
  if (code !== 0) process.stderr.write(`bench: ${fileURLToPath(entry)} ended with ${signal ?? `exit code ${String(code)}`}\n`);
}
