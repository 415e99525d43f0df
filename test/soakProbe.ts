/**
 * A test-only preload for the soak test (`node --expose-gc --import tsx --import ./test/soakProbe.ts
 * src/main.ts ...`): on SIGUSR2 it runs a full GC and writes `process.memoryUsage()`, with a
 * sequence number, as JSON to the file named by `PORTSTREAM_SOAK_PROBE` (written to a temporary
 * name and renamed, so a reader never sees half of it). The agent's own code is not touched.
 */
import { renameSync, writeFileSync } from 'node:fs';

const target = process.env['PORTSTREAM_SOAK_PROBE'];
const gc = (globalThis as { gc?: () => void }).gc;

if (target !== undefined && target !== '') {
  let sequence = 0;
  process.on('SIGUSR2', () => {
    // twice: the first pass can leave garbage that finalizers or weak references release
    gc?.();
    gc?.();
    const usage = process.memoryUsage();
    sequence++;
    writeFileSync(`${target}.tmp`, JSON.stringify({ sequence, gc: gc !== undefined, ...usage }));
    renameSync(`${target}.tmp`, target);
  });
}
