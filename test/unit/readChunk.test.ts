import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { readChunk, type LineRead } from '../../src/host/receiver.js';
import { runs } from '../properties/arbitraries.js';

test('readChunk: a line split over chunks is joined; what follows the newline is left out', () => {
  let read: LineRead = { chunks: [], size: 0 };
  let step = readChunk(read, Buffer.from('{"remove":'), 100);
  assert.equal(step.outcome, 'more');
  read = step.read;
  step = readChunk(read, Buffer.from('true}\nextra'), 100);
  assert.equal(step.outcome, 'line');
  assert.equal(Buffer.concat(step.read.chunks).toString(), '{"remove":true}\n');
});

test('readChunk: one byte over the limit is too large, and the state is left as it was', () => {
  const read: LineRead = { chunks: [Buffer.from('abc')], size: 3 };
  const step = readChunk(read, Buffer.from('de\n'), 5);
  assert.equal(step.outcome, 'tooLarge');
  assert.equal(step.read, read);
  assert.equal(readChunk(read, Buffer.from('d\n'), 5).outcome, 'line');
});

test('property: however the bytes are cut into chunks, the line read is the same', () => {
  fc.assert(
    fc.property(fc.string({ maxLength: 60 }), fc.string({ maxLength: 10 }), fc.array(fc.nat({ max: 70 }), { maxLength: 6 }), (line, rest, cuts) => {
      const bytes = Buffer.from(`${line.replaceAll('\n', '')}\n${rest}`);
      const points = [...new Set(cuts.map((c) => Math.min(c, bytes.length)))].sort((a, b) => a - b);
      const chunks = [0, ...points].map((start, i) => bytes.subarray(start, [...points, bytes.length][i])).filter((c) => c.length > 0);
      let read: LineRead = { chunks: [], size: 0 };
      let outcome = 'more';
      for (const chunk of chunks) {
        if (outcome !== 'more') break;
        const step = readChunk(read, chunk, 1 << 20);
        read = step.read;
        outcome = step.outcome;
      }
      assert.equal(outcome, 'line');
      assert.equal(Buffer.concat(read.chunks).toString(), `${line.replaceAll('\n', '')}\n`);
    }),
    runs(200),
  );
});
