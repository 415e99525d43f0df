import os from 'node:os';
import { asyncScheduler, defer, distinctUntilChanged, map, Observable, retry, tap, timer, type SchedulerLike, type Subscription } from 'rxjs';
import { jitteredDelay } from '../backoff.js';
import { errorMessage } from '../errors.js';
import { moduleLogger, type Logger } from '../log.js';
import { portKey, type Forward, type PortDelta } from '../model.js';
import type { Sink, SinkReport } from '../sinks/sink.js';
import { openForwarder } from './forwarder.js';
import { initialLoopbackState, reconcile, type ForwarderSpec, type ListenAddr, type LoopbackCommand, type LoopbackInput, type LoopbackState } from './plan.js';

/** Where the loopback sink listens, how it retries, and where it logs. */
export interface LoopbackSinkOptions {
  /** The VM addresses the host end connects to, read at start and every `rereadMs`. */
  readonly listenAddrs: () => readonly ListenAddr[];
  /** Whether the sink beside this one carries IPv6 (vtunnel yes, host-switch no). */
  readonly ipv6: boolean;
  /** How a forwarder is held (the real sockets by default; tests script their own). */
  readonly open?: ((spec: ForwarderSpec) => Observable<unknown>) | undefined;
  /** How often the addresses are read again (they change when the VM's network is re-made). Default 5 s. */
  readonly rereadMs?: number | undefined;
  /** Wait before trying a forwarder again whose listen failed. Default 2 s, jittered. */
  readonly retryMs?: number | undefined;
  /** The random source of the jitter, in [0, 1) (tests pass a fixed one). */
  readonly random?: (() => number) | undefined;
  /** Where it logs, through a child naming its module; without one it logs nothing. */
  readonly logger?: Logger | undefined;
  readonly scheduler?: SchedulerLike | undefined;
}

/** The values the loopback sink uses for the options left out. */
export const loopbackDefaults = { rereadMs: 5000, retryMs: 2000 } as const;

const sinkName = 'loopback';

/**
 * The loopback sink (docs/loopback.md): routed beside the vtunnel or host-switch sink with the same
 * sources, it keeps a forwarder from the connect address to the loopback address for every forward
 * on 127.0.0.1 (or ::1) that the host end could not otherwise reach. Which forwarders run is
 * decided by the pure `reconcile`; this operator only runs its commands. A forwarder whose listen
 * fails (the port is taken on that address, the address went away) is said once and tried again
 * every `retryMs`. When the input completes every forwarder is closed and `withdrawn` reported.
 *
 *   deltas:     --a(+tcp/127.0.0.1:80)------b(−tcp/127.0.0.1:80)----|
 *   forwarder:    [listen 10.0.0.2:80 .........close]
 *   reports:    --w-------------------------w-----------------------(d|)
 *
 * A `wrote` carries every forward of the delta, also those that need no forwarder, so that the
 * agent's status counts each as applied by this sink; a forwarder that cannot listen is a
 * `failed` naming its forward.
 */
export function loopbackSink(opts: LoopbackSinkOptions): Sink {
  const log = moduleLogger('loopback', opts.logger);
  const scheduler = opts.scheduler ?? asyncScheduler;
  const open = opts.open ?? ((spec: ForwarderSpec) => openForwarder(spec, { logger: opts.logger }));
  const retryMs = opts.retryMs ?? loopbackDefaults.retryMs;
  const rereadMs = opts.rereadMs ?? loopbackDefaults.rereadMs;
  const random = opts.random ?? Math.random;
  return (deltas$) =>
    new Observable<SinkReport>((subscriber) => {
      const held = new Map<string, Subscription>();
      let state: LoopbackState = initialLoopbackState(readAddrs(opts.listenAddrs, log));

      const hold = (spec: ForwarderSpec): Subscription =>
        holdForwarder(spec, { open, log, scheduler, retryMs, random, failed: (report) => { subscriber.next(report); } });

      // A throw in the plan is this sink's error notification, never an uncaught exception.
      const step = (input: LoopbackInput): readonly LoopbackCommand[] | undefined => {
        try {
          const next = reconcile(state, input, opts.ipv6);
          state = next.state;
          for (const command of next.commands) runCommand(command, held, hold, log);
          return next.commands;
        } catch (error) {
          subscriber.error(error);
          return undefined;
        }
      };
      const emit = (report: SinkReport | undefined): void => {
        if (report) subscriber.next(report);
      };

      const addresses = timer(rereadMs, rereadMs, scheduler)
        .pipe(
          map(() => readAddrs(opts.listenAddrs, log)),
          distinctUntilChanged(sameAddrs),
        )
        .subscribe((addrs) => {
          if (sameAddrs(addrs, state.addrs)) return;
          const commands = step({ type: 'addrs', addrs });
          if (commands) emit(movedReport(commands));
        });

      const closeAll = (): number => {
        const count = held.size;
        for (const subscription of held.values()) subscription.unsubscribe();
        held.clear();
        return count;
      };

      const input = deltas$.subscribe({
        next: (delta) => {
          if (step({ type: 'delta', delta })) emit(appliedReport(state, delta));
        },
        error: (err: unknown) => {
          subscriber.error(err);
        },
        complete: () => {
          addresses.unsubscribe();
          const count = closeAll();
          if (count > 0) log.info(`closed ${String(count)} loopback forwarder${count === 1 ? '' : 's'}`);
          subscriber.next({ sink: sinkName, type: 'withdrawn', count });
          subscriber.complete();
        },
      });
      return () => {
        input.unsubscribe();
        addresses.unsubscribe();
        closeAll();
      };
    });
}

