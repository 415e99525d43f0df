import { isIP } from 'node:net';
import { isValidPort, type Forward } from '../src/model.js';
import type { Parsed } from './dockerPorts.js';

/** nerdctl's label with the container's port mappings: a JSON array of go-cni `PortMapping`s. */
export const portsLabel = 'nerdctl/ports';
/** nerdctl's label with the container's state directory, `/var/lib/nerdctl/<hash>/containers/<ns>/<id>`. */
const stateDirLabel = 'nerdctl/state-dir';
/** The file in the state directory where newer nerdctl keeps the port mappings instead of the label. */
export const networkConfigFile = 'network-config.json';

/** Where a container's ports are written down, judging by its labels. */
export type PortsSource =
  | { readonly kind: 'label'; readonly json: string }
  | { readonly kind: 'state-dir'; readonly dir: string }
  | { readonly kind: 'none' };

/** The `nerdctl/ports` label when there is one, else the `nerdctl/state-dir` label's directory. */
export function portsSourceOf(labels: Readonly<Record<string, string>>): PortsSource {
  const json = labels[portsLabel];
  if (json !== undefined) return { kind: 'label', json };
  const dir = labels[stateDirLabel];
  if (dir !== undefined && dir.trim() !== '') return { kind: 'state-dir', dir };
  return { kind: 'none' };
}

/**
 * Forwards from a `nerdctl/ports` label:
 * `[{"HostPort":8080,"ContainerPort":80,"Protocol":"tcp","HostIP":"0.0.0.0"}]`. Keys may come in
 * any case (nerdctl's Go decoder does not care either). An empty label or `null` means no ports.
 */
export function portsFromLabel(owner: string, json: string): Parsed {
  if (json.trim() === '') return { forwards: [], problems: [] };
  const value = parseJson(json);
  if (!value.ok) return { forwards: [], problems: [`the ${portsLabel} label is not JSON (${value.error})`] };
  if (value.value === null) return { forwards: [], problems: [] };
  if (!Array.isArray(value.value)) return { forwards: [], problems: [`the ${portsLabel} label is not a list of port mappings: ${excerpt(json)}`] };
  return portsFromMappings(owner, value.value, `the ${portsLabel} label`);
}

/**
 * Forwards from the text of a state directory's `network-config.json`, in either of the shapes
 * nerdctl has written: an object with `portMappings` (any case), or a bare array of mappings.
 */
export function portsFromNetworkConfig(owner: string, json: string): Parsed {
  const where = networkConfigFile;
  const value = parseJson(json);
  if (!value.ok) return { forwards: [], problems: [`${where} is not JSON (${value.error})`] };
  if (value.value === null) return { forwards: [], problems: [] };
  if (Array.isArray(value.value)) return portsFromMappings(owner, value.value, where);
  if (typeof value.value !== 'object') return { forwards: [], problems: [`${where} holds neither an object nor a list: ${excerpt(json)}`] };
  const mappings = field(value.value as Record<string, unknown>, 'portmappings');
  if (mappings === undefined || mappings === null) return { forwards: [], problems: [] };
  if (!Array.isArray(mappings)) return { forwards: [], problems: [`${where}: portMappings is not a list: ${excerpt(JSON.stringify(mappings))}`] };
  return portsFromMappings(owner, mappings, where);
}

/**
 * Forwards from a list of go-cni port mappings. Each entry that cannot be understood becomes one
 * problem and is skipped; the others still count. `where` names the list in those problems.
 */
export function portsFromMappings(owner: string, mappings: readonly unknown[], where = 'port mappings'): Parsed {
  const forwards: Forward[] = [];
  const problems: string[] = [];
  mappings.forEach((entry, i) => {
    const result = forwardOf(owner, entry);
    if (typeof result === 'string') problems.push(`${where}, entry ${String(i + 1)} ${excerpt(JSON.stringify(entry))}: ${result}`);
    else forwards.push(result);
  });
  return { forwards, problems };
}

/** One mapping as a forward, or why it is not one. */
function forwardOf(owner: string, entry: unknown): Forward | string {
  if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) return 'not an object';
  const m = entry as Record<string, unknown>;
  const hostPort = field(m, 'hostport');
  if (hostPort === undefined) return 'no host port';
  if (typeof hostPort !== 'number' || !isValidPort(hostPort)) return `host port ${JSON.stringify(hostPort)} is not a port number (1-65535)`;
  const containerPort = field(m, 'containerport');
  if (containerPort !== undefined && (typeof containerPort !== 'number' || !isValidPort(containerPort))) {
    return `container port ${JSON.stringify(containerPort)} is not a port number (1-65535)`;
  }
  const rawProtocol = field(m, 'protocol') ?? '';
  if (typeof rawProtocol !== 'string') return `protocol ${JSON.stringify(rawProtocol)} is not a string`;
  const protocol = rawProtocol === '' ? 'tcp' : rawProtocol.toLowerCase();
  if (protocol !== 'tcp' && protocol !== 'udp') return `unknown protocol ${JSON.stringify(rawProtocol)} (only tcp and udp are forwarded)`;
  const rawIp = field(m, 'hostip') ?? '';
  if (typeof rawIp !== 'string') return `host IP ${JSON.stringify(rawIp)} is not a string`;
  const hostIp = rawIp === '' ? '0.0.0.0' : rawIp.replace(/^\[(.*)\]$/, '$1');
  if (isIP(hostIp) === 0) return `host IP ${JSON.stringify(rawIp)} is not an IP address`;
  return {
    protocol,
    hostIp,
    hostPort,
    ...(containerPort !== undefined && { containerPort }),
    source: 'containerd',
    owner,
  };
}

/** `object[key]` with the key matched in any case (the first match wins). */
function field(object: Readonly<Record<string, unknown>>, lowerKey: string): unknown {
  for (const [key, value] of Object.entries(object)) if (key.toLowerCase() === lowerKey) return value;
  return undefined;
}

function parseJson(text: string): { ok: true; value: unknown } | { ok: false; error: string } {
  try {
    return { ok: true, value: JSON.parse(text) as unknown };
  } catch (error) {
    return { ok: false, error: error instanceof Error ? error.message : String(error) };
  }
}

function excerpt(text: string, max = 120): string {
  return text.length <= max ? text : `${text.slice(0, max)}…`;
}
