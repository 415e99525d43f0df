import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Subscription } from 'rxjs';
import type { AgentStatus } from './state.js';
import type { StatusTracker } from './tracker.js';

/**
 * The agent's Prometheus metrics (names in docs/status.md), in a registry of its own so that a
 * library user's global registry is left alone. Everything but the latency histogram is read
 * from the status at scrape time: an event costs the metrics nothing, and a scrape costs a walk
 * over the sources, the sinks and their unsettled forwards, never over every forward.
 */
export interface StatusMetrics {
  readonly registry: Registry;
  /** The Prometheus text exposition. */
  scrape(): Promise<string>;
  close(): void;
}

/** What the metrics collect besides the agent's own state. */
export interface StatusMetricsOptions {
  /** prom-client's process and Node.js metrics, event-loop lag among them (default true). */
  readonly defaultMetrics?: boolean;
}

const latencyBuckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

/** Prometheus metrics of the agent's state, read from `tracker` at each scrape, with prom-client's process metrics. */
export function statusMetrics(tracker: StatusTracker, opts: StatusMetricsOptions = {}): StatusMetrics {
  const registry = new Registry();
  const read = (): AgentStatus => tracker.current();
  perSource(registry, read);
  perSink(registry, read);
  const latency = new Histogram({
    name: 'portstream_event_to_sink_seconds',
    help: 'From a source changing a forward to the sink having applied (or removed) it',
    labelNames: ['sink'],
    buckets: latencyBuckets,
    registers: [registry],
  });
  const settled: Subscription = tracker.settled$.subscribe((s) => {
    latency.observe({ sink: s.sink }, s.ms / 1000);
  });
  if (opts.defaultMetrics ?? true) collectDefaultMetrics({ register: registry });
  return {
    registry,
    scrape: () => registry.metrics(),
    close: () => {
      settled.unsubscribe();
      registry.clear();
    },
  };
}

/** A counter whose value lives in the status: set from it at each scrape. */
function counterOf(registry: Registry, name: string, help: string, label: string, values: () => Iterable<[string, number]>): void {
  new Counter({
    name,
    help,
    labelNames: [label],
    registers: [registry],
    collect() {
      this.reset();
      for (const [key, n] of values()) this.inc({ [label]: key }, n);
    },
  });
}

function gaugeOf(registry: Registry, name: string, help: string, labels: string[], values: () => Iterable<[Record<string, string>, number]>): void {
  new Gauge({
    name,
    help,
    labelNames: labels,
    registers: [registry],
    collect() {
      this.reset();
      for (const [l, n] of values()) this.set(l, n);
    },
  });
}

function perSource(registry: Registry, read: () => AgentStatus): void {
  const each = <T>(f: (s: AgentStatus['sources'][string]) => T): [string, T][] =>
    Object.entries(read().sources).map(([name, s]) => [name, f(s)]);
  gaugeOf(registry, 'portstream_source_forwards', 'Forwards each source claims', ['source'], () => each((s) => s.forwards).map(([source, n]) => [{ source }, n]));
  gaugeOf(registry, 'portstream_source_connected', '1 while the source is connected to its backend', ['source'], () =>
    each((s) => (s.connected ? 1 : 0)).map(([source, n]) => [{ source }, n]),
  );
  counterOf(registry, 'portstream_source_events_total', 'Raw events each source emitted', 'source', () => each((s) => s.events));
  counterOf(registry, 'portstream_source_reconnects_total', 'Times each source backed off to reconnect', 'source', () => each((s) => s.reconnects));
}

function perSink(registry: Registry, read: () => AgentStatus): void {
  gaugeOf(registry, 'portstream_sink_forwards', 'Forwards per sink, by state: applied, pending or failed', ['sink', 'state'], () => {
    return Object.entries(read().sinks).flatMap(([sink, s]) => {
      let failed = 0;
      for (const state of s.unsettled.values()) if (state === 'failed') failed += 1;
      return [
        [{ sink, state: 'applied' }, s.applied],
        [{ sink, state: 'pending' }, s.unsettled.size - failed],
        [{ sink, state: 'failed' }, failed],
      ] as [Record<string, string>, number][];
    });
  });
  gaugeOf(registry, 'portstream_sink_in_sync', '1 while the sink has applied everything and its last write succeeded', ['sink'], () =>
    Object.entries(read().sinks).map(([sink, s]) => [{ sink }, s.inSync ? 1 : 0]),
  );
  counterOf(registry, 'portstream_sink_writes_total', 'Successful writes per sink', 'sink', () => Object.entries(read().sinks).map(([k, s]) => [k, s.writes]));
  counterOf(registry, 'portstream_sink_failures_total', 'Failed writes per sink', 'sink', () => Object.entries(read().sinks).map(([k, s]) => [k, s.failures]));
}
