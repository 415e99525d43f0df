import { isIP } from 'node:net';
import { isValidPort, type Forward, type Protocol } from '../src/model.js';

/** Docker's `NetworkSettings.Ports`: `{"80/tcp":[{"HostIp":"0.0.0.0","HostPort":"8080"}], "53/udp": null}`. */
export type InspectPorts = Readonly<Record<string, readonly { HostIp?: string; HostPort?: string }[] | null | undefined>>;

/** One entry of `Ports` in Docker's container list. */
export interface ListPort {
  readonly IP?: string;
  readonly PrivatePort?: number;
  readonly PublicPort?: number;
  readonly Type?: string;
}

/** The forwards read from a container's ports, and what could not be read. */
export interface Parsed {
  readonly forwards: Forward[];
  /** One message per entry that could not be understood; the caller logs them. */
  readonly problems: string[];
}

const protocols: ReadonlySet<string> = new Set(['tcp', 'udp']);

/** Forwards from an inspect's `NetworkSettings.Ports`, expanding ranges (`8000-8002`). */
export function portsFromInspect(owner: string, ports: InspectPorts | null | undefined): Parsed {
  const forwards: Forward[] = [];
  const problems: string[] = [];
  for (const [spec, bindings] of Object.entries(ports ?? {})) {
    if (!bindings) continue; // exposed, not published
    const [portPart = '', proto = 'tcp'] = spec.split('/');
    const containerPorts = parseRange(portPart);
    if (!containerPorts || !protocols.has(proto)) {
      problems.push(`unrecognised port spec ${JSON.stringify(spec)}`);
      continue;
    }
    // the engine's JSON, checked anyway: a wrong shape is a problem, never a throw
    if (!Array.isArray(bindings)) {
      problems.push(`the bindings of ${spec} are not a list`);
      continue;
    }
    for (const binding of bindings as unknown[]) {
      const { HostIp, HostPort } = (typeof binding === 'object' && binding !== null ? binding : {}) as { HostIp?: unknown; HostPort?: unknown };
      const hostPorts = typeof HostPort === 'string' ? parseRange(HostPort) : undefined;
      if (!hostPorts) {
        problems.push(`unrecognised host port ${JSON.stringify(HostPort ?? null)} for ${spec}`);
        continue;
      }
      const hostIp = HostIp === undefined || HostIp === '' ? '0.0.0.0' : HostIp;
      if (typeof hostIp !== 'string' || isIP(hostIp) === 0) {
        problems.push(`unrecognised host IP ${JSON.stringify(HostIp)} for ${spec}`);
        continue;
      }
      hostPorts.forEach((hostPort, i) => {
        forwards.push({
          protocol: proto as Protocol,
          hostIp,
          hostPort,
          // a host range onto one container port maps all of it there
          containerPort: containerPorts[Math.min(i, containerPorts.length - 1)] ?? hostPort,
          source: 'docker',
          owner,
        });
      });
    }
  }
  return { forwards, problems };
}

/** Forwards from the container list's `Ports` (used for the start-up scan: no inspect per container). */
export function portsFromList(owner: string, ports: readonly ListPort[] | null | undefined): Parsed {
  const forwards: Forward[] = [];
  const problems: string[] = [];
  if (!Array.isArray(ports ?? [])) return { forwards, problems: ['the container list\'s Ports is not a list'] };
  for (const p of (ports ?? []) as unknown[]) {
    if (typeof p !== 'object' || p === null) {
      problems.push(`unrecognised port ${JSON.stringify(p)}`);
      continue;
    }
    const { IP, PrivatePort, PublicPort, Type } = p as { IP?: unknown; PrivatePort?: unknown; PublicPort?: unknown; Type?: unknown };
    if (PublicPort === undefined || PublicPort === 0) continue; // exposed, not published
    const proto = Type ?? 'tcp';
    const hostIp = IP === undefined || IP === '' ? '0.0.0.0' : IP;
    if (
      typeof PublicPort !== 'number' ||
      !isValidPort(PublicPort) ||
      typeof proto !== 'string' ||
      !protocols.has(proto) ||
      typeof hostIp !== 'string' ||
      isIP(hostIp) === 0 ||
      (PrivatePort !== undefined && (typeof PrivatePort !== 'number' || !isValidPort(PrivatePort)))
    ) {
      problems.push(`unrecognised port ${JSON.stringify(p)}`);
      continue;
    }
    forwards.push({
      protocol: proto as Protocol,
      hostIp,
      hostPort: PublicPort,
      ...(PrivatePort !== undefined && { containerPort: PrivatePort }),
      source: 'docker',
      owner,
    });
  }
  return { forwards, problems };
}

/** `"80"` → [80]; `"8000-8002"` → [8000, 8001, 8002]; anything else → undefined. */
function parseRange(text: string): number[] | undefined {
  const match = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(text.trim());
  if (!match) return undefined;
  const first = Number(match[1]);
  const last = match[2] === undefined ? first : Number(match[2]);
  if (!isValidPort(first) || !isValidPort(last) || last < first) return undefined;
  return Array.from({ length: last - first + 1 }, (_, i) => first + i);
}
