/**
 * A small command-line parser with the semantics of Go's `flag` package, so that portstream
 * accepts exactly the command lines the Go guest agent it replaces accepts, and rejects the same
 * ones with the same wording:
 *
 * - `-name` and `--name` are the same; `-name=value` or `-name value` for string and int flags.
 * - A bool is `-name` or `-name=VALUE` (VALUE from strconv.ParseBool); `-name false` is *not* a
 *   value: `false` is the first positional argument, and parsing stops there.
 * - Parsing stops at the first non-flag argument (a lone `-` is one) or after `--`.
 * - A string or int flag takes the next argument whatever it looks like: `-addr -debug` sets
 *   addr to `-debug`.
 * - `-h`, `-help` (or `--help`) asks for usage, unless the table defines a flag of that name.
 *
 * Parsing is pure: it never prints or exits; the caller decides what to do with the result.
 */

/** How a flag's value is read: Go's `flag` package kinds that portstream uses. */
export type FlagKind = 'bool' | 'string' | 'int';

/** One flag. `usage` may name its argument in back quotes, as in Go: "read `path`". */
export type FlagDef =
  | { readonly name: string; readonly kind: 'bool'; readonly default: boolean; readonly usage: string }
  | { readonly name: string; readonly kind: 'string'; readonly default: string; readonly usage: string }
  | { readonly name: string; readonly kind: 'int'; readonly default: number; readonly usage: string };

/** The value of one parsed flag. */
export type FlagValue = FlagDef['default'];

/** The value type of one definition: boolean, string or number. */
export type ValueOf<D extends FlagDef> = D extends { readonly kind: 'bool' }
  ? boolean
  : D extends { readonly kind: 'int' }
    ? number
    : string;

/**
 * The parsed values of a table, keyed by flag name. With a table declared `as const`, every key
 * and value type is known statically: `values['k8sAPIPort']` is a `number`.
 */
export type FlagValues<Defs extends readonly FlagDef[]> = {
  readonly [D in Defs[number] as D['name']]: ValueOf<D>;
};

/** The flags' values by name, or the first problem with the command line. */
export type ParseResult<Defs extends readonly FlagDef[]> =
  | {
      readonly ok: true;
      /** Every flag of the table: given on the command line, else its default. */
      readonly values: FlagValues<Defs>;
      /** Names (as in the table, without dashes) of the flags given on the command line. */
      readonly explicit: ReadonlySet<string>;
      /** What follows the flags: from the first non-flag argument, or after `--`. */
      readonly positional: readonly string[];
    }
  | { readonly ok: false; readonly error: string; readonly help?: never }
  | { readonly ok: false; readonly help: true; readonly error?: never };

type Failure = { readonly ok: false; readonly error: string };
const fail = (error: string): Failure => ({ ok: false, error });

/** Go's strconv.ParseBool, exactly: no other spellings, no trimming. */
export function parseGoBool(s: string): boolean | undefined {
  switch (s) {
    case '1': case 't': case 'T': case 'TRUE': case 'true': case 'True':
      return true;
    case '0': case 'f': case 'F': case 'FALSE': case 'false': case 'False':
      return false;
    default:
      return undefined;
  }
}

const INT64_MAX = (1n << 63n) - 1n;
const UINT64_MAX = (1n << 64n) - 1n;

/**
 * Go's strconv.ParseInt(s, 0, 64), which is what an int flag uses: optional sign, then decimal,
 * `0x` hex, `0o` or leading-`0` octal, `0b` binary, with `_` allowed between digits. Returns the
 * Go error text (`parse error` or `value out of range`) on failure. Values beyond 2^53 lose
 * precision as a JS number; no flag here needs them.
 */
export function parseGoInt(s0: string): { readonly value: number } | { readonly error: string } {
  const parseError = { error: 'parse error' } as const;
  let s = s0;
  const neg = s.startsWith('-');
  if (neg || s.startsWith('+')) s = s.slice(1);
  if (s === '') return parseError;

  let base = 10n;
  if (s[0] === '0') {
    const p = s.length >= 3 ? s[1]?.toLowerCase() : undefined;
    base = p === 'b' ? 2n : p === 'o' ? 8n : p === 'x' ? 16n : 8n;
    s = s.slice(p === 'b' || p === 'o' || p === 'x' ? 2 : 1);
  }

  let n = 0n;
  let underscores = false;
  for (const c of s) {
    if (c === '_') {
      underscores = true;
      continue;
    }
    const d = digitValue(c);
    if (d === undefined || d >= base) return parseError;
    n = n * base + d;
    // Go stops at the first overflow, before looking at later digits.
    if (n > UINT64_MAX) return { error: 'value out of range' };
  }
  if (underscores && !underscoreOK(s0)) return parseError;
  if (n > (neg ? INT64_MAX + 1n : INT64_MAX)) return { error: 'value out of range' };
  return { value: Number(neg ? -n : n) };
}

