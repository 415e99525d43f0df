import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { createServer, isIPv6, type Server, type Socket } from 'node:net';
import { asyncScheduler, EMPTY, endWith, map, Observable, timer, type SchedulerLike } from 'rxjs';
import { keyedLoop } from '../reconcileLoop.js';
import { moduleLogger, type Logger } from '../log.js';
import type { Forward } from '../model.js';
import type { Sink } from './sink.js';
import { initialListenerState, reconcileListeners, type BindFailure, type ListenerCommand, type ListenerConfig, type ListenerInput, type ListenerState } from './listenersReconcile.js';

/** The commands that belong to one port. */
type PortCommand = Extract<ListenerCommand, { readonly key: string }>;
import { errorMessage } from '../errors.js';

/**
 * Placeholder listeners: a port exists in the VM only so
 * that WSL's localhost forwarding notices it. TCP gets a listening socket on HostIp:HostPort that
 * never reads and resets every connection at once; UDP gets a bound socket; `::` placeholders are
 * IPv6-only, so that `0.0.0.0` and `::` on one port coexist as the two families' rules do.
 */

/**
 * How a placeholder is held: subscribing binds it and emits (any value) once it is bound; binding that fails
 * errors (with the error's `code`, e.g. EADDRINUSE); unsubscribing closes it at once.
 * `nodePlaceholders` is the real one; tests script their own.
 */
export interface PlaceholderBinder {
  /** Holds a placeholder for `forward` while subscribed; errors when it cannot be bound. */
  hold(forward: Forward): Observable<unknown>;
}

/** How the listener sink binds placeholders, retries a port and logs. */
export interface ListenerSinkOptions {
  readonly binder?: PlaceholderBinder | undefined;
  /** How long to wait before trying a port again that could not be bound (e.g. in use). Default 2 s. */
  readonly retryMs?: number | undefined;
  /** Each wait is scaled by a random factor in [1 - jitter, 1 + jitter], so many ports do not retry in step. Default 0.2. */
  readonly jitter?: number | undefined;
  /** The random source of the jitter, in [0, 1) (tests pass a fixed one). */
  readonly random?: (() => number) | undefined;
  /** Where it logs, through a child naming its module; without one it logs nothing. */
  readonly logger?: Logger | undefined;
  readonly scheduler?: SchedulerLike | undefined;
}

/** The values the listener sink uses for the options left out. */
export const listenerDefaults = { retryMs: 2000, jitter: 0.2 } as const;

/**
 * The listener sink: one placeholder per forward, opened when it is added and closed at once when
 * it is removed. A port that something in the VM already listens on (EADDRINUSE) needs no
 * placeholder, so that is not an error: it is noted once and tried again every `retryMs`, so the
 * placeholder takes the port when it frees up. Other bind errors (an address the VM does not have,
 * a privileged port) are reported as `failed` and retried the same way. When the input completes
 * every placeholder is closed and the sink reports `withdrawn`. A `wrote` report means the delta is
 * applied: removed placeholders are closed, added ones are opening (the bind completes within a
 * tick or two, after the report) or waiting for their port.
 *
 *   deltas:   --a-----------b---------|        a = +80, b = −80
 *   hold 80:  --^-----------!                  the placeholder, from its add to its remove
 *   reports:  --w-----------w---------(d|)     w = wrote, d = withdrawn (count of placeholders)
 *
 * The decisions are `reconcileListeners` (pure, listenersReconcile.ts), run by `keyedLoop`: its
 * commands run per port (a new hold, wait or close replaces what that port was doing). A throw in the binder is a failed bind, retried like any other; a
 * throw anywhere else (the logger, say) becomes the sink's error notification.
 */
