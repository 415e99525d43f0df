import {
  asyncScheduler,
  catchError,
  concat,
  concatMap,
  defer,
  EMPTY,
  endWith,
  groupBy,
  identity,
  ignoreElements,
  map,
  merge,
  mergeMap,
  type MonoTypeOperatorFunction,
  type Observable,
  of,
  scan,
  Subject,
  switchMap,
  throwError,
  timeout,
  timer,
  type SchedulerLike,
} from 'rxjs';
import { moduleLogger, type Logger } from '../log.js';
import { trampoline } from '../../operators/trampoline.js';
import type { Forward } from '../model.js';
import { jitteredDelay, type Backoff } from '../backoff.js';
import type { Sink, SinkReport } from './sink.js';
import { initialVtunnelState, reconcileVtunnel, type Round, type VtunnelConfig, type VtunnelInput, type VtunnelStep } from './vtunnelReconcile.js';
import { maxPortMappingBytes, splitPortMapping, type ConnectAddr, type PortMappingPart } from '../wire/portMapping.js';
import { tcpSender, type VtunnelSend } from './vtunnelTransport.js';
import { parseVtunnelAddr } from '../wire/vtunnelAddress.js';
import { vsockSender } from './vsockTransport.js';
import { errorMessage } from '../errors.js';
import { done, eachOf, feedInto, runOutputs, untilDone } from '../reconcileLoop.js';

export { tcpSender, type VtunnelSend } from './vtunnelTransport.js';
export { planRound, type Round } from './vtunnelReconcile.js';

/** Where the vtunnel sink sends, what it tells the host, and how it bounds, retries and logs. */
export interface VtunnelSinkOptions {
  /** The vtunnel peer, `host:port` (`-vtunnelAddr`). Used for the default `send` and in logs. */
  readonly address?: string | undefined;
  /** Delivers one message; defaults to `tcpSender` for `address`. */
  readonly send?: VtunnelSend | undefined;
  /** The VM's addresses for `connectAddrs`; a function is asked again for every message. */
  readonly connectAddrs: readonly ConnectAddr[] | (() => readonly ConnectAddr[]);
  /** Bound on one message, connect to close. */
  readonly sendTimeoutMs?: number | undefined;
  /** A larger set goes as several messages (the host side refuses larger ones). */
  readonly maxMessageBytes?: number | undefined;
  /** Bound on withdrawing everything after the input completes, so shutdown never hangs. */
  readonly withdrawTimeoutMs?: number | undefined;
  /**
   * After this long without a send, the whole state is sent again (0: never). The peer owes no
   * reply, so a host end that restarted empty while nothing changed here cannot be noticed any
   * other way; adds are idempotent on the host, so the re-send is harmless.
   */
  readonly resyncMs?: number | undefined;
  readonly backoff?: Backoff | undefined;
  /** The random source of the jitter, in [0, 1) (tests pass a fixed one). */
  readonly random?: (() => number) | undefined;
  readonly scheduler?: SchedulerLike | undefined;
  /** Where it logs, through a child naming its module; without one it logs nothing. */
  readonly logger?: Logger | undefined;
}

/** The values the vtunnel sink uses for the options left out. */
export const vtunnelDefaults = { address: '127.0.0.1:3040', sendTimeoutMs: 5_000, withdrawTimeoutMs: 5_000, resyncMs: 3_000 } as const;

/** Exponential back-off with jitter: `backoffDelay` scaled by a factor in [1 - jitter, 1 + jitter]. */
export function retryDelay(attempt: number, backoff: VtunnelSinkOptions['backoff'] = {}, random = Math.random): number {
  return jitteredDelay(attempt, backoff, random);
}

/**
 * Publishes the agent's forwards to Rancher Desktop's host privileged service over the vtunnel
 * (docs/vtunnel-wire.md). A reconcile loop between `desired` (the deltas applied) and what is on
 * the host: whenever they differ and no write is in flight, one round sends one `remove:true`
 * and/or one `remove:false` message (each split into several when over `maxMessageBytes`, 64 KiB,
 * the host side's limit). Changes that arrive during a round are folded into the next one.
 *
 *   deltas:   a-bc----------|
 *   sends:    +a at 0; +b+c at 3 (b and c wait for the first round and share the second);
 *             -a-b-c at 14                                  (each send answers after 3 frames)
 *   reports:  ---w--v----------(x|)                         w, v = wrote, x = withdrawn
 *
 * A failed round reports `failed` and is retried with back-off; the retry re-sends the whole
 * desired set, plus removes for anything that may still be on the host. `resyncMs` after the
 * last successful round, the whole desired set is sent again and reported as `resent`, so a host
 * end that restarted empty is repaired within that time. When the input completes, everything is
 * withdrawn (bounded by `withdrawTimeoutMs`: past it the sink reports `abandoned`) and the sink
 * completes.
 *
 * The decisions are `reconcileVtunnel` (pure, vtunnelReconcile.ts), folded with `scan`; this
 * function only carries out its commands: the send of a round, the timers (one `switchMap` per
 * timer, so arming one again replaces it), logs and reports. What a round or timer gives back is
 * fed in again, one input at a time (`trampoline`), so the reducer never re-enters itself. A
 * throw in `send` or `connectAddrs` fails that round, which is reported and retried like any
 * failed write; a throw anywhere else (the logger, say) becomes the sink's error notification.
 */
