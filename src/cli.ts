import { existsSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { delimiter, join } from 'node:path';
import { firstValueFrom, ReplaySubject, type Observable } from 'rxjs';
import { createAgent, type AgentPlan, type Route } from './agent.js';
import { agentHelp, agentUsage, parseConfig, type AgentConfig } from './config.js';
import { moduleLogger, type Logger } from './log.js';
import { cliLogger } from './cliLogger.js';
import { logPane } from './sinks/logPane.js';
import { version } from './version.js';
import type { SourceEvent } from './model.js';
import type { Sink } from './sinks/sink.js';
import { tableSink } from './sinks/table.js';
import { listenerSink } from './sinks/listeners.js';
import { hostSwitchSink } from './sinks/hostswitch.js';
import { vtunnelSink } from './sinks/vtunnel.js';
import { addressAddrs, interfaceAddrs, loopbackSink } from './loopback/sink.js';
import { connectAddrsOf } from './wire/connectAddrs.js';
import { decideRoutes, type Detected, type SinkKind, type SourceKind, type Wiring } from './wiring.js';
import { errorMessage } from './errors.js';
import { ioPolled } from './ioPolled.js';
import { yieldEach } from '../operators/yieldEach.js';
import type { ConnectionReporter } from './status/observer.js';
import type { StatusEndpoint } from './status/endpoint.js';

/** The process's streams and environment, passed in so tests can run the CLI in-process. */
export interface Io {
  readonly stdout: NodeJS.WritableStream & { isTTY?: boolean };
  readonly stderr: NodeJS.WritableStream;
  readonly env: NodeJS.ProcessEnv;
  /** Emits when the process is asked to stop (SIGTERM, SIGINT). */
  readonly stop$: Observable<unknown>;
}

/** Runs the command line; resolves to the exit code. */
export async function runCli(argv: readonly string[], io: Io): Promise<number> {
  // The host side is a different program; an agent does not load it.
  if (argv[0] === 'host') return (await import('./host/cli.js')).runHost(argv.slice(1), io);
  if (argv[0] === 'status') return (await import('./status/command.js')).runStatus(argv.slice(1), io);
  if (argv.length === 1 && (argv[0] === '-version' || argv[0] === '--version')) {
    io.stdout.write(`portstream ${version()}\n`);
    return 0;
  }
  const parsed = parseConfig(argv);
  if (!parsed.ok) {
    if (parsed.help) {
      io.stdout.write(agentHelp());
      return 0;
    }
    io.stderr.write(`portstream: ${parsed.error}\n${agentUsage()}`);
    return 2;
  }
  const config = parsed.config;
  const cliLog = cliLogger(io.env, config.debug);
  const wiring = decideRoutes(config, detect(config, io));
  const below = logsBelowTable(wiring, io, config.debug);
  const logger = below?.logger ?? cliLog;
  const logs = below?.lines$;
  const log = moduleLogger('agent', logger);
  for (const notice of wiring.notices) log.info(notice);
  let sources: Partial<Record<SourceKind, Observable<SourceEvent>>>;
  let routes: Route[];
  let status: StatusEndpoint | undefined;
  try {
    // Imported only when asked for: prom-client and its collectors are memory an agent without it does not need.
    if (config.statusAddr) status = await (await import('./status/endpoint.js')).startStatusEndpoint(config.statusAddr, logger);
    const connection = (kind: SourceKind) => status?.tracker.connection(kind);
    // Building a sink checks what only the machine can tell (e.g. whether AF_VSOCK is built).
    sources = Object.fromEntries(await Promise.all(wiring.sources.map(async (kind) => [kind, await sourceFor(kind, config, logger, connection(kind))] as const)));
    routes = wiring.routes.map((r) => ({ sink: sinkFor(r.sink, config, io, logger, logs), sources: r.sources, name: r.sink }));
  } catch (error) {
    await status?.close();
    io.stderr.write(`portstream: ${errorMessage(error)}\n`);
    return 2;
  }
  const code = routes.length === 0 ? await idle(io, log) : await run({ sources, routes, logger, ...(status && { observer: status.tracker.observer }) }, wiring, io, log);
  await status?.close();
  return code;
}

/**
 * Nothing to forward with these flags: stay up until stopped, as a service manager expects of
 * an agent (exiting at once would have it restarted in a loop).
 */
async function idle(io: Io, log: Logger): Promise<number> {
  log.info('nothing to forward with these flags; idle until stopped');
  await firstValueFrom(io.stop$, { defaultValue: undefined });
  return 0;
}

function run(plan: AgentPlan, wiring: Wiring, io: Io, log: Logger): Promise<number> {
  // Replays: a stop asked for before the agent subscribes (a signal during start-up) still counts.
  const stop = new ReplaySubject<void>(1);
  return new Promise((resolve) => {
    let stopping = false;
    const signals = io.stop$.subscribe(() => {
      if (stopping) {
        log.warn('asked again to stop; exiting without waiting for the withdrawal');
        resolve(0);
        return;
      }
      stopping = true;
      log.info('stopping: withdrawing every forward');
      stop.next();
    });
    createAgent(plan, stop).subscribe({
      next: (report) => {
        if (report.type === 'wrote') log.debug({ sink: report.sink, added: report.added.length, removed: report.removed.length }, 'sink write');
        if (report.type === 'withdrawn') log.info({ sink: report.sink, count: report.count }, `withdrew ${String(report.count)} forwards (${report.sink})`);
        if (report.type === 'withdrawn' && (report.left ?? 0) > 0) log.warn({ sink: report.sink, left: report.left }, `${String(report.left)} forwards may stay on the host: the withdrawal ran out of time (${report.sink})`);
        if (report.type === 'abandoned') log.warn({ sink: report.sink, count: report.count }, `gave up withdrawing ${String(report.count)} forwards (${report.error}); they may stay on the host until it restarts (${report.sink})`);
      },
      error: (err: unknown) => {
        log.fatal({ err }, 'the agent failed');
        signals.unsubscribe();
        resolve(1);
      },
      complete: () => {
        signals.unsubscribe();
        resolve(0);
      },
    });
    log.info({ sources: wiring.sources, sinks: wiring.routes.map((r) => r.sink) }, 'portstream agent running');
  });
}

/**
 * The stream of one backend. Each is imported only when enabled: the Kubernetes client, gRPC and
 * dockerode are most of the agent's memory, and an agent that watches iptables alone needs none.
 */
async function sourceFor(kind: SourceKind, config: AgentConfig, logger: Logger, connection?: ConnectionReporter): Promise<Observable<SourceEvent>> {
  const opts = { logger, ...(connection && { connection }) };
  switch (kind) {
    case 'docker': {
      const [{ dockerEvents }, { dockerodeClient }] = await Promise.all([import('../streams/docker.js'), import('../streams/dockerClient.js')]);
      return dockerEvents(dockerodeClient({ logger }), opts);
    }
    case 'containerd': {
      const [{ containerdEvents }, { grpcContainerdClient }] = await Promise.all([import('../streams/containerd.js'), import('../streams/containerdClient.js')]);
      return containerdEvents(grpcContainerdClient(containerdSocket(config), { logger }), opts);
    }
    case 'iptables': {
      const [{ iptablesEvents }, { nodeIptablesClient }] = await Promise.all([import('../streams/iptables.js'), import('../streams/iptablesClient.js')]);
      return iptablesEvents(nodeIptablesClient(), opts);
    }
    case 'kubernetes': {
      const [{ kubernetesServices }, { kubeconfigClients }] = await Promise.all([import('../streams/kubernetes.js'), import('../streams/kubeconfigClients.js')]);
      return kubernetesServices(kubeconfigClients(config.kubeconfig, { logger }), {
        ...opts,
        listenerAddr: config.k8sServiceListenerAddr,
        // The API port goes to the host only through the vtunnel or host-switch: a placeholder
        // on 6443 in listener mode would keep k3s from binding it (WSL forwards k3s's own).
        ...((config.privilegedService || config.hostSwitchURL !== undefined) && { apiPort: config.k8sAPIPort }),
      });
    }
    case 'procnet': {
      const [{ procnetEvents }, { nodeSocketTable }, { procnetExclusions }] = await Promise.all([
        import('../streams/procnet.js'),
        import('../streams/procnetClient.js'),
        import('../streams/procnetPolicy.js'),
      ]);
      return procnetEvents(nodeSocketTable(moduleLogger('procnet', logger)), { ...opts, policy: { exclude: procnetExclusions(config.procnetExclude, config.k8sAPIPort), reachable: reachableBy(config) } });
    }
  }
}

/**
 * The specific addresses the host end can reach a listener on: -tap-interface-ip for host-switch
 * (its `remote`), else the addresses of -connectInterface, which the vtunnel peer connects to.
 */
function reachableBy(config: AgentConfig): (ip: string) => boolean {
  if (config.hostSwitchURL !== undefined) return (ip) => ip === config.tapInterfaceIp;
  return (ip) => connectAddrsOf(config.connectInterface).some((a) => a.addr.split('/')[0] === ip);
}

/**
 * With the live table on a terminal, log lines go to a pane below the table instead of over it
 * (see sinks/logPane.ts); elsewhere the logger is left as it is.
 */
function logsBelowTable(wiring: Wiring, io: Io, debug: boolean): { readonly logger: Logger; readonly lines$: Observable<readonly string[]> } | undefined {
  if (io.stdout.isTTY !== true || !wiring.routes.some((r) => r.sink === 'table')) return undefined;
  const pane = logPane(io.stderr);
  return { logger: cliLogger(io.env, debug, pane.destination), lines$: pane.lines$ };
}

/**
 * A secondary route (the loopback forwarders, the table) takes each change only once the event
 * loop has polled for I/O: every route gets the change in the same synchronous pass, and the
 * primary sink's message to the host can leave only after that pass and the next poll. About
 * half a millisecond of each new port's path, measured (bench/dockerAdd.ts).
 */
function afterPrimary(sink: Sink): Sink {
  return (deltas) => sink(deltas.pipe(yieldEach(ioPolled)));
}

function sinkFor(kind: SinkKind, config: AgentConfig, io: Io, logger: Logger, logs: Observable<readonly string[]> | undefined): Sink {
  switch (kind) {
    case 'vtunnel':
      return vtunnelSink({ address: config.vtunnelAddr, connectAddrs: readOffThePath(() => connectAddrsOf(config.connectInterface)), logger });
    case 'table':
      return afterPrimary(tableSink(io.stdout, logger, logs));
    case 'listeners':
      return listenerSink({ logger });
    case 'loopback':
      // Where the host end connects: host-switch's tap address (IPv4 only), else the vtunnel's interface.
      return afterPrimary(
        config.hostSwitchURL !== undefined
          ? loopbackSink({ listenAddrs: () => addressAddrs(config.tapInterfaceIp), ipv6: false, logger })
          : loopbackSink({ listenAddrs: () => interfaceAddrs(config.connectInterface), ipv6: true, logger }),
      );
    case 'hostswitch':
      return hostSwitchSink({
        ...(config.hostSwitchURL !== undefined && { url: config.hostSwitchURL }),
        tapInterfaceIp: config.tapInterfaceIp,
        adminInstall: config.adminInstall,
        logger,
      });
  }
}

/**
 * `read()`, served from the last reading and read again after a call finds it over a second old,
 * once the caller's message is out: never on its path. The vtunnel sink asks for the interface's
 * addresses with every message, and reading them (getifaddrs) costs about 0.5 ms of the add
 * path's 2 ms; a background timer would cost idle CPU instead. The read waits `afterMs`: a
 * setImmediate would still run before the event loop sees the message's connection open. A
 * message after a long quiet may carry addresses that are out of date; the read it starts puts
 * the new ones in the sink's next message or periodic re-send, a few seconds later at most.
 */
function readOffThePath<T>(read: () => T, maxAgeMs = 1000, afterMs = 50): () => T {
  // A read that throws in the background is thrown to the next caller (the sink reports it).
  const attempt = (): { value: T } | { error: unknown } => {
    try {
      return { value: read() };
    } catch (error: unknown) {
      return { error };
    }
  };
  let last = attempt();
  let readAt = performance.now();
  let reading = false;
  return () => {
    if (!reading && performance.now() - readAt > maxAgeMs) {
      reading = true;
      setTimeout(() => {
        last = attempt();
        readAt = performance.now();
        reading = false;
      }, afterMs).unref();
    }
    if ('error' in last) throw last.error;
    return last.value;
  };
}

/** The configured socket; with auto-detection, the stock containerd's when only that one exists. */
function containerdSocket(config: AgentConfig): string {
  if (config.explicit.has('containerdSock') || existsSync(config.containerdSock)) return config.containerdSock;
  return existsSync(stockContainerdSock) ? stockContainerdSock : config.containerdSock;
}

const stockContainerdSock = '/run/containerd/containerd.sock';

function detect(config: AgentConfig, io: Io): Detected {
  const dockerHost = io.env['DOCKER_HOST'];
  return {
    dockerSocket: dockerHost !== undefined && dockerHost !== '' ? true : existsSync('/var/run/docker.sock'),
    containerdSocket: existsSync(config.containerdSock) || existsSync(stockContainerdSock),
    kubeconfig: existsSync(config.kubeconfig),
    iptablesCommand: onPath('iptables-save', io.env),
    tty: io.stdout.isTTY === true,
  };
}

function onPath(command: string, env: NodeJS.ProcessEnv): boolean {
  return (env['PATH'] ?? '').split(delimiter).some((dir) => dir !== '' && existsSync(join(dir, command)));
}
