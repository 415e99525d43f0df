import * as grpc from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { randomUUID } from 'node:crypto';
import { constants, existsSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { isAbsolute, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defer, from, Observable } from 'rxjs';
import { moduleLogger, type Logger } from '../src/log.js';
import {
  CONTAINERD_EVENTS_OPEN,
  containerdTopics,
  type ContainerdContainer,
  type ContainerdEvent,
  type ContainerdTask,
} from './containerd.js';
import { networkConfigFile } from './nerdctlPorts.js';
import type { GrpcContainerdClient, GrpcContainerdClientOptions } from './containerdClientLazy.js';

export type { GrpcContainerdClient, GrpcContainerdClientOptions } from './containerdClientLazy.js';
import type { ProtoGrpcType as EventsProto } from './containerd-types/events.js';
import type { ProtoGrpcType as ContainersProto } from './containerd-types/containers.js';
import type { ProtoGrpcType as NamespacesProto } from './containerd-types/namespace.js';
import type { ProtoGrpcType as TasksProto } from './containerd-types/tasks.js';
import type { ProtoGrpcType as TaskEventsProto } from './containerd-types/task.js';
import type { ProtoGrpcType as ContainerEventsProto } from './containerd-types/container.js';
import type { Envelope__Output } from './containerd-types/containerd/services/events/v1/Envelope.js';
import type { EventsClient } from './containerd-types/containerd/services/events/v1/Events.js';

export type ContainerdProto = EventsProto & ContainersProto & NamespacesProto & TasksProto & TaskEventsProto & ContainerEventsProto;

/** The vendored protos, relative to proto/ (see proto/README.md). */
const protoFiles = [
  'services/events/v1/events.proto',
  'services/containers/v1/containers.proto',
  'services/namespaces/v1/namespace.proto',
  'services/tasks/v1/tasks.proto',
  'events/task.proto',
  'events/container.proto',
].map((f) => `github.com/containerd/containerd/api/${f}`);

/** These must match proto/generate.sh, which generated the types in containerd-types/ with them. */
const loaderOptions = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true } as const;

/**
 * The topic of the marker event `events()` publishes to itself. containerd sends no response
 * headers on a subscription until its first event, so the only way to know that the subscription
 * is live (and a list made now misses nothing) is to see an event come back through it.
 */
export const subscribedTopic = '/portstream/subscribed';
/** The namespace the marker is published in (containerd needs one; it does not have to exist). */
export const markerNamespace = 'portstream';
const markerType = 'portstream.Subscribed';

let loaded: ContainerdProto | undefined;
/** The vendored protos, loaded once: service constructors and message (de)serialisers. */
export function containerdProto(): ContainerdProto {
  loaded ??= grpc.loadPackageDefinition(loadSync(protoFiles, { ...loaderOptions, includeDirs: [protoDir()] })) as unknown as ContainerdProto;
  return loaded;
}

/** proto/ beside streams/ when run from source, two levels up when run from dist/streams/. */
export function protoDir(): string {
  const candidates = ['../proto', '../../proto'].map((p) => fileURLToPath(new URL(p, import.meta.url)));
  const found = candidates.find((dir) => existsSync(join(dir, protoFiles[0]!)));
  if (found === undefined) throw new Error(`cannot find the vendored containerd protos (looked in ${candidates.join(', ')})`);
  return found;
}

/**
 * A client for containerd's gRPC API on the unix socket `socketPath`. One channel serves every
 * service; its own reconnect back-off is kept short (at most 1 s) because the stream above does
 * the real backing off, and a long grpc-js back-off would only delay noticing a restarted
 * containerd.
 */
