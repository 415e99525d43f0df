/**
 * portKey's canonical host IP: every spelling of one address gives one key, different addresses
 * give different keys, and the IPv6 form is the one the WHATWG URL parser (RFC 5952) writes.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { canonicalHostIp, portKey } from '../../src/model.js';
import { runs } from './arbitraries.js';

/** Eight 16-bit groups, biased to zeros so that runs of them (and `::`) are common. */
const groups = fc.array(fc.oneof(fc.constant(0), fc.constant(0), fc.integer({ min: 0, max: 0xffff })), { minLength: 8, maxLength: 8 });

/** One way of writing `g`: random case and leading zeros, any zero run compressed, maybe an IPv4 tail. */
const spelling = (g: number[]): fc.Arbitrary<string> =>
  fc.record({ upper: fc.array(fc.boolean(), { minLength: 8, maxLength: 8 }), pad: fc.array(fc.nat(3), { minLength: 8, maxLength: 8 }), run: fc.nat(), dotted: fc.boolean() }).map(({ upper, pad, run, dotted }) => {
    const hex = g.map((n, i) => {
      const h = n.toString(16).padStart(Math.min(4, n.toString(16).length + (pad[i] ?? 0)), '0');
      return upper[i] ? h.toUpperCase() : h;
    });
    const parts: string[] = dotted ? [...hex.slice(0, 6), `${String((g[6] ?? 0) >> 8)}.${String((g[6] ?? 0) & 0xff)}.${String((g[7] ?? 0) >> 8)}.${String((g[7] ?? 0) & 0xff)}`] : hex;
    const groupCount = dotted ? 6 : 8; // a run may not swallow the IPv4 tail
    const zeroRuns: [number, number][] = [];
    for (let i = 0; i < groupCount; i++) {
      for (let j = i; j < groupCount && g[j] === 0; j++) zeroRuns.push([i, j + 1]);
    }
    const chosen = zeroRuns.length === 0 ? undefined : zeroRuns[run % (zeroRuns.length + 1)];
    if (chosen === undefined) return parts.join(':');
    return `${parts.slice(0, chosen[0]).join(':')}::${parts.slice(chosen[1]).join(':')}`;
  });

const key = (hostIp: string): string => portKey({ protocol: 'tcp', hostIp, hostPort: 80 });
const isMapped = (g: number[]): boolean => g.slice(0, 5).every((n) => n === 0) && g[5] === 0xffff;

test('every spelling of one IPv6 address gives one key', () => {
  fc.assert(
    fc.property(groups.chain((g) => fc.tuple(fc.constant(g), spelling(g), spelling(g))), ([g, a, b]) => {
      assert.equal(key(a), key(b), `${a} and ${b}`);
      const canonical = canonicalHostIp(a);
      if (isMapped(g)) {
        assert.equal(canonical, `${String((g[6] ?? 0) >> 8)}.${String((g[6] ?? 0) & 0xff)}.${String((g[7] ?? 0) >> 8)}.${String((g[7] ?? 0) & 0xff)}`);
      } else {
        assert.equal(`[${canonical}]`, new URL(`http://[${a}]/`).hostname, a);
      }
    }),
    runs(2000),
  );
});

test('different addresses give different keys', () => {
  fc.assert(
    fc.property(groups, groups, (g, h) => {
      fc.pre(g.join() !== h.join());
      const [a, b] = [g, h].map((x) => x.map((n) => n.toString(16)).join(':')) as [string, string];
      assert.notEqual(key(a), key(b));
    }),
    runs(2000),
  );
});

test('the spellings the issue names', () => {
  assert.equal(key('::0'), 'tcp/[::]:80');
  assert.equal(key('0:0::0'), 'tcp/[::]:80');
  assert.equal(key('0:0:0:0:0:0:0:0'), 'tcp/[::]:80');
  assert.equal(key('::ffff:127.0.0.1'), 'tcp/127.0.0.1:80');
  assert.equal(key('::FFFF:7F00:1'), 'tcp/127.0.0.1:80');
  assert.equal(key('FE80::0001%eth0'), 'tcp/[fe80::1%eth0]:80');
  assert.equal(key('2001:DB8:0:0:1:0:0:1'), 'tcp/[2001:db8::1:0:0:1]:80');
  assert.equal(key('0.0.0.0'), 'tcp/0.0.0.0:80');
  assert.notEqual(key('::'), key('0.0.0.0'));
  // not an address: kept as written, not thrown on
  assert.equal(key('1::2::3'), 'tcp/[1::2::3]:80');
  assert.equal(key('::ffff:1.2.3'), 'tcp/[::ffff:1.2.3]:80');
});
