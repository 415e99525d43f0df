import { networkInterfaces } from 'node:os';
import { asyncScheduler, defer, Observable, retry, Subscription, tap, timer, type OperatorFunction, type SchedulerLike } from 'rxjs';
import { moduleLogger, type Logger } from '../log.js';
import { errorMessage } from '../errors.js';
import { jitteredDelay, type Backoff } from '../backoff.js';
import { bindingKey, hostPort, loopsBack, targetFor, type HostBinding, type PortMapping } from './portMapping.js';

/** What a running proxy tells: it is listening (again, after a retry). */
export interface ProxyEvent {
  readonly type: 'listening';
}

/**
 * Opens one binding's proxy: subscribing listens on `hostIp:hostPort`, an error means the listen
 * failed (the port is taken, the address is not on this host), and unsubscribing closes the
 * listener and every connection or flow it carries. `target()` is the VM address to connect to,
 * asked again for every new connection or flow, so a re-sent add with a new VM address takes
 * effect without closing anything.
 */
export type OpenProxy = (binding: HostBinding, target: () => string) => Observable<ProxyEvent>;

/** What happened to the host's bindings, for logs, tests and library users. */
export type BindingEvent =
  | { readonly type: 'bound'; readonly key: string; readonly binding: HostBinding; readonly target: string }
  | { readonly type: 'retargeted'; readonly key: string; readonly target: string }
  | {
      readonly type: 'conflict';
      readonly key: string;
      readonly binding: HostBinding;
      readonly target: string;
      readonly error: string;
      readonly retryInMs: number;
    }
  | { readonly type: 'unbound'; readonly key: string }
  | { readonly type: 'skipped'; readonly key: string; readonly reason: string };

/** How `manageBindings` opens proxies, retries a taken port and logs. */
export interface ManageBindingsOptions {
  readonly open: OpenProxy;
  /** This host's own addresses, asked once per message; defaults to every interface's. */
  readonly localAddresses?: (() => ReadonlySet<string>) | undefined;
  readonly backoff?: Backoff | undefined;
  readonly random?: (() => number) | undefined;
  readonly scheduler?: SchedulerLike | undefined;
  /** Where it logs, through a child naming its module; without one it logs nothing. */
  readonly logger?: Logger | undefined;
}

interface Active {
  readonly binding: HostBinding;
  target: string;
  listening: boolean;
  subscription: Subscription;
}

/**
 * Applies PortMapping messages to the host: one proxy per binding, keyed by
 * `proto/HostIp:HostPort`.
 *
 *   mappings:  a----a'---r--|       a = add tcp/0.0.0.0:8080, a' = the same again, r = remove it
 *   open:      ^---------!          the proxy lives from the add to the remove (a' is a no-op)
 *   events:    b---------u--|       b = bound, u = unbound
 *
 * - An add of a binding that exists is a no-op, unless the VM address changed: then new
 *   connections go to the new address (`retargeted`) and nothing is closed.
 * - A listen that fails (host port taken) is retried with back-off until it succeeds or the
 *   binding is removed; the first failure logs a warning, repeats log at debug.
 * - A binding with no VM address of its family is skipped with one log line, and so is one
 *   whose VM address is this host's own and would send every connection back to itself. The
 *   same add sent again (the agent re-sends its whole state) is skipped quietly, until the
 *   reason changes or the binding is removed.
 * - A remove of an unknown binding is fine (adds are idempotent, removes too).
 * - When the input completes, every proxy is closed and the stream completes.
 */
