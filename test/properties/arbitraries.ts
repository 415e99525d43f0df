/**
 * Shared fast-check arbitraries and checks for the property tests in `test/properties/`.
 *
 * The forwards are drawn from a small universe on purpose (a handful of addresses, ports 1..24,
 * a few sources and owners), so that generated sets overlap, claims collide and adds meet
 * removes of the same key: that is where diffing, ref-counting and coalescing can go wrong.
 */
import assert from 'node:assert/strict';
import { isIP } from 'node:net';
import fc from 'fast-check';
import { isValidPort, portKey, type Forward, type PortDelta, type PortKey, type PortSet } from '../../src/model.js';

/** Seeds and run counts: `PORTSTREAM_PROPERTY_RUNS=N` scales every test's numRuns (default 1). */
const scale = Number(process.env['PORTSTREAM_PROPERTY_RUNS'] ?? '1');
export const runs = (n: number): { numRuns: number } => ({ numRuns: Math.max(1, Math.round(n * (Number.isFinite(scale) && scale > 0 ? scale : 1))) });

export const hostIps = ['0.0.0.0', '127.0.0.1', '::', '::1', '10.213.0.5', 'fd00::5'] as const;
export const sources = ['docker', 'containerd', 'iptables', 'kubernetes'] as const;

/** A forward from the small universe: few distinct keys, so sets overlap. */
export const smallForward: fc.Arbitrary<Forward> = fc
  .record({
    protocol: fc.constantFrom('tcp' as const, 'udp' as const),
    hostIp: fc.constantFrom(...hostIps),
    hostPort: fc.integer({ min: 1, max: 24 }),
    containerPort: fc.option(fc.integer({ min: 1, max: 65535 }), { nil: undefined }),
    source: fc.constantFrom(...sources),
    owner: fc.constantFrom('c1', 'c2', 'c3', 'svc-uid-1', 'CNI-DN-1 -p tcp'),
  })
  .map(({ containerPort, ...rest }) => ({ ...rest, ...(containerPort !== undefined && { containerPort }) }));

/** A forward from a tiny universe (8 keys): adds, removals and handovers of one key meet often. */
export const tinyForward: fc.Arbitrary<Forward> = fc.record({
  protocol: fc.constantFrom('tcp' as const, 'udp' as const),
  hostIp: fc.constantFrom('0.0.0.0', '::'),
  hostPort: fc.integer({ min: 1, max: 2 }),
  source: fc.constantFrom(...sources),
  owner: fc.constant('c1'),
});

/** A set of forwards from the small universe (the last forward of a key wins, as in `portSetOf`). */
export const smallPortSet: fc.Arbitrary<PortSet> = fc
  .array(smallForward, { maxLength: 40 })
  .map((forwards) => new Map(forwards.map((f) => [portKey(f), f] as const)));

/** Sorted keys, for comparisons with readable failures. */
export const keysOf = (set: PortSet | Iterable<PortKey>): PortKey[] =>
  [...(set instanceof Map ? (set as PortSet).keys() : (set as Iterable<PortKey>))].sort();

/** `published` with `delta` applied, checking on the way that the delta is consistent with it. */
export function applyChecked(published: Map<PortKey, Forward>, delta: PortDelta, where: string): void {
  for (const f of delta.removed) {
    const key = portKey(f);
    assert.ok(published.has(key), `${where}: removes ${key}, which is not published`);
    published.delete(key);
  }
  for (const f of delta.added) {
    const key = portKey(f);
    assert.ok(!published.has(key), `${where}: adds ${key}, which is already published`);
    published.set(key, f);
  }
}

/** What a parser may return as a forward: port 1..65535, tcp or udp, a parseable IP, an owner. */
export function assertValidForward(forward: Forward, where: string): void {
  // checked as untyped data: the parsers' input is, and a bug can put anything in
  const f = forward as unknown as Readonly<Record<string, unknown>>;
  const show = `${where}: ${JSON.stringify(f)} (protocol ${typeof f['protocol']})`;
  assert.ok(f['protocol'] === 'tcp' || f['protocol'] === 'udp', `${show} has a protocol other than tcp or udp`);
  assert.ok(typeof f['hostPort'] === 'number' && isValidPort(f['hostPort']), `${show} has no valid host port`);
  assert.ok(typeof f['hostIp'] === 'string' && isIP(f['hostIp']) !== 0, `${show} has no valid host IP`);
  if (f['containerPort'] !== undefined) assert.ok(typeof f['containerPort'] === 'number' && isValidPort(f['containerPort']), `${show} has an invalid container port`);
  assert.equal(typeof f['source'], 'string', `${show} has no source`);
  assert.equal(typeof f['owner'], 'string', `${show} has no owner`);
}

/** A parser's `{forwards, problems}`: arrays, valid forwards, problems as strings. */
export function assertParsed(parsed: { readonly forwards: readonly Forward[]; readonly problems: readonly string[] }, where: string): void {
  const { forwards, problems } = parsed as { forwards: unknown; problems: unknown };
  assert.ok(Array.isArray(forwards), `${where}: forwards is not an array`);
  assert.ok(Array.isArray(problems), `${where}: problems is not an array`);
  for (const problem of problems as unknown[]) assert.equal(typeof problem, 'string', `${where}: a problem is not a string`);
  for (const f of forwards as Forward[]) assertValidForward(f, where);
}

/**
 * Damage to a real sample: characters replaced, inserted or deleted, and whole lines duplicated,
 * dropped or swapped, drawn from `alphabet` (the characters the format is made of).
 */
