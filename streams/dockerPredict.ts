/**
 * What a container will publish, known before its start event's inspect answers.
 *
 * The ports a container publishes are read from an inspect after its `start` event: a round trip
 * to dockerd on the path of every new port. Most of the answer is known earlier. A container's
 * `HostConfig.PortBindings` holds what was asked for at `create`; for a fixed host port, the
 * only thing the engine decides at start is which addresses an asked-for host IP becomes (`""`
 * becomes `0.0.0.0` and `::` on most engines, or the daemon's `--ip`, or a network's
 * `host_binding_ipv4`). That expansion is never assumed: it is learned from the inspects of
 * earlier containers on the same network. So the docker stream can publish the ports at `start`
 * and let the inspect confirm or correct them (docs/backends.md, "Docker").
 *
 * Everything here is pure; `docker.ts` holds the state.
 */
import { isValidPort } from '../src/model.js';
import type { InspectPorts } from './dockerPorts.js';

/** Docker's `HostConfig.PortBindings`: `{"80/tcp":[{"HostIp":"","HostPort":"8080"}]}`. */
export type PortBindings = InspectPorts;

/** The slice of an inspect that predicting reads. */
export interface BindingsInspect {
  readonly HostConfig?: { readonly NetworkMode?: string; readonly PortBindings?: PortBindings | null };
  readonly NetworkSettings?: { readonly Ports?: InspectPorts | null };
}

/** A container's asked-for bindings, every one of them on a fixed host port. */
export interface FixedBindings {
  readonly network: string;
  /** `[port spec, host IP as asked, host port]`, e.g. `['80/tcp', '', '8080']`. */
  readonly bindings: readonly (readonly [string, string, string])[];
}

/** Learned: network and asked-for host IP → the host IPs the engine bound for it. */
export type Expansions = ReadonlyMap<string, readonly string[]>;

const expansionKey = (network: string, askedIp: string): string => `${network}\u0000${askedIp}`;

/**
 * The bindings a container asked for, when every one can be predicted: each has a fixed host
 * port, and the container has a network of its own (`host`, `none` and `container:` publish
 * nothing of their own). Undefined otherwise, and for a container that publishes nothing.
 */
export function fixedBindings(inspect: BindingsInspect): FixedBindings | undefined {
  const network: unknown = inspect.HostConfig?.NetworkMode ?? 'default';
  if (typeof network !== 'string' || network === 'host' || network === 'none' || network.startsWith('container:')) return undefined;
  const asked = inspect.HostConfig?.PortBindings;
  if (typeof asked !== 'object' || asked === null) return undefined;
  const bindings: [string, string, string][] = [];
  for (const [spec, list] of Object.entries(asked)) {
    if (list === null || list === undefined) continue;
    if (!Array.isArray(list)) return undefined;
    for (const binding of list as unknown[]) {
      const { HostIp = '', HostPort } = (typeof binding === 'object' && binding !== null ? binding : {}) as { HostIp?: unknown; HostPort?: unknown };
      // "", "0" and ranges ("8000-8010") leave the port to the engine: only the inspect knows it
      if (typeof HostIp !== 'string' || typeof HostPort !== 'string' || !/^\d{1,5}$/.test(HostPort) || !isValidPort(Number(HostPort))) return undefined;
      bindings.push([spec, HostIp, HostPort]);
    }
  }
  return bindings.length > 0 ? { network, bindings } : undefined;
}

/**
 * `expansions` with what a started container's inspect shows: for each binding it asked for, the
 * host IPs the engine bound on that port. A binding whose port another binding of the same spec
 * shares (`127.0.0.1:8080` beside `[::1]:8080`) teaches nothing, since its addresses cannot be
 * told apart. Returns `expansions` itself when nothing changed.
 */
export function learnExpansions(expansions: Expansions, inspect: BindingsInspect): Expansions {
  return learnFrom(expansions, fixedBindings(inspect), inspect.NetworkSettings?.Ports);
}

/** `learnExpansions` with the asked-for bindings already read. */
function learnFrom(expansions: Expansions, asked: FixedBindings | undefined, bound: InspectPorts | null | undefined): Expansions {
  if (!asked || typeof bound !== 'object' || bound === null) return expansions;
  let learned: Map<string, readonly string[]> | undefined;
  for (const [spec, askedIp, hostPort] of asked.bindings) {
    if (asked.bindings.filter(([s, , p]) => s === spec && p === hostPort).length > 1) continue;
    const list = bound[spec];
    if (!Array.isArray(list)) continue;
    const ips = [...new Set((list as unknown[]).flatMap((b) => boundIp(b, hostPort)))].sort();
    if (ips.length === 0) continue;
    const key = expansionKey(asked.network, askedIp);
    if (sameList(expansions.get(key), ips)) continue;
    learned ??= new Map(expansions);
    learned.set(key, ips);
  }
  return learned ?? expansions;
}

/**
 * The `NetworkSettings.Ports` a container with these bindings will show once started, or
 * undefined when some asked-for host IP on its network has not been seen expanded yet.
 */
export function predictPorts(expansions: Expansions, asked: FixedBindings): InspectPorts | undefined {
  const ports: Record<string, { HostIp: string; HostPort: string }[]> = {};
  for (const [spec, askedIp, hostPort] of asked.bindings) {
    const ips = expansions.get(expansionKey(asked.network, askedIp));
    if (!ips) return undefined;
    (ports[spec] ??= []).push(...ips.map((HostIp) => ({ HostIp, HostPort: hostPort })));
  }
  return ports;
}

/** The host IP of one entry of `NetworkSettings.Ports` on `hostPort`, if it is one. */
function boundIp(entry: unknown, hostPort: string): string[] {
  const { HostIp = '', HostPort } = (typeof entry === 'object' && entry !== null ? entry : {}) as { HostIp?: unknown; HostPort?: unknown };
  return HostPort === hostPort && typeof HostIp === 'string' ? [HostIp] : [];
}

function sameList(a: readonly string[] | undefined, b: readonly string[]): boolean {
  return a !== undefined && a.length === b.length && a.every((x, i) => x === b[i]);
}

/** How many containers' bindings are remembered at most: created and never destroyed ones age out. */
const maxRemembered = 4096;

/**
 * The state of predicting, for one connection to the engine (a new engine may expand host IPs
 * differently): each container's fixed bindings, from its `create` on, and the expansions learned.
 */
export class StartPredictor {
  private expansions: Expansions = new Map();
  private readonly asked = new Map<string, FixedBindings>();

  /** Reads a container's asked-for bindings from any inspect of it (at create, or at a start). */
  remember(id: string, inspect: BindingsInspect): void {
    this.keep(id, fixedBindings(inspect));
  }

  /** Learns from a started container's inspect, and remembers its bindings for its next start. */
  learn(id: string, inspect: BindingsInspect): void {
    const fixed = fixedBindings(inspect);
    this.expansions = learnFrom(this.expansions, fixed, inspect.NetworkSettings?.Ports);
    this.keep(id, fixed);
  }

  private keep(id: string, fixed: FixedBindings | undefined): void {
    this.asked.delete(id); // re-inserted last: the oldest entries are the ones to age out
    if (!fixed) return;
    this.asked.set(id, fixed);
    if (this.asked.size > maxRemembered) this.asked.delete(this.asked.keys().next().value as string);
  }

  forget(id: string): void {
    this.asked.delete(id);
  }

  /** The ports container `id` will show once started, when they can be known now. */
  predict(id: string): InspectPorts | undefined {
    const asked = this.asked.get(id);
    return asked && predictPorts(this.expansions, asked);
  }
}