export function grpcContainerdClient(socketPath: string, opts: GrpcContainerdClientOptions = {}): GrpcContainerdClient {
  const log = opts.log ?? moduleLogger('containerd');
  const callTimeoutMs = opts.callTimeoutMs ?? 15_000;
  const markerTimeoutMs = opts.markerTimeoutMs ?? 10_000;
  const p = containerdProto();
  const target = `unix://${socketPath}`;
  const credentials = grpc.credentials.createInsecure();
  const events = new p.containerd.services.events.v1.Events(target, credentials, {
    'grpc.initial_reconnect_backoff_ms': 100,
    'grpc.max_reconnect_backoff_ms': 1_000,
    // containerd sends up to 16 MiB; grpc-js takes 4 MiB by default, and a container record with
    // large labels or spec over that would fail every scan.
    'grpc.max_receive_message_length': 16 * 1024 * 1024,
  });
  const channelOverride = events.getChannel();
  const namespaces = new p.containerd.services.namespaces.v1.Namespaces(target, credentials, { channelOverride });
  const tasks = new p.containerd.services.tasks.v1.Tasks(target, credentials, { channelOverride });
  const containers = new p.containerd.services.containers.v1.Containers(target, credentials, { channelOverride });
  const deadline = (): grpc.CallOptions => ({ deadline: Date.now() + callTimeoutMs });

  return {
    events: () => subscribe(events, log, markerTimeoutMs),
    namespaces: () =>
      unary<readonly string[]>((done) => {
        return namespaces.List({}, new grpc.Metadata(), deadline(), (err, res) => {
          done(err, res?.namespaces.map((n) => n.name));
        });
      }),
    tasks: (namespace) =>
      unary<readonly ContainerdTask[]>((done) => {
        return tasks.List({}, inNamespace(namespace), deadline(), (err, res) => {
          done(err, res?.tasks);
        });
      }),
    container: (namespace, id) =>
      unary<ContainerdContainer>((done) => {
        return containers.Get({ id }, inNamespace(namespace), deadline(), (err, res) => {
          done(err, res?.container ?? undefined);
        });
      }),
    networkConfig: (stateDir) => defer(() => from(readNetworkConfig(stateDir))),
    close: () => {
      events.close();
    },
  };
}

function inNamespace(namespace: string): grpc.Metadata {
  const metadata = new grpc.Metadata();
  metadata.set('containerd-namespace', namespace);
  return metadata;
}

/**
 * One unary call per subscription; an error, or a reply without the expected body, fails it.
 * Unsubscribing before the answer (a reconnect, a failed scan) cancels the call.
 */
function unary<T>(call: (done: (err: grpc.ServiceError | null, value: T | undefined) => void) => grpc.ClientUnaryCall): Observable<T> {
  return new Observable<T>((subscriber) => {
    let answered = false;
    const pending = call((err, value) => {
      answered = true;
      if (err) subscriber.error(err);
      else if (value === undefined) subscriber.error(new Error('containerd sent an empty reply'));
      else {
        subscriber.next(value);
        subscriber.complete();
      }
    });
    return () => {
      if (!answered) pending.cancel();
    };
  });
}

/**
 * `Events.Subscribe` in every namespace, for the topics portstream follows and its own marker.
 * Once the subscription is open it publishes the marker (again, with growing pauses, until it
 * comes back), and emits CONTAINERD_EVENTS_OPEN when it sees its own marker. Events that arrive
 * before that are dropped: they happened before the marker was published, so the list that
 * follows CONTAINERD_EVENTS_OPEN already reflects them.
 */
function subscribe(events: EventsClient, log: Logger, markerTimeoutMs: number): Observable<typeof CONTAINERD_EVENTS_OPEN | ContainerdEvent> {
  return new Observable((subscriber) => {
    const token = randomUUID();
    const filters = [...containerdTopics, subscribedTopic].map((topic) => `topic=="${topic}"`);
    const call = events.Subscribe({ filters });
    let open = false;
    let timer: NodeJS.Timeout | undefined;
    const started = Date.now();

    const published = new Set<grpc.ClientUnaryCall>();
    const publish = (pauseMs: number): void => {
      const marker = events.Publish(
        { topic: subscribedTopic, event: { type_url: markerType, value: Buffer.from(token) } },
        inNamespace(markerNamespace),
        { deadline: Date.now() + markerTimeoutMs },
        (err) => {
          published.delete(marker);
          if (err && !open) subscriber.error(new Error(`cannot publish the subscription marker: ${err.message}`, { cause: err }));
        },
      );
      published.add(marker);
      timer = setTimeout(() => {
        if (open) return;
        if (Date.now() - started >= markerTimeoutMs) {
          subscriber.error(new Error(`containerd did not pass on the subscription marker within ${String(markerTimeoutMs)} ms`));
        } else {
          publish(Math.min(pauseMs * 2, 1_000));
        }
      }, pauseMs);
    };

    call.on('data', (envelope: Envelope__Output) => {
      if (envelope.topic === subscribedTopic) {
        if (!open && envelope.event?.value.toString() === token) {
          open = true;
          clearTimeout(timer);
          subscriber.next(CONTAINERD_EVENTS_OPEN);
        }
        return;
      }
      if (!open) return;
      const event = decodeEnvelope(envelope, log);
      if (event) subscriber.next(event);
    });
    // containerd going away arrives as UNAVAILABLE ("Connection dropped", seen for both SIGTERM and
    // kill -9 of containerd 1.6) or CANCELLED; either is an error, and so a reconnect, upstream.
    call.on('error', (err: Error) => {
      subscriber.error(err);
    });
    call.on('end', () => {
      subscriber.complete();
    });
    publish(100);

    return () => {
      clearTimeout(timer);
      call.cancel();
      for (const marker of published) marker.cancel();
    };
  });
}