function digitValue(c: string): bigint | undefined {
  // ASCII only, as Go reads bytes: no case folding of other scripts into digits.
  const code = c.length === 1 ? c.charCodeAt(0) : -1;
  if (code >= 0x30 && code <= 0x39) return BigInt(code - 0x30); // 0-9
  if (code >= 0x61 && code <= 0x7a) return BigInt(code - 0x61 + 10); // a-z
  if (code >= 0x41 && code <= 0x5a) return BigInt(code - 0x41 + 10); // A-Z
  return undefined;
}

/** Go's rule: an underscore only between digits, or between a base prefix and a digit. */
function underscoreOK(s0: string): boolean {
  let s = s0;
  if (s.startsWith('-') || s.startsWith('+')) s = s.slice(1);
  let saw: '^' | '0' | '_' | '!' = '^';
  let i = 0;
  let hex = false;
  const p = s[1]?.toLowerCase();
  if (s.length >= 2 && s[0] === '0' && (p === 'b' || p === 'o' || p === 'x')) {
    i = 2;
    saw = '0';
    hex = p === 'x';
  }
  for (; i < s.length; i++) {
    const c = s.charAt(i);
    if ((c >= '0' && c <= '9') || (hex && ((c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))) {
      saw = '0';
    } else if (c === '_') {
      if (saw !== '0') return false;
      saw = '_';
    } else {
      if (saw === '_') return false;
      saw = '!';
    }
  }
  return saw !== '_';
}

/** Parse `argv` (without the program name) against `defs`, the way Go's FlagSet.Parse does. */
export function parseFlags<const Defs extends readonly FlagDef[]>(defs: Defs, argv: readonly string[]): ParseResult<Defs> {
  const byName = new Map<string, FlagDef>(defs.map((d) => [d.name, d]));
  const values = new Map<string, FlagValue>(defs.map((d) => [d.name, d.default]));
  const explicit = new Set<string>();
  const done = (rest: readonly string[]): ParseResult<Defs> => ({
    ok: true,
    // The map holds exactly one value of the right type per definition.
    values: Object.fromEntries(values) as FlagValues<Defs>,
    explicit,
    positional: [...rest],
  });

  let i = 0;
  while (i < argv.length) {
    const arg = argv[i] ?? '';
    if (arg.length < 2 || !arg.startsWith('-')) return done(argv.slice(i));
    if (arg === '--') return done(argv.slice(i + 1));
    i++;

    const body = arg.slice(arg.startsWith('--') ? 2 : 1);
    if (body === '' || body.startsWith('-') || body.startsWith('=')) return fail(`bad flag syntax: ${arg}`);
    const eq = body.indexOf('=');
    const name = eq < 0 ? body : body.slice(0, eq);
    const inline = eq < 0 ? undefined : body.slice(eq + 1);

    const def = byName.get(name);
    if (def === undefined) {
      if (name === 'h' || name === 'help') return { ok: false, help: true };
      return fail(`flag provided but not defined: -${name}`);
    }

    if (def.kind === 'bool') {
      // A bool never takes the next argument: `-debug false` leaves `false` positional.
      const b = parseGoBool(inline ?? 'true');
      if (b === undefined) return fail(`invalid boolean value ${goQuote(inline ?? '')} for -${name}: parse error`);
      values.set(name, b);
    } else {
      let raw = inline;
      if (raw === undefined && i < argv.length) raw = argv[i++];
      if (raw === undefined) return fail(`flag needs an argument: -${name}`);
      if (def.kind === 'int') {
        const n = parseGoInt(raw);
        if ('error' in n) return fail(`invalid value ${goQuote(raw)} for flag -${name}: ${n.error}`);
        values.set(name, n.value);
      } else {
        values.set(name, raw);
      }
    }
    explicit.add(name);
  }
  return done([]);
}

/**
 * Go's flag.PrintDefaults after a `Usage of NAME:` line: flags sorted by name, each as
 * `  -name type` then `    \tusage (default ...)`; the default is shown only when it is not the
 * zero value, quoted for strings.
 */
export function usage(defs: readonly FlagDef[], program = 'portstream'): string {
  const sorted = [...defs].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const lines = sorted.map((def) => {
    const [argName, text] = unquoteUsage(def);
    let line = `  -${def.name}${argName === '' ? '' : ` ${argName}`}`;
    // Go puts the usage of a one-letter bool on the same line.
    line += line.length <= 4 ? '\t' : '\n    \t';
    line += text.replaceAll('\n', '\n    \t');
    if (def.kind === 'string' && def.default !== '') line += ` (default ${goQuote(def.default)})`;
    if (def.kind === 'int' && def.default !== 0) line += ` (default ${String(def.default)})`;
    if (def.kind === 'bool' && def.default) line += ' (default true)';
    return line;
  });
  return [`Usage of ${program}:`, ...lines].join('\n') + '\n';
}

/** Go's flag.UnquoteUsage: a back-quoted word names the argument; otherwise the type does. */
function unquoteUsage(def: FlagDef): [argName: string, usage: string] {
  const m = /`([^`]*)`/.exec(def.usage);
  if (m) return [m[1] ?? '', def.usage.replace(m[0], m[1] ?? '')];
  return [def.kind === 'bool' ? '' : def.kind, def.usage];
}

/** Go's %q for the strings we print: JSON string escaping is the same for printable text. */
function goQuote(s: string): string {
  return JSON.stringify(s);
}
