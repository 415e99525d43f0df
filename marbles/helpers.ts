import assert from 'node:assert/strict';
import { TestScheduler } from 'rxjs/testing';
import { pino } from 'pino';
import type { Forward, Protocol } from '../src/model.js';

export type RunHelpers = Parameters<Parameters<TestScheduler['run']>[0]>[0];

/** Runs `body` in virtual time; marble expectations are checked with deep equality. */
export function marbles(body: (helpers: RunHelpers, scheduler: TestScheduler) => void): () => void {
  return () => {
    const scheduler = new TestScheduler((actual, expected) => {
      assert.deepStrictEqual(actual, expected);
    });
    scheduler.run((helpers) => {
      body(helpers, scheduler);
    });
  };
}

export function fwd(
  hostPort: number,
  opts: { protocol?: Protocol; hostIp?: string; source?: string; owner?: string; containerPort?: number } = {},
): Forward {
  return {
    protocol: opts.protocol ?? 'tcp',
    hostIp: opts.hostIp ?? '0.0.0.0',
    hostPort,
    ...(opts.containerPort !== undefined && { containerPort: opts.containerPort }),
    source: opts.source ?? 'docker',
    owner: opts.owner ?? 'c1',
  };
}

/** A logger that keeps what it was told, so tests can assert on the one line bad input earns. */
export function recordingLogger(): { log: pino.Logger; lines: () => { level: number; msg: string }[] } {
  const records: { level: number; msg: string }[] = [];
  const log = pino(
    { level: 'trace' },
    {
      write: (line: string) => {
        const { level, msg } = JSON.parse(line) as { level: number; msg: string };
        records.push({ level, msg });
      },
    },
  );
  return { log, lines: () => records };
}

/** The error a poisoned forward throws, so a test can expect exactly it. */
export const poison = new Error('poisoned forward');

/**
 * A forward whose host IP throws when read: any operator that keys it runs a callback that
 * throws, which must become an error notification, never an uncaught exception.
 */
export function poisoned(hostPort: number, opts: { source?: string; owner?: string } = {}): Forward {
  const f = fwd(hostPort, opts);
  return Object.defineProperty({ ...f }, 'hostIp', {
    enumerable: true,
    get: (): string => {
      throw poison;
    },
  });
}
