import { moduleLogger, type Logger } from '../log.js';
import type { StatusAddress } from './address.js';
import { statusMetrics, type StatusMetrics } from './metrics.js';
import { serveStatus, type StatusServer } from './server.js';
import { statusTracker, type StatusTracker } from './tracker.js';

/** A tracker, its metrics and the server in front of them: what `-statusAddr` turns on. */
export interface StatusEndpoint {
  readonly tracker: StatusTracker;
  readonly metrics: StatusMetrics;
  readonly server: StatusServer;
  close(): Promise<void>;
}

/** Starts the status endpoint at `address`: a tracker for the agent to feed, its metrics, and the HTTP server; `close()` stops all three. */
export async function startStatusEndpoint(address: StatusAddress, logger?: Logger): Promise<StatusEndpoint> {
  const tracker = statusTracker({ logger });
  const metrics = statusMetrics(tracker);
  try {
    const server = await serveStatus(address, tracker, metrics, moduleLogger('status', logger));
    return {
      tracker,
      metrics,
      server,
      close: async () => {
        await server.close();
        metrics.close();
        tracker.close();
      },
    };
  } catch (err) {
    metrics.close();
    tracker.close();
    throw err;
  }
}