export function vtunnelSink(opts: VtunnelSinkOptions): Sink {
  const config: VtunnelConfig = {
    address: opts.address ?? vtunnelDefaults.address,
    resyncMs: opts.resyncMs ?? vtunnelDefaults.resyncMs,
    withdrawTimeoutMs: opts.withdrawTimeoutMs ?? vtunnelDefaults.withdrawTimeoutMs,
    backoff: opts.backoff,
  };
  const scheduler = opts.scheduler ?? asyncScheduler;
  const log = moduleLogger('vtunnel', opts.logger);
  const runRound = roundRunner(opts, config.address, scheduler);
  return (deltas$) =>
    defer(() => {
      const feedback = new Subject<VtunnelInput>();
      // The feedback first: a synchronous input's first round may answer before merge goes on.
      const inputs$ = merge(feedback, deltas$.pipe(map((delta): VtunnelInput => ({ kind: 'delta', delta })), endWith<VtunnelInput>({ kind: 'stop' })));
      return inputs$.pipe(
        trampoline(),
        scan((step: VtunnelStep, input: VtunnelInput) => reconcileVtunnel(step.state, input, config), { state: initialVtunnelState, commands: [] }),
        eachOf((step) => step.commands),
        groupBy((command) => (command.kind === 'timer' ? `timer:${command.timer}` : command.kind)),
        mergeMap((commands$): Observable<SinkReport | typeof done> => {
          const key = commands$.key;
          if (key === 'send') return commands$.pipe(mergeMap((c) => (c.kind === 'send' ? runRound(c.round) : EMPTY), 1), feedInto(feedback));
          if (key.startsWith('timer:')) return commands$.pipe(switchMap((c) => (c.kind === 'timer' && c.ms !== undefined ? timer(c.ms, scheduler).pipe(map((): VtunnelInput => ({ kind: 'timer', timer: c.timer }))) : EMPTY)), feedInto(feedback));
          return commands$.pipe(runOutputs(log, (c) => (c.kind === 'report' ? c.report : undefined)));
        }),
        // Finishing ends everything still running: a send in flight, the timers.
        untilDone(),
      );
    });
}

/**
 * Carries out one round: the removes, then the adds, each as one message or several when they
 * would not fit in `maxMessageBytes`, each bounded by `sendTimeoutMs`. Gives back `delivered` per
 * message that reached the peer, then `sent`, or `failed` at the first that did not.
 */
function roundRunner(opts: VtunnelSinkOptions, address: string, scheduler: SchedulerLike): (round: Round) => Observable<VtunnelInput> {
  const sendTimeoutMs = opts.sendTimeoutMs ?? vtunnelDefaults.sendTimeoutMs;
  const maxMessageBytes = opts.maxMessageBytes ?? maxPortMappingBytes;
  const random = opts.random ?? Math.random;
  const send = opts.send ?? defaultSender(address, sendTimeoutMs);
  const connectAddrs = (): readonly ConnectAddr[] => (typeof opts.connectAddrs === 'function' ? opts.connectAddrs() : opts.connectAddrs);

  // The built-in senders bound themselves, naming the peer that did not answer; a `send` given
  // in the options is bounded here. One timer per message, not two, on the add path.
  const bounded: MonoTypeOperatorFunction<never> =
    opts.send === undefined
      ? identity
      : timeout({
          first: sendTimeoutMs,
          scheduler,
          with: () => throwError(() => new Error(`no answer from the vtunnel peer within ${String(sendTimeoutMs)} ms`)),
        });
  const sendPart = (remove: boolean, part: PortMappingPart): Observable<VtunnelInput> =>
    defer(() => send(part.line)).pipe(
      ignoreElements(),
      bounded,
      endWith<VtunnelInput>({ kind: 'delivered', remove, forwards: part.forwards }),
    );

  const split = lastSplit(maxMessageBytes);
  const message = (remove: boolean, forwards: readonly Forward[]): Observable<VtunnelInput> =>
    forwards.length === 0 ? EMPTY : defer(() => split(remove, forwards, connectAddrs())).pipe(concatMap((part) => sendPart(remove, part)));

  return (round) =>
    concat(message(true, round.removes), message(false, round.adds)).pipe(
      endWith<VtunnelInput>({ kind: 'sent' }),
      catchError((err: unknown) => of<VtunnelInput>({ kind: 'failed', error: errorMessage(err), random: random() })),
    );
}

/**
 * `splitPortMapping`, remembering the last answer: the re-send every 3 s carries the same forwards
 * to the same addresses again, and encoding 10,000 of them is most of what an idle sink does.
 */
function lastSplit(maxBytes: number): (remove: boolean, forwards: readonly Forward[], addrs: readonly ConnectAddr[]) => readonly PortMappingPart[] {
  let last: { remove: boolean; forwards: readonly Forward[]; addrs: string; parts: readonly PortMappingPart[] } | undefined;
  return (remove, forwards, addrs) => {
    const addrsKey = JSON.stringify(addrs);
    if (last?.remove === remove && last.addrs === addrsKey && sameItems(last.forwards, forwards)) return last.parts;
    const parts = splitPortMapping(remove, forwards, addrs, maxBytes);
    // Only a large set is worth keeping; a small one costs little to encode again.
    last = forwards.length >= 256 ? { remove, forwards, addrs: addrsKey, parts } : undefined;
    return parts;
  };
}

function sameItems<T>(a: readonly T[], b: readonly T[]): boolean {
  return a.length === b.length && a.every((item, i) => item === b[i]);
}

function defaultSender(address: string, timeoutMs: number): VtunnelSend {
  const target = parseVtunnelAddr(address);
  // Thrown at start-up, so a typo is reported once rather than as endless failed writes.
  if ('error' in target) throw new Error(`-vtunnelAddr ${JSON.stringify(address)}: ${target.error}`);
  if (target.kind === 'vsock') return vsockSender(target.cid, target.port, timeoutMs);
  return tcpSender(target.host, target.port, timeoutMs);
}
