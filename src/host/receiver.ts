import net from 'node:net';
import { defer, filter, map, merge, mergeMap, Observable, of, share, Subject, throwError, type SchedulerLike } from 'rxjs';
import { moduleLogger, type Logger } from '../log.js';
import type { BackoffOptions } from '../../operators/reconnectWithBackoff.js';
import { parseVtunnelAddr } from '../wire/vtunnelAddress.js';
import { manageBindings, type BindingEvent, type OpenProxy } from './bindings.js';
import { hostPort } from './targets.js';
import { maxPortMappingBytes } from '../wire/portMapping.js';
import { parsePortMapping, type HostBinding, type PortMapping } from '../wire/parsePortMapping.js';
import { proxyOpener, type ProxyOptions } from './proxy.js';

/**
 * `portstream host`, the host-side receiver, as a library: a TCP server that takes one
 * PortMapping per connection (docs/vtunnel-wire.md) and keeps one proxy per binding
 * (see `manageBindings` and `proxy.ts`).
 *
 *   const host = await startHostReceiver({ listen: '127.0.0.1:3040' });
 *   ...
 *   await host.close();
 */

/** Where the host receiver listens, how it bounds its clients, and how it stops and logs. */
export interface HostReceiverOptions {
  /** Where the agent's messages arrive: `HOST:PORT` (`[::1]:PORT`), or host and port (port 0: any). */
  readonly listen: string | { readonly host: string; readonly port: number };
  /** A message larger than this is dropped unread. */
  readonly maxMessageBytes?: number | undefined;
  /** A client must send its whole message within this; otherwise it is logged and disconnected. */
  readonly messageTimeoutMs?: number | undefined;
  /** Connections beyond this many at once are closed at once. */
  readonly maxClients?: number | undefined;
  readonly proxy?: ProxyOptions | undefined;
  /** Replaces the real proxies (tests). */
  readonly open?: OpenProxy | undefined;
  /** Back-off of a listen that fails (host port taken). */
  readonly backoff?: Pick<BackoffOptions, 'initialMs' | 'maxMs' | 'factor' | 'jitter'> | undefined;
  /** The random source of the jitter, in [0, 1) (tests pass a fixed one). */
  readonly random?: (() => number) | undefined;
  readonly scheduler?: SchedulerLike | undefined;
  /** Where it logs, through a child naming its module; without one it logs nothing. */
  readonly logger?: Logger | undefined;
  /** `startHostReceiver` only: aborting it closes the receiver, as `close()` does. */
  readonly signal?: AbortSignal | undefined;
}

/** The values the receiver uses for the options left out. */
export const receiverDefaults = { listen: '127.0.0.1:3040', messageTimeoutMs: 10_000, maxClients: 64 } as const;

/** At most one line per this long about connections turned away. */
const dropWarningMs = 10_000;

/** What the message server tells. `from` is the client's `ip:port`. */
export type ServerEvent =
  | { readonly type: 'listening'; readonly host: string; readonly port: number }
  | { readonly type: 'message'; readonly from: string; readonly mapping: PortMapping }
  | { readonly type: 'rejected'; readonly from: string; readonly error: string };

/** Everything the receiver tells: its server's events and what each message did to the bindings. */
export type HostEvent = ServerEvent | BindingEvent;

/** Splits `-listen`; the error is one line for the command line. */
export function parseListenAddr(listen: HostReceiverOptions['listen']): { host: string; port: number } | { error: string } {
  if (typeof listen !== 'string') return { host: listen.host, port: listen.port };
  const target = parseVtunnelAddr(listen);
  if ('error' in target) return { error: target.error.replace('HOST:PORT or vsock://CID:PORT', 'HOST:PORT') };
  if (target.kind === 'vsock') return { error: 'the host side listens on TCP only (HOST:PORT); AF_VSOCK is bridged to it by the host' };
  return { host: target.host, port: target.port };
}

/** What one connection has sent so far: the message is at most one line. */
export interface LineRead {
  readonly chunks: readonly Buffer[];
  readonly size: number;
}

/**
 * One chunk more of a connection (pure): `more` while no newline has come, `line` with the message
 * up to and including the first newline (anything after it is ignored), or `tooLarge` once it
 * passes `maxBytes`, which is never read further.
 */
export function readChunk(read: LineRead, chunk: Buffer, maxBytes: number): { readonly read: LineRead; readonly outcome: 'more' | 'line' | 'tooLarge' } {
  const newline = chunk.indexOf(10);
  const part = newline < 0 ? chunk : chunk.subarray(0, newline + 1);
  const size = read.size + part.length;
  if (size > maxBytes) return { read, outcome: 'tooLarge' };
  return { read: { chunks: [...read.chunks, part], size }, outcome: newline < 0 ? 'more' : 'line' };
}

/**
 * The message server alone: listens, reads one message per connection (up to the first newline,
 * or to the end of stream), parses it strictly, then half-closes. Bad input is logged once per
 * message and reported as `rejected`; it never ends the stream. Unsubscribing closes the server
 * and every client connection.
 */
