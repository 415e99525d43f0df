import {
  asyncScheduler,
  concat,
  defer,
  EMPTY,
  ignoreElements,
  Observable,
  tap,
  throwError,
  timeout,
  timer,
  Subscription,
  type SchedulerLike,
} from 'rxjs';
import { moduleLogger, type Logger } from '../log.js';
import { portKey, type Forward, type PortKey, type PortSet } from '../model.js';
import { jitteredDelay, type Backoff } from '../backoff.js';
import type { Sink, SinkReport } from './sink.js';
import { maxPortMappingBytes, splitPortMapping, type ConnectAddr } from './vtunnelWire.js';
import { tcpSender, type VtunnelSend } from './vtunnelTransport.js';
import { parseVtunnelAddr } from './vtunnelAddress.js';
import { vsockSender } from './vsockTransport.js';
import { errorMessage } from '../errors.js';

export { tcpSender, type VtunnelSend } from './vtunnelTransport.js';

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

/** What one round sends: first the removes (freeing host ports), then the adds. */
export interface Round {
  readonly removes: readonly Forward[];
  readonly adds: readonly Forward[];
}

/**
 * The round that makes the host agree with `desired`. `onHost` is everything that may be on the
 * host; while `inSync` it is exactly what is there, otherwise (after a failure, the host may have
 * restarted empty) every desired forward is sent again: adds are idempotent on the host.
 */
export function planRound(desired: PortSet, onHost: PortSet, inSync: boolean): Round {
  const removes = [...onHost].filter(([key]) => !desired.has(key)).map(([, f]) => f);
  const adds = [...desired].filter(([key]) => !inSync || !onHost.has(key)).map(([, f]) => f);
  return { removes, adds };
}

/** Exponential back-off with jitter: `backoffDelay` scaled by a factor in [1 - jitter, 1 + jitter]. */
export function retryDelay(attempt: number, backoff: VtunnelSinkOptions['backoff'] = {}, random = Math.random): number {
  return jitteredDelay(attempt, backoff, random);
}

/**
 * Publishes the agent's forwards to Rancher Desktop's host privileged service over the vtunnel.
 * A reconcile loop between `desired` (the deltas applied) and what is on the host: whenever they
 * differ and no write is in flight, one round sends one `remove:true` and/or one `remove:false`
 * message (each split into several when over `maxMessageBytes`, 64 KiB, the host side's limit).
 * Changes that arrive during a round are folded into the next one.
 *
 *   deltas:   a-bc----------|
 *   sends:    +a at 0; +b+c at 3 (b and c wait for the first round and share the second);
 *             -a-b-c at 14                                  (each send answers after 3 frames)
 *   reports:  ---w--w----------(x|)                         w = wrote, x = withdrawn
 *
 * A failed round reports `failed` and is retried with back-off; the retry re-sends the whole
 * desired set, plus removes for anything that may still be on the host. `resyncMs` after the
 * last successful round, the whole desired set is sent again and reported as `resent`, so a host
 * end that restarted empty is repaired within that time. When the input completes, everything is
 * withdrawn (bounded by `withdrawTimeoutMs`) and the sink completes.
 */
