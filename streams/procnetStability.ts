import { remove, snapshot, upsert, type Forward, type PortKey, type SourceEvent } from '../src/model.js';

/**
 * Holds a port back until it has stood for `stableMs`, so that the listeners a build, a test run
 * or an install opens for a moment never reach the host; a port that goes is removed at once.
 * Fed the whole picture of each scan with the scan's time, it answers with the source events
 * that picture calls for: a snapshot the first time, then an upsert per port that has now stood
 * long enough and a remove per published port that is gone.
 *
 *   scans (stableMs = 3 scans):  A----A----A----A----B----B----B----B----
 *   events:                      s--------------a----r--------------b----
 *                                s = empty snapshot, a/b = upsert, r = remove(A)
 *
 * A port that goes and comes back between two scans is not seen to go; one that is gone for a
 * scan starts its wait again.
 */
export class StabilityGate {
  private readonly firstSeen = new Map<PortKey, number>();
  private readonly published = new Map<PortKey, Forward>();
  private started = false;

  constructor(private readonly stableMs: number) {}

  /** True when every port present is published: an unchanged scan then changes nothing. */
  get settled(): boolean {
    return this.started && this.firstSeen.size === this.published.size;
  }

  step(present: ReadonlyMap<PortKey, Forward>, now: number): SourceEvent[] {
    const events: SourceEvent[] = [];
    for (const key of this.firstSeen.keys()) {
      if (present.has(key)) continue;
      this.firstSeen.delete(key);
      if (this.published.delete(key)) events.push(remove(key));
    }
    for (const [key, forward] of present) {
      let since = this.firstSeen.get(key);
      if (since === undefined) {
        since = now;
        this.firstSeen.set(key, now);
      }
      if (now - since >= this.stableMs && !this.published.has(key)) {
        this.published.set(key, forward);
        events.push(upsert(key, [forward]));
      }
    }
    if (this.started) return events;
    this.started = true;
    return [snapshot([...this.published].map(([key, f]) => [key, [f]] as const))];
  }
}