const payloadTypes: Readonly<Record<ContainerdEvent['topic'], string>> = {
  '/tasks/start': 'containerd.events.TaskStart',
  '/tasks/exit': 'containerd.events.TaskExit',
  '/containers/update': 'containerd.events.ContainerUpdate',
  '/containers/delete': 'containerd.events.ContainerDelete',
};

/**
 * An envelope from `Events.Subscribe` as a `ContainerdEvent`, its `Any` payload decoded with the
 * vendored event protos. Topics portstream does not follow, and payloads that are not what the
 * topic promises, give undefined (the latter with a log line).
 */
export function decodeEnvelope(envelope: Envelope__Output, log: Logger = moduleLogger('containerd')): ContainerdEvent | undefined {
  const { namespace, topic } = envelope;
  if (!(topic in payloadTypes)) return undefined;
  const expected = payloadTypes[topic as ContainerdEvent['topic']];
  const typeUrl = envelope.event?.type_url ?? '';
  const typeName = typeUrl.slice(typeUrl.lastIndexOf('/') + 1);
  if (typeName !== expected || !envelope.event) {
    log.warn({ namespace, topic, typeUrl }, `ignoring a containerd ${topic} event whose payload is ${JSON.stringify(typeUrl)}, not ${expected}`);
    return undefined;
  }
  const value = envelope.event.value;
  const events = containerdProto().containerd.events;
  try {
    switch (topic) {
      case '/tasks/start':
        return { namespace, topic, event: events.TaskStart.deserialize(value) };
      case '/tasks/exit':
        return { namespace, topic, event: events.TaskExit.deserialize(value) };
      case '/containers/update':
        return { namespace, topic, event: events.ContainerUpdate.deserialize(value) };
      case '/containers/delete':
        return { namespace, topic, event: events.ContainerDelete.deserialize(value) };
      default:
        return undefined;
    }
  } catch (error) {
    log.warn({ namespace, topic }, `ignoring a containerd ${topic} event that does not decode (${error instanceof Error ? error.message : String(error)})`);
    return undefined;
  }
}

/** nerdctl's network-config.json is a few hundred bytes; anything near this is not one. */
const maxNetworkConfigBytes = 1024 * 1024;

/**
 * `<stateDir>/network-config.json`, or undefined when nerdctl wrote none there. The directory
 * comes from a container label, so the path is untrusted: only a regular file of bounded size is
 * read, and opening does not block (a FIFO there would otherwise stall the stream for good).
 */
async function readNetworkConfig(stateDir: string): Promise<string | undefined> {
  if (!isAbsolute(stateDir)) throw new Error(`the state directory ${JSON.stringify(stateDir)} is not an absolute path`);
  let file: FileHandle;
  try {
    file = await open(join(stateDir, networkConfigFile), constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
  try {
    const stat = await file.stat();
    if (!stat.isFile()) throw new Error('it is not a regular file');
    if (stat.size > maxNetworkConfigBytes) throw new Error(`it is ${String(stat.size)} bytes, more than ${String(maxNetworkConfigBytes)}`);
    const buffer = Buffer.alloc(stat.size);
    const { bytesRead } = await file.read(buffer, 0, stat.size, 0);
    return buffer.toString('utf8', 0, bytesRead);
  } finally {
    await file.close();
  }
}
