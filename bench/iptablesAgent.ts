/**
 * The agent that `bench/iptables.ts` measures, in a process of its own so that its RSS and CPU
 * are its own: the iptables stream into the listener sink, nothing else. Forked with an IPC
 * channel; `--poll MS` runs the original agent's design instead (no monitor, re-read every MS).
 *
 * Messages to the parent: `{type:'ready'}` after the first read, `{type:'mode', mode}`,
 * `{type:'stats', rss, cpuMicros, reads}` when asked with `'stats'`; `'stop'` withdraws and exits.
 */
import { pino } from 'pino';
import { Subject, tap } from 'rxjs';
import { createAgent } from '../src/agent.js';
import { listenerSink } from '../src/sinks/listeners.js';
import { iptablesEvents, type IptablesClient } from '../streams/iptables.js';
import { nodeIptablesClient } from '../streams/iptablesClient.js';

const send = (message: object): void => {
  process.send?.(message);
};

// Warnings and errors go to stderr; the line that names the mode goes to the parent.
const log = pino(
  { level: 'info' },
  {
    write: (line: string) => {
      const record = JSON.parse(line) as { level: number; mode?: string };
      if (record.mode !== undefined) send({ type: 'mode', mode: record.mode });
      if (record.level >= 40) process.stderr.write(line);
    },
  },
);

const pollAt = process.argv.indexOf('--poll');
const pollMs = pollAt < 0 ? undefined : Number(process.argv[pollAt + 1]);

let reads = 0;
const real = nodeIptablesClient();
const client: IptablesClient = {
  ...real,
  save: (family) => {
    if (family === 'ipv4') reads++;
    return real.save(family);
  },
};

const stop$ = new Subject<void>();
let ready = false;
const events = iptablesEvents(client, { logger: log, ...(pollMs !== undefined && { monitors: [], pollMs }) }).pipe(
  tap(() => {
    if (!ready) send({ type: 'ready' });
    ready = true;
  }),
);
createAgent({ sources: { iptables: events }, routes: [{ sink: listenerSink({ logger: log }), sources: ['iptables'] }] }, stop$).subscribe({
  complete: () => {
    if (process.connected) process.disconnect();
    process.exit(0);
  },
});

process.on('message', (message) => {
  if (message === 'stats') {
    const cpu = process.cpuUsage();
    const memory = process.memoryUsage();
    send({ type: 'stats', rss: memory.rss, heapUsed: memory.heapUsed, heapTotal: memory.heapTotal, cpuMicros: cpu.user + cpu.system, reads });
  } else if (message === 'stop') {
    stop$.next();
  }
});
process.on('disconnect', () => {
  stop$.next();
});
