/** Examples of the host-switch reconciler (`reconcile`), step by step, with no I/O at all. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Forward } from '../../src/model.js';
import { reconcile } from '../../src/sinks/hostswitch/reconcile.js';
import { initialState, type Command, type Env, type Input, type State } from '../../src/sinks/hostswitch/state.js';

const env: Env = { addressing: { tapInterfaceIp: '192.168.127.2', adminInstall: false }, concurrency: 2, withdrawTimeoutMs: 100, delayOf: (n) => n * 10, where: 'hs' };
const fwd = (hostPort: number): Forward => ({ protocol: 'tcp', hostIp: '0.0.0.0', hostPort, source: 'docker', owner: 'c1' });
const entry = (port: number) => ({ local: `127.0.0.1:${String(port)}`, remote: `192.168.127.2:${String(port)}`, protocol: 'tcp' as const });

/** Feeds inputs in order; the commands of each step, without log lines, as short strings. */
function drive(inputs: Input[], state: State = initialState()): { state: State; steps: string[][] } {
  const steps: string[][] = [];
  for (const input of inputs) {
    const step = reconcile(state, input, env);
    state = step.state;
    steps.push(step.commands.filter((c) => c.type !== 'log').map(show));
  }
  return { state, steps };
}

function show(c: Command): string {
  switch (c.type) {
    case 'expose':
    case 'unexpose':
      return `${c.type} ${c.key}`;
    case 'list':
      return `list ${String(c.seq)}`;
    case 'wait':
      return `wait ${c.key ?? 'list'} ${String(c.ms)}`;
    case 'deadline':
      return `deadline ${String(c.ms)}`;
    case 'report':
      return c.report.type === 'wrote' ? `wrote +${String(c.report.added.length)} -${String(c.report.removed.length)}` : `${c.report.type}${c.report.type === 'withdrawn' ? ` ${String(c.report.count)}${c.report.left === undefined ? '' : ` left ${String(c.report.left)}`}` : ''}`;
    default:
      return c.type;
  }
}

test('start-up: the list first; nothing is exposed before it answers; a listed forward of ours is adopted, the rest exposed within the bound', () => {
  const { steps } = drive([
    { type: 'start' },
    { type: 'delta', delta: { added: [fwd(1), fwd(2), fwd(3), fwd(4)], removed: [] } },
    { type: 'listed', seq: 1, list: [entry(1)] },
  ]);
  assert.deepEqual(steps, [['list 1'], [], ['wrote +1 -0', 'expose tcp/127.0.0.1:2', 'expose tcp/127.0.0.1:3']]);
});

test('a failure waits on its own timer while the next entry goes; a stale timer is ignored', () => {
  const { state, steps } = drive([
    { type: 'start' },
    { type: 'listed', seq: 1, list: [] },
    { type: 'delta', delta: { added: [fwd(1), fwd(2), fwd(3)], removed: [] } },
    { type: 'answer', key: 'tcp/127.0.0.1:1', op: 'expose', answer: { kind: 'unexpected', status: 408, message: 'HTTP 408' } },
    { type: 'retry', key: 'tcp/127.0.0.1:1', gen: 0 },
  ]);
  assert.deepEqual(steps.slice(2), [
    ['expose tcp/127.0.0.1:1', 'expose tcp/127.0.0.1:2'],
    ['failed', 'wait tcp/127.0.0.1:1 10', 'expose tcp/127.0.0.1:3'],
    [],
  ]);
  assert.equal(state.entries.get('tcp/127.0.0.1:1')?.phase, 'waiting');
});

test('stop: everything ours unexposed at once, back-off cut; the deadline reports what was left, then done; nothing after done', () => {
  const { steps } = drive([
    { type: 'start' },
    { type: 'listed', seq: 1, list: [entry(1), entry(2)] },
    { type: 'delta', delta: { added: [fwd(1), fwd(2)], removed: [] } },
    { type: 'stop' },
    { type: 'answer', key: 'tcp/127.0.0.1:1', op: 'unexpose', answer: { kind: 'done' } },
    { type: 'deadline' },
    { type: 'tick' },
  ]);
  assert.deepEqual(steps.slice(3), [['deadline 100', 'unexpose tcp/127.0.0.1:1', 'unexpose tcp/127.0.0.1:2'], [], ['withdrawn 1 left 1', 'done'], []]);
});

test('an answer or list for something not asked is ignored', () => {
  const { steps } = drive([
    { type: 'start' },
    { type: 'answer', key: 'tcp/127.0.0.1:9', op: 'expose', answer: { kind: 'done' } },
    { type: 'listed', seq: 7, list: [] },
    { type: 'retry', key: undefined, gen: 3 },
  ]);
  assert.deepEqual(steps, [['list 1'], [], [], []]);
});