export function manageBindings(opts: ManageBindingsOptions): OperatorFunction<PortMapping, BindingEvent> {
  const scheduler = opts.scheduler ?? asyncScheduler;
  const random = opts.random ?? Math.random;
  const log = moduleLogger('host', opts.logger);
  const localAddresses = opts.localAddresses ?? interfaceAddresses;
  const delayOf = (attempt: number): number => jitteredDelay(attempt, opts.backoff, random);

  return (mappings$) =>
    new Observable<BindingEvent>((subscriber) => {
      const active = new Map<string, Active>();
      /** Bindings skipped, with why: the agent re-sends its whole state every few seconds. */
      const skipped = new Map<string, string>();

      /** One warning per binding and reason, not one per re-send of the same add. */
      const skip = (binding: HostBinding, reason: string): void => {
        const key = bindingKey(binding);
        if (skipped.get(key) === reason) {
          log.debug({ key }, `still skipping ${key}: ${reason}`);
          return;
        }
        skipped.set(key, reason);
        log.warn({ key }, `skipping ${key}: ${reason}`);
        subscriber.next({ type: 'skipped', key, reason });
      };

      const add = (binding: HostBinding, target: string): void => {
        const key = bindingKey(binding);
        const existing = active.get(key);
        if (existing) {
          if (existing.target === target) {
            log.debug({ key }, `${key} is already bound; nothing to do`);
          } else {
            log.info({ key, from: existing.target, to: target }, `${key}: the VM address changed from ${existing.target} to ${target}; new connections go there`);
            existing.target = target;
            subscriber.next({ type: 'retargeted', key, target });
          }
          return;
        }
        const entry: Active = { binding, target, listening: false, subscription: new Subscription() };
        active.set(key, entry);
        let attempt = 0;
        entry.subscription.add(
          defer(() => opts.open(binding, () => entry.target))
            .pipe(
              tap(() => {
                if (entry.listening) return;
                entry.listening = true;
                log.info(
                  { key, target: entry.target, retries: attempt },
                  `listening on ${hostPort(binding.hostIp, binding.hostPort)} (${binding.protocol}), forwarding to ${hostPort(entry.target, binding.hostPort)}` +
                    (attempt > 0 ? ` after ${count(attempt, 'retry', 'retries')}` : ''),
                );
                attempt = 0;
                subscriber.next({ type: 'bound', key, binding, target: entry.target });
              }),
              retry({
                delay: (err: unknown) => {
                  entry.listening = false;
                  attempt += 1;
                  const retryInMs = delayOf(attempt);
                  const error = errorMessage(err);
                  log[attempt === 1 ? 'warn' : 'debug'](
                    { key, err: error, attempt, retryInMs },
                    `cannot listen on ${hostPort(binding.hostIp, binding.hostPort)} (${binding.protocol}): ${error}; retrying in ${String(retryInMs)} ms until it is free or removed`,
                  );
                  subscriber.next({ type: 'conflict', key, binding, target: entry.target, error, retryInMs });
                  return timer(retryInMs, scheduler);
                },
              }),
            )
            .subscribe({
              complete: () => {
                // A proxy never ends by itself; if one does, forget it so the next add opens it again.
                if (active.get(key) === entry) active.delete(key);
                log.warn({ key }, `the proxy for ${key} stopped by itself; a new add will open it again`);
                subscriber.next({ type: 'unbound', key });
              },
            }),
        );
      };

      const remove = (binding: HostBinding): void => {
        const key = bindingKey(binding);
        skipped.delete(key);
        const entry = active.get(key);
        if (!entry) {
          log.debug({ key }, `${key} is not bound; nothing to remove`);
          return;
        }
        active.delete(key);
        entry.subscription.unsubscribe();
        log.info({ key }, `closed ${hostPort(binding.hostIp, binding.hostPort)} (${binding.protocol}) and its connections`);
        subscriber.next({ type: 'unbound', key });
      };

      const input = mappings$.subscribe({
        next: (mapping) => {
          const local = mapping.remove ? new Set<string>() : localAddresses();
          for (const binding of mapping.bindings) {
            if (mapping.remove) {
              remove(binding);
              continue;
            }
            const target = targetFor(binding, mapping.connectAddrs);
            if (target === undefined) {
              const family = binding.hostIp.includes(':') ? 'IPv6' : 'IPv4';
              skip(binding, `the VM sent no usable ${family} connect address (${mapping.connectAddrs.map((a) => `${a.ip}/${String(a.prefix)}`).join(', ') || 'none'})`);
              continue;
            }
            if (loopsBack(binding, target, local)) {
              skip(binding, `its VM address ${target} is this host's own, so ${hostPort(binding.hostIp, binding.hostPort)} would forward to itself`);
              continue;
            }
            skipped.delete(bindingKey(binding));
            add(binding, target);
          }
        },
        error: (err: unknown) => {
          subscriber.error(err);
        },
        complete: () => {
          closeAll();
          subscriber.complete();
        },
      });

      const closeAll = (): void => {
        for (const entry of active.values()) entry.subscription.unsubscribe();
        active.clear();
      };

      return () => {
        input.unsubscribe();
        closeAll();
      };
    });
}

function count(n: number, one: string, many: string): string {
  return `${String(n)} ${n === 1 ? one : many}`;
}

function interfaceAddresses(): ReadonlySet<string> {
  return new Set(Object.values(networkInterfaces()).flatMap((addrs) => (addrs ?? []).map((a) => a.address)));
}