export function portMappingServer(opts: HostReceiverOptions): Observable<ServerEvent> {
  const log = moduleLogger('host', opts.logger);
  const maxBytes = opts.maxMessageBytes ?? maxPortMappingBytes;
  const messageTimeoutMs = opts.messageTimeoutMs ?? receiverDefaults.messageTimeoutMs;
  const maxClients = opts.maxClients ?? receiverDefaults.maxClients;
  return defer(() => {
    const address = parseListenAddr(opts.listen);
    if ('error' in address) return throwError(() => new Error(`-listen ${JSON.stringify(opts.listen)}: ${address.error}`));
    // The server bounds the connections itself (maxConnections), so the reads need no bound of their own.
    return listenForClients(address, maxClients, log).pipe(
      mergeMap((event): Observable<ServerEvent> => (event.type === 'connection' ? readPortMapping(event.socket, { maxBytes, messageTimeoutMs, log }) : of(event))),
    );
  });
}

/**
 * The listening socket: `listening` once bound, then every connection. Connections beyond
 * `maxClients` at once are turned away, said at most once per interval with a count, so that a
 * local process that keeps every slot busy cannot flood the log. Unsubscribing closes the server
 * and every connection it accepted.
 */
function listenForClients(
  address: { readonly host: string; readonly port: number },
  maxClients: number,
  log: Logger,
): Observable<Extract<ServerEvent, { type: 'listening' }> | { readonly type: 'connection'; readonly socket: net.Socket }> {
  return new Observable((subscriber) => {
    const sockets = new Set<net.Socket>();
    const server = net.createServer();
    server.maxConnections = maxClients;
    let listening = false;
    server.on('connection', (socket) => {
      sockets.add(socket);
      socket.once('close', () => sockets.delete(socket));
      subscriber.next({ type: 'connection', socket });
    });
    let dropped = 0;
    let warnedAt = Number.NEGATIVE_INFINITY;
    server.on('drop', (data) => {
      dropped += 1;
      const now = Date.now();
      if (now - warnedAt < dropWarningMs) return;
      warnedAt = now;
      log.warn(
        { from: data?.remoteAddress, dropped },
        `too many connections at once (${String(server.maxConnections)}); turned away ${String(dropped)} since the last such line, the latest from ${String(data?.remoteAddress)}`,
      );
      dropped = 0;
    });
    server.on('error', (err) => {
      if (!listening) subscriber.error(new Error(`cannot listen on ${hostPort(address.host, address.port)}: ${err.message}`, { cause: err }));
      else log.error({ err: err.message }, `the receiver's socket reported: ${err.message}`);
    });
    server.listen({ host: address.host, port: address.port }, () => {
      listening = true;
      const bound = server.address() as net.AddressInfo;
      log.info({ address: hostPort(bound.address, bound.port) }, `portstream host: receiving PortMappings on ${hostPort(bound.address, bound.port)}`);
      subscriber.next({ type: 'listening', host: bound.address, port: bound.port });
    });
    return () => {
      server.close();
      for (const socket of sockets) socket.destroy();
      sockets.clear();
    };
  });
}

/**
 * One connection: its message (`message`, or `rejected` with what was wrong), then it completes.
 * A client that sends nothing complete within `messageTimeoutMs` is disconnected and rejected.
 */
function readPortMapping(socket: net.Socket, opts: { readonly maxBytes: number; readonly messageTimeoutMs: number; readonly log: Logger }): Observable<ServerEvent> {
  const { maxBytes, messageTimeoutMs, log } = opts;
  return new Observable<ServerEvent>((subscriber) => {
    const from = hostPort(socket.remoteAddress ?? 'unknown', socket.remotePort ?? 0);
    let read: LineRead = { chunks: [], size: 0 };
    let done = false;
    const reject = (error: string): void => {
      log.warn({ from, err: error }, `dropped a PortMapping from ${from}: ${error}`);
      subscriber.next({ type: 'rejected', from, error });
    };
    const finish = (): void => {
      done = true;
      // No reply on this wire: half-close, and let the client's end of stream close the socket.
      socket.end();
      const parsed = parsePortMapping(Buffer.concat(read.chunks), maxBytes);
      if (!parsed.ok) reject(parsed.error);
      else {
        const { mapping } = parsed;
        log.debug({ from, remove: mapping.remove, bindings: mapping.bindings.length }, `${mapping.remove ? 'remove' : 'add'} ${describeBindings(mapping.bindings)} (from ${from})`);
        subscriber.next({ type: 'message', from, mapping });
      }
    };
    const timer = setTimeout(() => {
      if (!done) reject(`sent no complete message within ${String(messageTimeoutMs)} ms; disconnected`);
      done = true;
      socket.destroy();
    }, messageTimeoutMs);
    socket.on('data', (chunk: Buffer) => {
      if (done) return; // anything after the message is read and ignored
      const next = readChunk(read, chunk, maxBytes);
      read = next.read;
      if (next.outcome === 'tooLarge') {
        done = true;
        reject(`message larger than the limit of ${String(maxBytes)} bytes`);
        socket.destroy();
      } else if (next.outcome === 'line') finish();
    });
    socket.once('end', () => {
      if (done) return;
      if (read.size > 0) {
        finish();
        return;
      }
      done = true;
      log.debug({ from }, `${from} connected and closed without sending anything`);
    });
    socket.on('error', (err) => {
      if (!done) log.debug({ from, err: err.message }, `the connection from ${from} failed: ${err.message}`);
      done = true;
    });
    socket.once('close', () => {
      clearTimeout(timer);
      subscriber.complete();
    });
    return () => {
      clearTimeout(timer);
    };
  });
}

