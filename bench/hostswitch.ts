/**
 * The host-switch sink at 10,000 forwards, in a process of its own (`hostswitchMain.ts`) against
 * the forwarder stand-in (test/fakeForwarder.ts, recording without binding) run here, so that the
 * child's CPU is the sink's alone:
 * - `hostswitch.overhead.p50`: the sink's own time for one change (an add, then its removal)
 *   while it holds 10,000 forwards, with answers given synchronously in-process (no I/O at all);
 * - `hostswitch.change.p50`: one change to its report, over HTTP against the stand-in;
 * - `hostswitch.idle_cpu.10000`: CPU with 10,000 forwards and nothing changing (this includes the
 *   periodic re-read of the host's list, 10,000 entries every 3 s).
 */
import { runIsolated } from './isolated.js';
import { startFake } from '../test/fakeForwarder.js';

export async function benchHostSwitch(quick: boolean): Promise<void> {
  // Closed below rather than by a test's `after`.
  const fake = await startFake({ after: () => undefined }, 0, { bind: false });
  try {
    await runIsolated(new URL('./hostswitchMain.ts', import.meta.url), ['--url', fake.url, ...(quick ? ['--quick'] : [])]);
  } finally {
    await fake.close();
  }
}
