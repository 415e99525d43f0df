/**
 * Imported first by the agent's process entry (main.ts), never by the library: it changes V8 for
 * the whole process.
 *
 * V8 grows the young generation from 1 MiB per semi-space up to 16 MiB whenever a burst of
 * allocation survives, and keeps it grown: after start-up, or after 2,000 placeholders are made,
 * 30 MiB of the agent's resident memory is an empty nursery. The growth factor is read each time
 * the nursery would grow (unlike its maximum size, which is fixed when the heap is made), so setting
 * it to 1 here keeps the nursery at its start size; a burst costs more frequent, small scavenges
 * instead. Whoever passes a semi-space flag to node (`NODE_OPTIONS`, node's own arguments) keeps it.
 * The figures are in docs/install.md ("Size, start-up and memory").
 */
import v8 from 'node:v8';

const given = [...process.execArgv, ...(process.env['NODE_OPTIONS'] ?? '').split(/\s+/)].some((arg) => /semi[-_]space/.test(arg));
if (!given) v8.setFlagsFromString('--semi-space-growth-factor=1');
