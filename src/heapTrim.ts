/**
 * Started by the agent's process entry (main.ts), never by the library: it acts on the whole
 * process's C heap.
 *
 * glibc gives freed memory back to the kernel only from the top of each arena. What a burst
 * freed below that (Node's buffers, libuv's requests, V8's own mallocs: start-up is one such
 * burst) stays resident for good: about 2 MB of an idle agent, measured. `malloc_trim(0)`, through the
 * addon (native/trim.c), returns those pages; a call that finds nothing to return costs a few
 * microseconds. So it runs once the start-up burst is over and then every half minute. Without
 * the addon, or where the C library has no such call (musl returns free pages itself), it does
 * nothing. The figures are in docs/install.md ("Size, start-up and memory").
 */
import { nativeAddon, type NativeAddon } from './native/addon.js';

/** When and with what `trimHeapPeriodically` trims; tests shorten the times and count the calls. */
export interface HeapTrimOptions {
  readonly firstMs?: number | undefined;
  readonly everyMs?: number | undefined;
  readonly addon?: (() => Partial<Pick<NativeAddon, 'trimHeap'>>) | undefined;
}

/** Trims the C heap `firstMs` after this call and every `everyMs` after that; the timers never keep the process up. Returns a stop function. */
export function trimHeapPeriodically(opts: HeapTrimOptions = {}): () => void {
  const { firstMs = 10_000, everyMs = 30_000, addon = nativeAddon } = opts;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  const stop = (): void => {
    stopped = true;
    clearTimeout(timer);
    clearInterval(timer);
  };
  const trim = (): void => {
    let trimHeap: (() => boolean) | undefined;
    try {
      trimHeap = addon().trimHeap;
    } catch {
      // No addon here, so nothing to trim with: stop asking.
    }
    if (typeof trimHeap === 'function') trimHeap();
    else stop();
  };
  timer = setTimeout(() => {
    trim();
    if (!stopped) timer = setInterval(trim, everyMs).unref();
  }, firstMs).unref();
  return stop;
}
