import { networkInterfaces } from 'node:os';
import { asyncScheduler, defer, EMPTY, endWith, map, Observable, timer, type OperatorFunction, type SchedulerLike } from 'rxjs';
import { keyedLoop } from '../reconcileLoop.js';
import { moduleLogger, type Logger } from '../log.js';
import { errorMessage } from '../errors.js';
import type { Backoff } from '../backoff.js';
import { sharedGet } from '../sharedMap.js';
import { initialBindingState, reconcileBindings, type BindingCommand, type BindingEvent, type BindingInput, type BindingState } from './bindingsReconcile.js';

/** The commands that belong to one binding. */
type KeyedCommand = Extract<BindingCommand, { readonly key: string }>;

export type { BindingEvent } from './bindingsReconcile.js';
import type { HostBinding, PortMapping } from '../wire/parsePortMapping.js';

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

/** How `manageBindings` opens proxies, finds the host's own addresses, retries a taken port and logs. */
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

/**
 * Applies PortMapping messages to the host: one proxy per binding, keyed by
 * `proto/HostIp:HostPort`.
 *
 *   mappings:  a--a--r|      a = add tcp/0.0.0.0:8080, r = remove it (the second a is a no-op)
 *   open:      ^-----!       the proxy lives from the add to the remove (it listens after 1 frame)
 *   events:    -b----u|      b = bound, u = unbound
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
 *
 * The decisions are `reconcileBindings` (pure, bindingsReconcile.ts), run by `keyedLoop`: its
 * commands run per binding. A proxy's `target()` reads the
 * latest state, so a retarget needs no reopening. A throw in `open` is a failed listen, retried
 * like any other; a throw anywhere else (`localAddresses`, the logger) becomes the stream's error.
 */
export function manageBindings(opts: ManageBindingsOptions): OperatorFunction<PortMapping, BindingEvent> {
  const scheduler = opts.scheduler ?? asyncScheduler;
  const random = opts.random ?? Math.random;
  const log = moduleLogger('host', opts.logger);
  const localAddresses = opts.localAddresses ?? interfaceAddresses;

  return (mappings$) =>
    defer(() => {
      let latest = initialBindingState;
      const runBinding = (c: KeyedCommand): Observable<BindingInput> => {
        if (c.kind === 'open') {
          const { key, gen } = c;
          const first = sharedGet(latest.active, key)?.target ?? '';
          // Asked again for every connection: the latest state's target, so a retarget applies at once.
          const target = (): string => sharedGet(latest.active, key)?.target ?? first;
          return proxyAnswers(() => opts.open(c.binding, target), {
            listening: { kind: 'listening', key, gen },
            ended: { kind: 'ended', key, gen },
            failed: (err) => ({ kind: 'openFailed', key, gen, error: errorMessage(err), random: random() }),
          });
        }
        if (c.kind === 'wait') return timer(c.ms, scheduler).pipe(map((): BindingInput => ({ kind: 'retry', key: c.key, gen: c.gen })));
        return EMPTY;
      };
      const toInput = (mapping: PortMapping): BindingInput => ({ kind: 'mapping', mapping, local: mapping.remove ? new Set() : localAddresses() });
      return keyedLoop(mappings$.pipe(map(toInput), endWith<BindingInput>({ kind: 'stop' })), {
        initial: initialBindingState,
        reduce: (state: BindingState, input: BindingInput) => reconcileBindings(state, input, opts.backoff),
        keyed: (c: BindingCommand): c is KeyedCommand => c.kind === 'open' || c.kind === 'wait' || c.kind === 'close',
        run: runBinding,
        output: (c: BindingCommand) => (c.kind === 'event' ? c.event : undefined),
        log,
        onState: (state: BindingState) => (latest = state),
      });
    });
}

/** What one proxy's run gives back to the reducer, for each thing it can do. */
interface Answers {
  readonly listening: BindingInput;
  readonly ended: BindingInput;
  readonly failed: (error: unknown) => BindingInput;
}

/**
 * A proxy's events as reducer inputs: `listening` for each time it listens, `ended` if it ever
 * completes, `failed` (then the end) if it errors or `open` throws. What `defer`, `map`, `endWith`
 * and `catchError` would do, in one subscriber rather than four: a burst of 1,600 bindings opens
 * 1,600 of these at once.
 */
function proxyAnswers(open: () => Observable<ProxyEvent>, answers: Answers): Observable<BindingInput> {
  return new Observable<BindingInput>((subscriber) => {
    const fail = (error: unknown): void => {
      subscriber.next(answers.failed(error));
      subscriber.complete();
    };
    try {
      return open().subscribe({
        next: () => { subscriber.next(answers.listening); },
        error: fail,
        complete: () => {
          subscriber.next(answers.ended);
          subscriber.complete();
        },
      });
    } catch (error: unknown) {
      fail(error);
      return undefined;
    }
  });
}

function interfaceAddresses(): ReadonlySet<string> {
  return new Set(Object.values(networkInterfaces()).flatMap((addrs) => (addrs ?? []).map((a) => a.address)));
}
