import { isIPv4, isIPv6 } from 'node:net';
import { isValidPort, type Forward, type Protocol } from '../src/model.js';

/**
 * The pure half of the iptables backend: which ports the nat table publishes, read from the text
 * of `iptables-save -t nat` or `ip6tables-save -t nat` (the whole `iptables-save` works too; only
 * the tables named in the counting rules are looked at).
 *
 * The rules are the truth: a port counts when a counting rule (below) says its DNAT rule does,
 * with no probing of connections. Nothing here throws: every line that cannot be understood
 * becomes one problem, and the rest of the text still counts.
 */

/** The IP family of a table: `iptables-save` or `ip6tables-save`. */
export type Family = 'ipv4' | 'ipv6';

/**
 * What counts as a published port, as data: DNAT (`target`) rules in the chains of `table` whose
 * name matches `chain` (a name, or a prefix ending in `*`), when `reachedFrom` (if given) jumps
 * or goes to that chain.
 */
export interface CountingRule {
  /** For messages: where these rules come from. */
  readonly name: string;
  readonly table: string;
  readonly chain: string;
  readonly reachedFrom?: string;
  readonly target: string;
}

/**
 * CNI portmap (what k3s, containerd/nerdctl and Rancher Desktop's Kubernetes use): one
 * `CNI-DN-<hash>` chain per container, entered from `CNI-HOSTPORT-DNAT`, holding one DNAT rule
 * per host port (`-d HOSTIP/32` when the port binds one address), beside the hairpin `SETMARK`
 * rules that do not count.
 */
export const cniPortmapRules: readonly CountingRule[] = [
  { name: 'CNI portmap', table: 'nat', chain: 'CNI-DN-*', reachedFrom: 'CNI-HOSTPORT-DNAT', target: 'DNAT' },
];

/** A rule whose port range is wider than this is reported, not published (each port is a listener). */
export const maxPortsPerRule = 4096;

/** The forwards read from a nat table, and the lines that could not be read. */
export interface Parsed {
  readonly forwards: Forward[];
  /** One message per line that could not be understood; the caller logs them. */
  readonly problems: string[];
}

/**
 * Why `text` (iptables-save output) cannot stand for the `table` it should hold, or undefined.
 * iptables-nft writes no rules at all, only a comment, for a table that also holds rules made
 * with `nft` that it cannot show (and exits 0): read as empty, that would withdraw every port.
 */