/** Carries out one command of the plan: logs a skip, closes or opens a forwarder. */
function runCommand(command: LoopbackCommand, held: Map<string, Subscription>, hold: (spec: ForwarderSpec) => Subscription, log: Logger): void {
  if (command.type === 'skip') {
    log.warn({ port: command.key }, command.why);
  } else if (command.type === 'close') {
    held.get(command.spec.key)?.unsubscribe();
    held.delete(command.spec.key);
    log.info({ key: command.spec.key }, `${command.spec.key}: closed the forwarder to ${command.spec.dialIp}`);
  } else {
    held.set(command.spec.key, hold(command.spec));
    log.info({ key: command.spec.key }, `${command.spec.key}: forwarding to ${command.spec.dialIp}:${String(command.spec.port)} for the host end`);
  }
}

interface HoldContext {
  readonly open: (spec: ForwarderSpec) => Observable<unknown>;
  readonly log: Logger;
  readonly scheduler: SchedulerLike;
  readonly retryMs: number;
  readonly random: () => number;
  readonly failed: (report: SinkReport) => void;
}

/** Holds one forwarder until unsubscribed; a failed listen is said (and reported) once per cause, and retried. */
function holdForwarder(spec: ForwarderSpec, ctx: HoldContext): Subscription {
  const { log, retryMs } = ctx;
  let failing: string | undefined;
  return defer(() => ctx.open(spec))
    .pipe(
      tap(() => {
        if (failing !== undefined) log.info({ key: spec.key }, `${spec.key}: forwarding to ${spec.dialIp} now`);
        failing = undefined;
      }),
      retry({
        delay: (error: unknown) => {
          const delayMs = jitteredDelay(1, { initialMs: retryMs, maxMs: retryMs, jitter: 0.2 }, ctx.random);
          const what = errorMessage(error);
          if (failing !== what) {
            log.warn({ key: spec.key }, `${spec.key}: cannot listen for ${spec.forward.hostIp}:${String(spec.port)} (${what}); trying again every ${String(retryMs)} ms`);
            ctx.failed({ sink: sinkName, type: 'failed', error: `${spec.key}: ${what}`, retryInMs: delayMs, forwards: [spec.forward] });
          }
          failing = what;
          return timer(delayMs, ctx.scheduler);
        },
      }),
    )
    .subscribe();
}

/** The forwarders an address change moved: closed on the old address, opened on the new one. */
function movedReport(commands: readonly LoopbackCommand[]): SinkReport | undefined {
  const added: Forward[] = commands.flatMap((c) => (c.type === 'open' ? [c.spec.forward] : []));
  const removed: Forward[] = commands.flatMap((c) => (c.type === 'close' ? [c.spec.forward] : []));
  return added.length > 0 || removed.length > 0 ? { sink: sinkName, type: 'wrote', added, removed } : undefined;
}

/**
 * What a delta applied: every forward given once its forwarder is asked for, or when it needs
 * none (not on loopback, or covered by a wildcard binding). One the host end has no way to (no
 * address, no IPv6) stays unreported, so the agent's status shows it pending.
 */
function appliedReport(state: LoopbackState, delta: PortDelta): SinkReport | undefined {
  const added = delta.added.filter((f) => !unreachable(state, f));
  return added.length > 0 || delta.removed.length > 0 ? { sink: sinkName, type: 'wrote', added, removed: delta.removed } : undefined;
}

/** A loopback forward the plan skipped for a reason other than a wildcard binding covering it. */
function unreachable(state: LoopbackState, forward: Forward): boolean {
  const why = state.skipped.get(portKey(forward));
  return why !== undefined && !why.endsWith('no forwarder needed');
}

/** The addresses, or none when reading them throws (logged): a throw never escapes the sink. */
function readAddrs(read: () => readonly ListenAddr[], log: Logger): readonly ListenAddr[] {
  try {
    return read();
  } catch (error) {
    log.warn(`cannot read the VM's connect addresses: ${errorMessage(error)}`);
    return [];
  }
}

function sameAddrs(a: readonly ListenAddr[], b: readonly ListenAddr[]): boolean {
  return a.length === b.length && a.every((x, i) => { const y = b[i]; return y !== undefined && x.ip === y.ip && x.cidr === y.cidr; });
}

/** Every address of `interfaceName` (the vtunnel's `-connectInterface`), in CIDR form. */
export function interfaceAddrs(interfaceName: string, interfaces: NodeJS.Dict<os.NetworkInterfaceInfo[]> = os.networkInterfaces()): ListenAddr[] {
  return (interfaces[interfaceName] ?? []).flatMap((info) => (info.cidr === null ? [] : [{ ip: info.address, cidr: info.cidr }]));
}

/**
 * `ip` (host-switch's `-tap-interface-ip`) with the subnet of the interface that has it; none when
 * no interface has it, so nothing is made (said once per forward).
 */
export function addressAddrs(ip: string, interfaces: NodeJS.Dict<os.NetworkInterfaceInfo[]> = os.networkInterfaces()): ListenAddr[] {
  for (const infos of Object.values(interfaces)) {
    const info = infos?.find((i) => i.address === ip && i.cidr !== null);
    if (info?.cidr) return [{ ip, cidr: info.cidr }];
  }
  return [];
}