export function listenerSink(opts: ListenerSinkOptions = {}): Sink {
  const binder = opts.binder ?? nodePlaceholders();
  const log = moduleLogger('listeners', opts.logger);
  const scheduler = opts.scheduler ?? asyncScheduler;
  const config: ListenerConfig = { retryMs: opts.retryMs ?? listenerDefaults.retryMs, jitter: opts.jitter ?? listenerDefaults.jitter };
  const random = opts.random ?? Math.random;

  /**
   * One port's commands: holding its placeholder, or waiting to try again, until the next. A hold
   * lasts as long as the placeholder, thousands of them at once, so it is one subscriber rather
   * than `defer`, `map` and `catchError`: 1.2 KB less heap each, a fifth of what one costs.
   */
  const runPort = (command: PortCommand): Observable<ListenerInput> => {
    if (command.kind === 'hold') {
      const { key, gen } = command;
      return new Observable<ListenerInput>((subscriber) => {
        const failed = (error: unknown): void => {
          subscriber.next({ kind: 'bindFailed', key, gen, failure: bindFailure(error), random: random() });
          subscriber.complete();
        };
        try {
          return binder.hold(command.forward).subscribe({
            next: () => { subscriber.next({ kind: 'bound', key, gen }); },
            error: failed,
            complete: () => { subscriber.complete(); },
          });
        } catch (error: unknown) {
          failed(error);
          return undefined;
        }
      });
    }
    if (command.kind === 'wait') return timer(command.ms, scheduler).pipe(map((): ListenerInput => ({ kind: 'retry', key: command.key, gen: command.gen })));
    return EMPTY;
  };

  return (deltas$) =>
    keyedLoop(deltas$.pipe(map((delta): ListenerInput => ({ kind: 'delta', delta })), endWith<ListenerInput>({ kind: 'stop' })), {
      initial: initialListenerState,
      reduce: (state: ListenerState, input: ListenerInput) => reconcileListeners(state, input, config),
      keyed: (c: ListenerCommand): c is PortCommand => c.kind === 'hold' || c.kind === 'wait' || c.kind === 'close',
      run: runPort,
      output: (c: ListenerCommand) => (c.kind === 'report' ? c.report : undefined),
      log,
    });
}

function bindFailure(error: unknown): BindFailure {
  const code = errorCode(error);
  return { code: typeof code === 'string' ? code : undefined, message: errorMessage(error) };
}

/** The real placeholders, with node:net and node:dgram. */
export function nodePlaceholders(): PlaceholderBinder {
  return { hold: (forward) => (forward.protocol === 'tcp' ? tcpPlaceholder(forward) : udpPlaceholder(forward)) };
}

/**
 * A listening TCP socket that never reads: `pauseOnConnect` hands over each connection without
 * starting to read it, and `resetAndDestroy()` (Node ≥ 16.17/18.3) closes it with SO_LINGER 0,
 * so the peer gets a RST at once and nothing it sent is ever read. The backlog is small: nothing
 * should connect, and what does is reset as soon as it is accepted.
 */
function tcpPlaceholder(forward: Forward): Observable<void> {
  return new Observable<void>((subscriber) => {
    const server: Server = createServer({ pauseOnConnect: true }, reset);
    server.on('error', (error) => {
      subscriber.error(error);
    });
    server.listen({ host: forward.hostIp, port: forward.hostPort, ipv6Only: forward.hostIp === '::', backlog: 16 }, () => {
      subscriber.next();
    });
    return () => {
      server.close();
    };
  });
}

function reset(socket: Socket): void {
  socket.on('error', ignore);
  socket.resetAndDestroy();
}

/**
 * A bound UDP socket. node:dgram has no way to bind without receiving (no pause, and recvStop is
 * internal), so this socket never *handles* data instead: it has no `message` listener, so each
 * datagram that arrives is dropped as soon as libuv hands it over, never buffered in the agent
 * and never answered; and its kernel receive buffer is set to the minimum, so a flood cannot
 * park memory in the kernel either. (A connected UDP socket would make the kernel refuse other
 * peers, but it no longer looks like a bound port to whoever scans /proc/net/udp.)
 */
function udpPlaceholder(forward: Forward): Observable<void> {
  return new Observable<void>((subscriber) => {
    const ipv6 = isIPv6(forward.hostIp);
    const socket: UdpSocket = createSocket({ type: ipv6 ? 'udp6' : 'udp4', ipv6Only: forward.hostIp === '::', recvBufferSize: 1 });
    let open = true;
    socket.on('error', (error) => {
      subscriber.error(error);
    });
    socket.on('close', () => (open = false));
    socket.bind({ address: forward.hostIp, port: forward.hostPort }, () => {
      subscriber.next();
    });
    return () => {
      if (!open) return;
      open = false;
      try {
        socket.close();
      } catch {
        // already closed after a bind error
      }
    };
  });
}

function ignore(): void {
  // a reset connection may still report its own reset; nothing to do
}

function errorCode(error: unknown): unknown {
  return (error as { code?: unknown } | null)?.code;
}