export function vtunnelSink(opts: VtunnelSinkOptions): Sink {
  const address = opts.address ?? vtunnelDefaults.address;
  const sendTimeoutMs = opts.sendTimeoutMs ?? vtunnelDefaults.sendTimeoutMs;
  const maxMessageBytes = opts.maxMessageBytes ?? maxPortMappingBytes;
  const withdrawTimeoutMs = opts.withdrawTimeoutMs ?? vtunnelDefaults.withdrawTimeoutMs;
  const resyncMs = opts.resyncMs ?? vtunnelDefaults.resyncMs;
  const scheduler = opts.scheduler ?? asyncScheduler;
  const random = opts.random ?? Math.random;
  const log = moduleLogger('vtunnel', opts.logger);
  const send = opts.send ?? defaultSender(address, sendTimeoutMs);
  const connectAddrs = (): readonly ConnectAddr[] =>
    typeof opts.connectAddrs === 'function' ? opts.connectAddrs() : opts.connectAddrs;

  return (deltas$) =>
    new Observable<SinkReport>((subscriber) => {
      const desired = new Map<PortKey, Forward>();
      /** Everything that may be on the host: what was sent, and what a failed round may have left. */
      const onHost = new Map<PortKey, Forward>();
      let inSync = true;
      let failures = 0; // consecutive failed rounds, for the logs
      let attempt = 0; // the back-off attempt; restarts when shutdown begins
      let lastError = '';
      let round: Subscription | undefined; // the round in flight
      let retry: Subscription | undefined;
      let resync: Subscription | undefined; // the next periodic re-send, armed after each success
      let resyncing = false; // the round in flight is a periodic re-send
      let withdrawing: { readonly deadline: Subscription; removed: number } | undefined;

      /**
       * `forwards` as one message, or several when they would not fit in `maxMessageBytes`, each
       * bounded by `sendTimeoutMs`; `onHost` follows each message that succeeded.
       */
      const message = (remove: boolean, forwards: readonly Forward[]): Observable<never> =>
        forwards.length === 0
          ? EMPTY
          : defer(() => concat(...splitPortMapping(remove, forwards, connectAddrs(), maxMessageBytes).map((part) => sendPart(remove, part.line, part.forwards))));

      const sendPart = (remove: boolean, line: string, forwards: readonly Forward[]): Observable<never> =>
        defer(() => send(line)).pipe(
          ignoreElements(),
          timeout({
            first: sendTimeoutMs,
            scheduler,
            with: () => throwError(() => new Error(`no answer from the vtunnel peer within ${String(sendTimeoutMs)} ms`)),
          }),
          tap({
            complete: () => {
              for (const f of forwards) {
                if (remove) onHost.delete(portKey(f));
                else onHost.set(portKey(f), f);
              }
            },
          }),
        );

      const reconcile = (): void => {
        if (round !== undefined || retry !== undefined || subscriber.closed) return;
        const plan = planRound(desired, onHost, inSync);
        if (plan.removes.length === 0 && plan.adds.length === 0) {
          inSync = true;
          if (withdrawing) finishWithdraw();
          return;
        }
        const isWithdraw = withdrawing !== undefined;
        const isResync = resyncing;
        resyncing = false;
        resync?.unsubscribe();
        resync = undefined;
        // Set before subscribing: a synchronous transport finishes the round inside `subscribe`.
        const current = new Subscription();
        round = current;
        current.add(
          concat(message(true, plan.removes), message(false, plan.adds)).subscribe({
            error: (err: unknown) => {
              round = undefined;
              failed(plan, err);
            },
            complete: () => {
              round = undefined;
              succeeded(plan, isWithdraw, isResync);
              reconcile();
              armResync();
            },
          }),
        );
      };

      /** Once idle and in sync with something published, schedule the next full re-send. */
      const armResync = (): void => {
        if (resyncMs <= 0 || round !== undefined || retry !== undefined || withdrawing || desired.size === 0 || subscriber.closed) return;
        resync?.unsubscribe();
        resync = timer(resyncMs, scheduler).subscribe(() => {
          resync = undefined;
          inSync = false;
          resyncing = true;
          reconcile();
        });
      };

      const succeeded = (plan: Round, isWithdraw: boolean, isResync: boolean): void => {
        if (failures > 0) {
          log.info(
            { address, forwards: plan.adds.length, removed: plan.removes.length, failures },
            `reached the vtunnel peer again; re-sent ${count(plan.adds.length, 'forward')}`,
          );
        }
        failures = 0;
        attempt = 0;
        lastError = '';
        inSync = true;
        if (isWithdraw && withdrawing) withdrawing.removed += plan.removes.length;
        else if (isResync && plan.removes.length === 0) subscriber.next({ sink: 'vtunnel', type: 'resent', count: plan.adds.length });
        else subscriber.next({ sink: 'vtunnel', type: 'wrote', added: plan.adds, removed: plan.removes });
      };

      const failed = (plan: Round, err: unknown): void => {
        // The adds may or may not have arrived: count them as possibly on the host.
        for (const f of plan.adds) onHost.set(portKey(f), f);
        inSync = false;
        failures += 1;
        attempt += 1;
        lastError = errorMessage(err);
        const retryInMs = retryDelay(attempt, opts.backoff, random);
        const ports = plan.adds.length + plan.removes.length;
        // The first failure of an outage is news; its repeats are not.
        log[failures === 1 ? 'warn' : 'debug'](
          { address, err: lastError, ports, failures, retryInMs },
          `could not ${describeRound(plan)} over the vtunnel (${address}): ${lastError}; retrying in ${String(retryInMs)} ms`,
        );
        subscriber.next({ sink: 'vtunnel', type: 'failed', error: lastError, retryInMs });
        retry = timer(retryInMs, scheduler).subscribe(() => {
          retry = undefined;
          reconcile();
        });
      };

      const startWithdraw = (): void => {
        desired.clear();
        resync?.unsubscribe();
        resync = undefined;
        // Shutdown should not sit out a long back-off: try now, and back off afresh from here.
        retry?.unsubscribe();
        retry = undefined;
        attempt = 0;
        withdrawing = {
          removed: 0,
          deadline: timer(withdrawTimeoutMs, scheduler).subscribe(() => {
            log.warn(
              { address, forwards: onHost.size, err: lastError },
              `gave up withdrawing ${count(onHost.size, 'forward')} from the vtunnel peer (${address}) after ${String(withdrawTimeoutMs)} ms` +
                `${lastError ? ` (last error: ${lastError})` : ''}; the host may keep them until it restarts`,
            );
            subscriber.complete();
          }),
        };
        // An in-flight round finishes first (its adds must not overtake our removes); then reconcile.
        reconcile();
      };

      const finishWithdraw = (): void => {
        subscriber.next({ sink: 'vtunnel', type: 'withdrawn', count: withdrawing?.removed ?? 0 });
        subscriber.complete();
      };

      const input = deltas$.subscribe({
        next: (delta) => {
          for (const f of delta.removed) desired.delete(portKey(f));
          for (const f of delta.added) desired.set(portKey(f), f);
          reconcile();
        },
        error: (err: unknown) => {
          subscriber.error(err);
        },
        complete: startWithdraw,
      });

      return () => {
        input.unsubscribe();
        round?.unsubscribe();
        retry?.unsubscribe();
        resync?.unsubscribe();
        withdrawing?.deadline.unsubscribe();
      };
    });
}

function defaultSender(address: string, timeoutMs: number): VtunnelSend {
  const target = parseVtunnelAddr(address);
  // Thrown at start-up, so a typo is reported once rather than as endless failed writes.
  if ('error' in target) throw new Error(`-vtunnelAddr ${JSON.stringify(address)}: ${target.error}`);
  if (target.kind === 'vsock') return vsockSender(target.cid, target.port, timeoutMs);
  return tcpSender(target.host, target.port, timeoutMs);
}

function describeRound({ removes, adds }: Round): string {
  const parts: string[] = [];
  if (removes.length > 0) parts.push(`remove ${count(removes.length, 'port')}`);
  if (adds.length > 0) parts.push(`add ${count(adds.length, 'port')}`);
  return parts.join(' and ');
}

function count(n: number, noun: string): string {
  return `${String(n)} ${noun}${n === 1 ? '' : 's'}`;
}
