/**
 * The /proc/net parser against what the kernel would print: any address and port written the
 * kernel's way (`%08X` words in host order, `%04X` port) reads back as the same address, in the
 * text Node's own parser agrees with; arbitrary damage never throws and never yields a bad port.
 */
import assert from 'node:assert/strict';
import { isIP, isIPv4 } from 'node:net';
import { test } from 'node:test';
import fc from 'fast-check';
import { bytesToHex, formatAddress, hexToBytes, parseProcNet, unmapIPv4 } from '../../streams/procnetTable.js';
import { runs } from './arbitraries.js';

/** Node's canonical text of an address (via a URL host, which normalises IPv6 as RFC 5952 does). */
function canonical(ip: string): string {
  if (isIPv4(ip)) return ip;
  return new URL(`http://[${ip}]/`).hostname.slice(1, -1);
}

const bytesToHexGroups = (b: Uint8Array): string => `${((b[12]! << 8) | b[13]!).toString(16)}:${((b[14]! << 8) | b[15]!).toString(16)}`;

const v4 = fc.uint8Array({ minLength: 4, maxLength: 4 });
const v6 = fc.oneof(
  fc.uint8Array({ minLength: 16, maxLength: 16 }),
  // runs of zeros, where `::` compression has choices to make
  fc.array(fc.constantFrom(0, 0, 0, 1, 0xffff), { minLength: 8, maxLength: 8 }).map((groups) => new Uint8Array(groups.flatMap((g) => [g >> 8, g & 0xff]))),
  // IPv4-mapped
  v4.map((b) => new Uint8Array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, ...b])),
);

function line(slot: number, hex: string, port: number, state: number, inode: number, remotePort = 0): string {
  const zero = '0'.repeat(hex.length);
  const h = (n: number, w: number): string => n.toString(16).toUpperCase().padStart(w, '0');
  return `${String(slot).padStart(4)}: ${hex}:${h(port, 4)} ${zero}:${h(remotePort, 4)} ${h(state, 2)} 00000000:00000000 00:00000000 00000000     0        0 ${String(inode)} 1 0000000000000000 100 0 0 10 0`;
}

test('hex ↔ bytes round-trips both byte orders', () => {
  fc.assert(
    fc.property(fc.oneof(v4, v6), fc.boolean(), (bytes, le) => {
      assert.deepEqual(hexToBytes(bytesToHex(bytes, le), le), bytes);
    }),
    runs(500),
  );
});

test('formatAddress writes what Node reads as the same address, in canonical form', () => {
  fc.assert(
    fc.property(fc.oneof(v4, v6), (bytes) => {
      const text = formatAddress(bytes);
      assert.equal(isIP(text), bytes.length === 4 ? 4 : 6, text);
      // WHATWG writes an IPv4-mapped address in hex (::ffff:a00:5); Node's sockets and Docker, as
      // we do, in dotted form. Either way it is the same address.
      if (text.startsWith('::ffff:') && text.includes('.')) assert.equal(canonical(text), canonical(`::ffff:${bytesToHexGroups(bytes)}`));
      else assert.equal(text, canonical(text));
    }),
    runs(1000),
  );
});

test('a line the kernel would print for a listener parses back to its address, port and inode', () => {
  fc.assert(
    fc.property(
      fc.boolean(),
      fc.oneof(v4, v6),
      fc.integer({ min: 1, max: 65535 }),
      fc.nat({ max: 2 ** 32 }),
      fc.boolean(),
      (tcp, bytes, port, inode, le) => {
        const family = bytes.length === 4 ? 4 : 6;
        const protocol = tcp ? 'tcp' : 'udp';
        const text = `  sl  local_address rem_address   st\n${line(0, bytesToHex(bytes, le), port, tcp ? 0x0a : 0x07, inode)}\n`;
        const { sockets, problems } = parseProcNet(text, protocol, family, le);
        assert.deepEqual(problems, []);
        assert.deepEqual(sockets, [{ protocol, family, ip: formatAddress(bytes), port, inode }]);
        if (family === 6 && bytes[10] === 0xff && bytes[11] === 0xff && bytes.subarray(0, 10).every((b) => b === 0)) {
          assert.equal(unmapIPv4(sockets[0]!.ip), formatAddress(bytes.subarray(12)));
        }
      },
    ),
    runs(1000),
  );
});

test('other states, port 0 and connected UDP sockets are never listeners', () => {
  fc.assert(
    fc.property(fc.boolean(), v4, fc.integer({ min: 0, max: 65535 }), fc.integer({ min: 1, max: 0x0c }), fc.integer({ min: 0, max: 65535 }), (tcp, bytes, port, state, remotePort) => {
      const protocol = tcp ? 'tcp' : 'udp';
      const { sockets } = parseProcNet(line(0, bytesToHex(bytes), port, state, 1, remotePort), protocol, 4);
      const listening = port !== 0 && (tcp ? state === 0x0a : state === 0x07 && remotePort === 0);
      assert.equal(sockets.length, listening ? 1 : 0);
    }),
    runs(1000),
  );
});

test('damaged text never throws; what it yields is a valid listener', () => {
  const sample = `${line(0, '0100007F', 8080, 0x0a, 7)}\n${line(1, '00000000000000000000000001000000', 443, 0x0a, 8)}\n`;
  fc.assert(
    fc.property(fc.string(), fc.nat(sample.length), fc.nat(sample.length), fc.constantFrom<4 | 6>(4, 6), (junk, at, cut, family) => {
      const text = sample.slice(0, at) + junk + sample.slice(Math.min(sample.length, at + (cut % 8)));
      const { sockets } = parseProcNet(text, 'tcp', family);
      for (const s of sockets) {
        assert.ok(Number.isInteger(s.port) && s.port >= 1 && s.port <= 65535);
        assert.equal(isIP(s.ip), family);
        assert.ok(Number.isSafeInteger(s.inode));
      }
    }),
    runs(1000),
  );
});