export function mutated(sample: string, alphabet: string, maxEdits = 12): fc.Arbitrary<string> {
  const chars = Array.from(alphabet);
  const edit = fc.oneof(
    fc.record({ kind: fc.constant('replace' as const), at: fc.nat(), ch: fc.constantFrom(...chars) }),
    fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), ch: fc.oneof(fc.constantFrom(...chars), fc.string({ unit: 'binary', maxLength: 3 })) }),
    fc.record({ kind: fc.constant('delete' as const), at: fc.nat(), ch: fc.constant('') }),
    fc.record({ kind: fc.constant('dupLine' as const), at: fc.nat(), ch: fc.constant('') }),
    fc.record({ kind: fc.constant('dropLine' as const), at: fc.nat(), ch: fc.constant('') }),
    fc.record({ kind: fc.constant('swapLines' as const), at: fc.nat(), ch: fc.constant('') }),
  );
  return fc.array(edit, { minLength: 1, maxLength: maxEdits }).map((edits) => {
    let text = sample;
    for (const { kind, at, ch } of edits) {
      if (kind === 'replace' || kind === 'insert' || kind === 'delete') {
        const i = text.length === 0 ? 0 : at % text.length;
        text = text.slice(0, i) + ch + text.slice(kind === 'insert' ? i : i + 1);
      } else {
        const lines = text.split('\n');
        const i = at % lines.length;
        if (kind === 'dupLine') lines.splice(i, 0, lines[i] ?? '');
        else if (kind === 'dropLine') lines.splice(i, 1);
        else {
          const j = (at * 7 + 3) % lines.length;
          [lines[i], lines[j]] = [lines[j] ?? '', lines[i] ?? ''];
        }
        text = lines.join('\n');
      }
    }
    return text;
  });
}

/**
 * Property-like names that an object literal used as a lookup table inherits from
 * `Object.prototype`: a parser that indexes a plain `{}` with input text must not see them.
 */
export const prototypeKeys = ['constructor', '__proto__', 'toString', 'valueOf', 'hasOwnProperty', 'isPrototypeOf', '__defineGetter__'] as const;

/** Any JSON value, deep enough to reach the fields the parsers look at. */
export const anyJson: fc.Arbitrary<unknown> = fc.jsonValue({ maxDepth: 4 });

/**
 * RxJS reports an error thrown by a subscriber's `next` asynchronously (as an uncaught error),
 * not to the code that called `next`. `caught(fn)` keeps the first such error so that the
 * property can rethrow it synchronously with `rethrow()`, where fast-check sees (and shrinks) it.
 */
export function failures(): { caught: <T>(fn: (value: T) => void) => (value: T) => void; rethrow: () => void } {
  let first: { error: unknown } | undefined;
  return {
    caught: (fn) => (value) => {
      if (first) return;
      try {
        fn(value);
      } catch (error) {
        first = { error };
      }
    },
    rethrow: () => {
      if (first) throw first.error;
    },
  };
}

type Path = readonly (string | number)[];

/** Every place in a JSON value: the root, each array element and each object member, depth first. */
function pathsOf(value: unknown, at: Path = []): Path[] {
  const paths: Path[] = [at];
  if (Array.isArray(value)) value.forEach((v: unknown, i) => paths.push(...pathsOf(v, [...at, i])));
  else if (typeof value === 'object' && value !== null) for (const [k, v] of Object.entries(value)) paths.push(...pathsOf(v, [...at, k]));
  return paths;
}

interface Edit {
  readonly pick: number;
  readonly kind: 'replace' | 'delete' | 'add';
  readonly value: unknown;
  readonly key: string;
}

function applyEdit(root: unknown, { pick, kind, value, key }: Edit): unknown {
  const paths = pathsOf(root);
  const path = paths[pick % paths.length]!;
  if (path.length === 0) return kind === 'replace' ? value : root;
  const parentPath = path.slice(0, -1);
  let parent = root as Record<string | number, unknown>;
  for (const step of parentPath) parent = parent[step] as Record<string | number, unknown>;
  const last = path.at(-1)!;
  const target = parent[last];
  if (kind === 'replace') parent[last] = value;
  else if (kind === 'delete') {
    if (Array.isArray(parent)) parent.splice(last as number, 1);
    else Reflect.deleteProperty(parent, last);
  } else if (Array.isArray(target)) target.push(value);
  else if (typeof target === 'object' && target !== null) (target as Record<string, unknown>)[key] = value;
  else parent[last] = value;
  return root;
}

/**
 * A valid value with a few places damaged: one value replaced by `replacement`, a member or
 * element dropped, or one added (with a lookalike key). This is how near-valid input reaches the
 * checks deep inside a parser, which fully random JSON almost never does.
 */
export function damaged(valid: fc.Arbitrary<unknown>, replacement: fc.Arbitrary<unknown>, key: fc.Arbitrary<string>, maxEdits = 3): fc.Arbitrary<unknown> {
  const edit: fc.Arbitrary<Edit> = fc.record({
    pick: fc.nat(),
    kind: fc.constantFrom('replace' as const, 'replace' as const, 'delete' as const, 'add' as const),
    // the values that most often trip a parser (another type, an empty one, out of range) first
    value: fc.oneof({ weight: 1, arbitrary: fc.constantFrom(null, [], {}, '', 0, -1, 65536, 'x') }, { weight: 2, arbitrary: replacement }),
    key,
  });
  return fc.tuple(valid, fc.array(edit, { minLength: 0, maxLength: maxEdits })).map(([value, edits]) => {
    let root = structuredClone(value);
    // a copy of each inserted value: fast-check hands out one instance of a constant (`[]`, `{}`)
    // every time, and a later edit must not change it (or make it contain itself)
    for (const e of edits) root = applyEdit(root, { ...e, value: structuredClone(e.value) });
    return root;
  });
}