/**
 * The whole receiver as a stream: the server's events, followed for each message by what it did
 * to the bindings. Subscribing starts it; unsubscribing closes every listener and connection.
 */
export function hostReceiver(opts: HostReceiverOptions): Observable<HostEvent> {
  const open = opts.open ?? proxyOpener({ ...opts.proxy, logger: opts.proxy?.logger ?? opts.logger });
  return defer(() => {
    const server$ = portMappingServer(opts).pipe(share());
    const bindings$ = server$.pipe(
      filter((e): e is Extract<ServerEvent, { type: 'message' }> => e.type === 'message'),
      map((e) => e.mapping),
      manageBindings({
        open,
        logger: opts.logger,
        ...(opts.backoff && { backoff: opts.backoff }),
        ...(opts.random && { random: opts.random }),
        ...(opts.scheduler && { scheduler: opts.scheduler }),
      }),
    );
    return merge(server$, bindings$);
  });
}

/** One binding as the receiver holds it. */
export interface BindingStatus {
  readonly binding: HostBinding;
  readonly target: string;
  /** `retrying`: the host port is taken (or the address missing); the listen is retried with back-off. */
  readonly state: 'listening' | 'retrying';
  readonly error?: string;
}

/** A running host receiver, as `startHostReceiver` resolves it. */
export interface HostReceiver {
  /** Where it receives, as bound (the port is the real one when 0 was asked for). */
  readonly host: string;
  readonly port: number;
  /** Every event from now on (hot). */
  readonly events$: Observable<HostEvent>;
  /** The bindings now, by `proto/HostIp:HostPort`. */
  bindings(): ReadonlyMap<string, BindingStatus>;
  /** Settles when the receiver stops: resolves after `close()`, rejects if it failed. */
  readonly done: Promise<void>;
  /** Closes the receiver, every listener and every connection. */
  close(): Promise<void>;
}

/** Starts the receiver; resolves once it listens, rejects when it cannot. */
export function startHostReceiver(opts: HostReceiverOptions): Promise<HostReceiver> {
  return new Promise((resolve, reject) => {
    const events = new Subject<HostEvent>();
    const state = new Map<string, BindingStatus>();
    let started = false;
    let settle: { resolve: () => void; reject: (err: unknown) => void } | undefined;
    const done = new Promise<void>((res, rej) => (settle = { resolve: res, reject: rej }));
    done.catch(() => undefined); // observed through `done` by whoever wants it

    const subscription = hostReceiver(opts).subscribe({
      next: (event) => {
        switch (event.type) {
          case 'listening':
            if (!started) {
              started = true;
              resolve({ host: event.host, port: event.port, events$: events.asObservable(), bindings: () => new Map(state), done, close });
            }
            break;
          case 'bound':
            state.set(event.key, { binding: event.binding, target: event.target, state: 'listening' });
            break;
          case 'conflict':
            state.set(event.key, { binding: event.binding, target: event.target, state: 'retrying', error: event.error });
            break;
          case 'retargeted': {
            const old = state.get(event.key);
            if (old) state.set(event.key, { ...old, target: event.target });
            break;
          }
          case 'unbound':
            state.delete(event.key);
            break;
          default:
            break;
        }
        events.next(event);
      },
      error: (err: unknown) => {
        const error = err instanceof Error ? err : new Error(String(err));
        state.clear();
        events.error(error);
        settle?.reject(error);
        if (!started) reject(error);
      },
      complete: () => {
        events.complete();
        settle?.resolve();
      },
    });

    const { signal } = opts;
    const onAbort = (): void => {
      const reason: unknown = signal?.reason;
      if (!started) reject(reason instanceof Error ? reason : new Error(`aborted (${String(reason)})`));
      void close();
    };
    if (signal?.aborted) onAbort();
    else signal?.addEventListener('abort', onAbort, { once: true });

    async function close(): Promise<void> {
      signal?.removeEventListener('abort', onAbort);
      subscription.unsubscribe();
      state.clear();
      events.complete();
      settle?.resolve();
      // Listeners release their ports at once; give the close callbacks a turn to run.
      await new Promise((res) => setImmediate(res));
    }
  });
}

function describeBindings(bindings: readonly HostBinding[]): string {
  if (bindings.length === 0) return 'no bindings';
  const shown = bindings.slice(0, 5).map((b) => `${b.protocol}/${hostPort(b.hostIp, b.hostPort)}`);
  return shown.join(', ') + (bindings.length > 5 ? ` and ${String(bindings.length - 5)} more` : '');
}