export function unreadableTable(text: string, table = 'nat'): string | undefined {
  // One scan of the text, no split: this runs on every read, before the parse splits it anyway.
  for (const match of text.matchAll(/^\s*# ?(Table `(\S+)' is incompatible[^\n]*?)\s*$/gm)) {
    if (match[2] === table) return `the ${table} table also holds rules made with nft that iptables-save cannot show (${match[1] ?? ''})`;
  }
  return undefined;
}

/** The address a rule without `-d` publishes on, per family. */
export const wildcard: Readonly<Record<Family, string>> = { ipv4: '0.0.0.0', ipv6: '::' };

/** Which option fills which field of a rule; every other option is skipped with its arguments. */
type Field = 'protocol' | 'destination' | 'dports' | 'jump' | 'toDestination';
const optionFields: Readonly<Record<string, Field>> = {
  '-p': 'protocol',
  '--protocol': 'protocol',
  '-d': 'destination',
  '--destination': 'destination',
  '--dst': 'destination',
  '--dport': 'dports',
  '--destination-port': 'dports',
  '--dports': 'dports',
  '--destination-ports': 'dports',
  // multiport's "source or destination": a DNAT on it still publishes these destination ports
  '--ports': 'dports',
  '-j': 'jump',
  '--jump': 'jump',
  '-g': 'jump',
  '--goto': 'jump',
  '--to-destination': 'toDestination',
};

/** `-p` values that are forwarded; iptables-save prints names, numbers are accepted too. */
const protocolNames: Readonly<Record<string, Protocol>> = { tcp: 'tcp', udp: 'udp', '6': 'tcp', '17': 'udp' };

/** Host prefix lengths: `-d ADDR/32` (IPv4) and `-d ADDR/128` (IPv6) name one address. */
const hostPrefix: Readonly<Record<Family, string>> = { ipv4: '32', ipv6: '128' };

interface RuleLine {
  readonly line: number;
  readonly chain: string;
  readonly text: string;
}

interface Rule {
  protocol?: { value: string; negated: boolean };
  destination?: { value: string; negated: boolean };
  dports: { value: string; negated: boolean }[];
  jump?: string;
  toDestination?: string;
}

/**
 * The forwards that `text` (the output of `iptables-save` or `ip6tables-save`) publishes under
 * `rules`, each owned by its rule: `CHAIN RULE-TEXT` (and ` (ip6tables)` for IPv6), stable
 * across re-reads as long as the rule is unchanged.
 */
export function parseIptablesSave(text: string, family: Family, rules: readonly CountingRule[] = cniPortmapRules): Parsed {
  const forwards: Forward[] = [];
  const problems: string[] = [];
  const tables = readTables(text, problems);
  for (const countingRule of rules) {
    const chains = tables.get(countingRule.table);
    if (!chains) continue;
    const matches = chainMatcher(countingRule.chain);
    const reachable = countingRule.reachedFrom === undefined ? undefined : jumpTargets(chains.get(countingRule.reachedFrom) ?? [], problems);
    for (const [chain, lines] of chains) {
      if (!matches(chain) || (reachable && !reachable.has(chain))) continue;
      for (const line of lines) {
        const parsed = readRule(line, problems);
        if (!parsed || parsed.rule.jump !== countingRule.target) continue;
        const owner = `${chain} ${parsed.normalized}${family === 'ipv6' ? ' (ip6tables)' : ''}`;
        const problem = forwardsOf(parsed.rule, family, owner, forwards);
        if (problem !== undefined) problems.push(`line ${String(line.line)} (${countingRule.name} ${chain}): ${problem}`);
      }
    }
  }
  return { forwards, problems };
}

/** table → chain → its `-A` lines, in order; declarations, comments and COMMIT checked and dropped. */
function readTables(text: string, problems: string[]): Map<string, Map<string, RuleLine[]>> {
  const tables = new Map<string, Map<string, RuleLine[]>>();
  let current: Map<string, RuleLine[]> | undefined;
  let skippingTable = false; // inside a table whose header was not understood: one problem for all of it
  const lines = text.split('\n');
  lines.forEach((raw, index) => {
    const line = raw.trim();
    const number = index + 1;
    if (line.startsWith('# Warning: iptables-legacy tables present')) {
      problems.push('iptables-legacy tables are present as well; rules there are not read (iptables-legacy-save shows them)');
      return;
    }
    if (line === '' || line.startsWith('#')) return;
    if (line.startsWith('*')) {
      const name = line.slice(1);
      if (!/^[a-z]+$/.test(name)) {
        problems.push(`line ${String(number)}: unrecognised table ${JSON.stringify(line)}; skipped to its COMMIT`);
        current = undefined;
        skippingTable = true;
        return;
      }
      current = tables.get(name) ?? new Map<string, RuleLine[]>();
      tables.set(name, current);
      skippingTable = false;
      return;
    }
    if (skippingTable) {
      if (line === 'COMMIT') skippingTable = false;
      return;
    }
    if (!current) {
      problems.push(`line ${String(number)}: ${JSON.stringify(line.slice(0, 80))} outside a table`);
      return;
    }
    if (line === 'COMMIT') {
      current = undefined;
      return;
    }
    if (line.startsWith(':')) {
      // :CHAIN POLICY [packets:bytes]
      const match = /^:(\S+)\s+(\S+)(?:\s+\[\d+:\d+\])?$/.exec(line);
      if (!match?.[1]) problems.push(`line ${String(number)}: unrecognised chain declaration ${JSON.stringify(line)}`);
      else if (!current.has(match[1])) current.set(match[1], []);
      return;
    }
    const rule = /^-A\s+(\S+)\s*(.*)$/.exec(line);
    if (rule?.[1] !== undefined) {
      const chain = rule[1];
      const list = current.get(chain) ?? [];
      list.push({ line: number, chain, text: rule[2] ?? '' });
      current.set(chain, list);
      return;
    }
    problems.push(`line ${String(number)}: unrecognised line ${JSON.stringify(line.slice(0, 80))}`);
  });
  return tables;
}

function chainMatcher(pattern: string): (chain: string) => boolean {
  if (pattern.endsWith('*')) {
    const prefix = pattern.slice(0, -1);
    return (chain) => chain.startsWith(prefix);
  }
  return (chain) => chain === pattern;
}

/** The chains that `lines` jump or go to. */
function jumpTargets(lines: readonly RuleLine[], problems: string[]): Set<string> {
  const targets = new Set<string>();
  for (const line of lines) {
    const jump = readRule(line, problems)?.rule.jump;
    if (jump !== undefined) targets.add(jump);
  }
  return targets;
}

/** The fields of one rule; undefined (and a problem) when its quoting is broken. */
function readRule(line: RuleLine, problems: string[]): { rule: Rule; normalized: string } | undefined {
  const tokens = tokenize(line.text);
  if (typeof tokens === 'string') {
    problems.push(`line ${String(line.line)} (${line.chain}): ${tokens}`);
    return undefined;
  }
  const rule: Rule = { dports: [] };
  let negated = false;
  for (let i = 0; i < tokens.length; i++) {
    const token = tokens[i]!;
    if (token === '!') {
      negated = true;
      continue;
    }
    if (token === '--comment') {
      // exactly one argument, whatever it looks like (iptables-save leaves `--dport` unquoted)
      i++;
      negated = false;
      continue;
    }
    // own keys only: a token such as `constructor` must not find Object.prototype's
    const field = Object.hasOwn(optionFields, token) ? optionFields[token] : undefined;
    if (field === undefined) {
      // an option we do not read (-m, -s, -i, --comment, ...): skip it and its arguments
      while (i + 1 < tokens.length && !isOptionStart(tokens[i + 1]!)) i++;
      negated = false;
      continue;
    }
    const value = tokens[i + 1];
    i++;
    if (value === undefined) break;
    switch (field) {
      case 'protocol':
        rule.protocol = { value, negated };
        break;
      case 'destination':
        rule.destination = { value, negated };
        break;
      case 'dports':
        rule.dports.push({ value, negated });
        break;
      case 'jump':
        rule.jump = value;
        break;
      case 'toDestination':
        rule.toDestination = value;
        break;
    }
    negated = false;
  }
  return { rule, normalized: tokens.map(quote).join(' ') };
}

function isOptionStart(token: string): boolean {
  return token === '!' || (token.startsWith('-') && token.length > 1 && !/^-\d/.test(token));
}

/**
 * Splits a rule the way iptables-restore does (which is what iptables-save writes for): words
 * separated by blanks; `"` opens and closes a quoted part anywhere in a word; inside quotes a
 * backslash takes the next character literally (`\"`, `\'`, `\\`); outside quotes a backslash
 * is an ordinary character. Returns a message for an unterminated quote.
 */
export function tokenize(text: string): string[] | string {
  const tokens: string[] = [];
  let word = '';
  let inWord = false;
  let quoted = false;
  let escaped = false;
  for (const ch of text) {
    if (quoted) {
      if (escaped) {
        word += ch;
        escaped = false;
      } else if (ch === '\\') {
        escaped = true;
      } else if (ch === '"') {
        quoted = false;
      } else {
        word += ch;
      }
      continue;
    }
    if (ch === '"') {
      quoted = true;
      inWord = true;
    } else if (ch === ' ' || ch === '\t') {
      if (inWord) tokens.push(word);
      word = '';
      inWord = false;
    } else {
      word += ch;
      inWord = true;
    }
  }
  if (quoted) return 'unterminated quote';
  if (inWord) tokens.push(word);
  return tokens;
}

/** A token as iptables-save would write it: quoted (with `\` before `"` and `\`) when it has to be. */
function quote(token: string): string {
  return token === '' || /[\s"'\\]/.test(token) ? `"${token.replace(/[\\"]/g, (c) => `\\${c}`)}"` : token;
}

/** Appends the forwards of one counting DNAT rule; returns a problem when it cannot be (fully) read. */
function forwardsOf(rule: Rule, family: Family, owner: string, out: Forward[]): string | undefined {
  if (!rule.protocol) return 'a DNAT rule without -p; skipped';
  if (rule.protocol.negated) return `-p ! ${rule.protocol.value} matches every other protocol; skipped`;
  const name = rule.protocol.value.toLowerCase();
  const protocol = Object.hasOwn(protocolNames, name) ? protocolNames[name] : undefined;
  if (!protocol) return `protocol ${rule.protocol.value} is not forwarded (tcp and udp are); skipped`;

  const host = hostIpOf(rule.destination, family);
  if ('problem' in host) return host.problem;

  if (rule.dports.length === 0) return 'a DNAT rule without a destination port matches every port; skipped';
  // Each port match (`--dport`, `--dports`) must hold, so the rule's ports are their intersection.
  let ports: number[] | undefined;
  for (const dport of rule.dports) {
    if (dport.negated) return `! ${dport.value} matches every other port; skipped`;
    const matched: number[] = [];
    for (const part of dport.value.split(',')) {
      const range = parsePortRange(part);
      if (!range) return `unrecognised destination port ${JSON.stringify(dport.value)}; skipped`;
      if (matched.length + range.last - range.first + 1 > maxPortsPerRule) {
        return `destination ports ${dport.value} are more than ${String(maxPortsPerRule)}; skipped`;
      }
      for (let p = range.first; p <= range.last; p++) matched.push(p);
    }
    const also = new Set(matched);
    ports = ports === undefined ? matched : ports.filter((p) => also.has(p));
  }
  if (ports === undefined || ports.length === 0) return 'its port matches leave no port in common; skipped';

  const to = rule.toDestination === undefined ? undefined : parseToDestination(rule.toDestination, family);
  const seen = new Set<number>();
  for (const hostPort of ports) {
    if (seen.has(hostPort)) continue;
    seen.add(hostPort);
    // no target at all keeps the port; a target that cannot be read names no container port
    const containerPort = to ? containerPortOf(to, hostPort) : rule.toDestination === undefined ? hostPort : undefined;
    out.push({
      protocol,
      hostIp: host.ip,
      hostPort,
      ...(containerPort !== undefined && { containerPort }),
      source: 'iptables',
      owner,
    });
  }
  if (rule.toDestination !== undefined && !to) {
    return `unrecognised --to-destination ${JSON.stringify(rule.toDestination)}; published without a container port`;
  }
  return undefined;
}

/**
 * The address a rule publishes on: none means the family's wildcard; `ADDR/32` (`/128`) or a bare
 * address means that address. `! -d ADDR` matches every other address, which only the wildcard
 * covers. A wider prefix names no single address to listen on.
 */
function hostIpOf(destination: Rule['destination'], family: Family): { ip: string } | { problem: string } {
  if (!destination || destination.negated) return { ip: wildcard[family] };
  const [address = '', prefix, ...rest] = destination.value.split('/');
  const valid = family === 'ipv4' ? isIPv4(address) : isIPv6(address);
  if (!valid || rest.length > 0) return { problem: `unrecognised -d ${JSON.stringify(destination.value)} for ${family}; skipped` };
  if (prefix !== undefined && prefix !== hostPrefix[family]) {
    if (prefix === '0') return { ip: wildcard[family] };
    return { problem: `-d ${destination.value} names a subnet, not one address to listen on; skipped` };
  }
  return { ip: family === 'ipv6' ? address.toLowerCase() : address };
}

/** `80` → 80–80; `8000:8002` (iptables' range) → 8000–8002; port 0 or a reversed range → undefined. */
export function parsePortRange(text: string): { first: number; last: number } | undefined {
  const match = /^(\d{1,5})(?::(\d{1,5}))?$/.exec(text.trim());
  if (!match) return undefined;
  const first = Number(match[1]);
  const last = match[2] === undefined ? first : Number(match[2]);
  if (!isValidPort(first) || !isValidPort(last) || last < first) return undefined;
  return { first, last };
}

/** The port part of a DNAT target: absent (the port is kept), one port, a range, a range with a base. */
export interface ToDestination {
  /** First and last address, when given. */
  readonly addresses?: readonly [string, string];
  readonly ports?: { readonly first: number; readonly last: number; readonly base?: number };
}

/**
 * DNAT's `--to-destination [ADDR[-ADDR]][:PORT[-PORT[/BASE]]]`, IPv6 addresses in brackets when a
 * port follows (`[fd00::5]:80`), bare otherwise (`fd00::5`).
 */
export function parseToDestination(text: string, family: Family): ToDestination | undefined {
  let addressPart: string;
  let portPart: string | undefined;
  if (family === 'ipv6') {
    const bracketed = /^\[([^\]]*)\](?::(.*))?$/.exec(text);
    if (bracketed) {
      addressPart = bracketed[1] ?? '';
      portPart = bracketed[2];
    } else if (text.startsWith(':') && !text.startsWith('::')) {
      addressPart = '';
      portPart = text.slice(1);
    } else {
      addressPart = text;
    }
  } else {
    const colon = text.indexOf(':');
    addressPart = colon < 0 ? text : text.slice(0, colon);
    portPart = colon < 0 ? undefined : text.slice(colon + 1);
  }
  const isAddress = family === 'ipv4' ? isIPv4 : isIPv6;
  let addresses: readonly [string, string] | undefined;
  if (addressPart !== '') {
    const [first = '', last = first, ...rest] = addressPart.split('-');
    if (!isAddress(first) || !isAddress(last) || rest.length > 0) return undefined;
    addresses = [first, last];
  }
  if (portPart === undefined) return addresses ? { addresses } : undefined;
  const match = /^(\d{1,5})(?:-(\d{1,5})(?:\/(\d{1,5}))?)?$/.exec(portPart);
  if (!match) return undefined;
  const first = Number(match[1]);
  const last = match[2] === undefined ? first : Number(match[2]);
  const base = match[3] === undefined ? undefined : Number(match[3]);
  if (!isValidPort(first) || !isValidPort(last) || last < first || (base !== undefined && !isValidPort(base))) return undefined;
  return { ...(addresses && { addresses }), ports: { first, last, ...(base !== undefined && { base }) } };
}

/**
 * Where a host port lands: the same port when the target gives none, the one port it gives, the
 * shifted port of a range with a base (`1000-2000/3000`: 3005 → 1005, wrapping inside the range
 * as the kernel does: first + ((port − base) mod 2^16) mod size); a plain range picks any port in
 * it, so no single container port.
 */
function containerPortOf(to: ToDestination, hostPort: number): number | undefined {
  const ports = to.ports;
  if (!ports) return hostPort;
  if (ports.first === ports.last) return ports.first;
  if (ports.base === undefined) return undefined;
  const offset = (((hostPort - ports.base) % 65536) + 65536) % 65536;
  return ports.first + (offset % (ports.last - ports.first + 1));
}
