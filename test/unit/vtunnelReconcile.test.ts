/**
 * The vtunnel sink's reconcile function, alone: no sockets, no clocks. A simulated host end takes
 * each round's messages, or loses them, or restarts empty; the properties are that the host ends
 * up holding exactly what is wanted once the failures stop (and nothing after a withdrawal), and
 * that the cheap plan made from the dirty keys is always the reference plan.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { portKey, type Forward, type PortDelta, type PortKey } from '../../src/model.js';
import { sharedEntries } from '../../src/sharedMap.js';
import {
  initialVtunnelState,
  planRound,
  reconcileVtunnel,
  type Round,
  type VtunnelCommand,
  type VtunnelConfig,
  type VtunnelInput,
  type VtunnelState,
} from '../../src/sinks/vtunnelReconcile.js';
import { runs, smallForward } from '../properties/arbitraries.js';

const config: VtunnelConfig = { address: '127.0.0.1:3040', resyncMs: 3000, withdrawTimeoutMs: 5000, backoff: { initialMs: 10, maxMs: 40 } };
const fwd = (hostPort: number): Forward => ({ protocol: 'tcp', hostIp: '0.0.0.0', hostPort, source: 'docker', owner: 'c1' });
const keys = (fs: readonly Forward[]): PortKey[] => fs.map(portKey).sort();
const asMap = (m: VtunnelState['desired']): Map<PortKey, Forward> => new Map(sharedEntries(m));

function run(inputs: readonly VtunnelInput[], s: VtunnelState = initialVtunnelState): { state: VtunnelState; commands: VtunnelCommand[] } {
  const commands: VtunnelCommand[] = [];
  for (const input of inputs) {
    const step = reconcileVtunnel(s, input, config);
    s = step.state;
    commands.push(...step.commands);
  }
  return { state: s, commands };
}

test('reconcile: an add sends one round; success reports wrote and arms the re-send', () => {
  const { state, commands } = run([{ kind: 'delta', delta: { added: [fwd(80)], removed: [] } }]);
  assert.deepEqual(commands, [{ kind: 'send', round: { removes: [], adds: [fwd(80)] } }]);
  const after = run([{ kind: 'delivered', remove: false, forwards: [fwd(80)] }, { kind: 'sent' }], state);
  assert.deepEqual(after.commands, [
    { kind: 'report', report: { sink: 'vtunnel', type: 'wrote', added: [fwd(80)], removed: [] } },
    { kind: 'timer', timer: 'resync', ms: 3000 },
  ]);
});

test('reconcile: a failure backs off with the drawn jitter, warns once, and the retry re-sends everything', () => {
  const first = run([
    { kind: 'delta', delta: { added: [fwd(80)], removed: [] } },
    { kind: 'delivered', remove: false, forwards: [fwd(80)] },
    { kind: 'sent' },
    { kind: 'delta', delta: { added: [fwd(81)], removed: [] } },
    { kind: 'failed', error: 'refused', random: 0.5 },
  ]);
  const levels = first.commands.flatMap((c) => (c.kind === 'log' ? [c.level] : []));
  assert.deepEqual(levels, ['warn']);
  assert.ok(first.commands.some((c) => c.kind === 'timer' && c.timer === 'retry' && c.ms === 10));
  const retry = run([{ kind: 'timer', timer: 'retry' }], first.state);
  assert.deepEqual(retry.commands, [{ kind: 'send', round: { removes: [], adds: [fwd(80), fwd(81)] } }]);
});

test('reconcile: a withdrawal past its deadline reports abandoned with what may be left, then done', () => {
  const { commands } = run([
    { kind: 'delta', delta: { added: [fwd(80)], removed: [] } },
    { kind: 'delivered', remove: false, forwards: [fwd(80)] },
    { kind: 'sent' },
    { kind: 'stop' },
    { kind: 'failed', error: 'refused', random: 0.5 },
    { kind: 'timer', timer: 'deadline' },
  ]);
  assert.deepEqual(commands.slice(-2), [
    { kind: 'report', report: { sink: 'vtunnel', type: 'abandoned', count: 1, forwards: [fwd(80)], error: 'refused' } },
    { kind: 'done' },
  ]);
});

test('reconcile: a stale timer, or any input after done, changes nothing', () => {
  assert.deepEqual(run([{ kind: 'timer', timer: 'retry' }, { kind: 'timer', timer: 'resync' }]).commands, []);
  const finished = run([{ kind: 'stop' }]);
  assert.deepEqual(finished.commands.at(-1), { kind: 'done' });
  assert.deepEqual(run([{ kind: 'delta', delta: { added: [fwd(1)], removed: [] } }], finished.state).commands, []);
});

type Event = { readonly kind: 'delta'; readonly delta: PortDelta } | { readonly kind: 'outcome'; readonly ok: boolean; readonly arrived: boolean } | { readonly kind: 'restart' } | { readonly kind: 'resync' };

const event: fc.Arbitrary<Event> = fc.oneof(
  fc.record({ added: fc.array(smallForward, { maxLength: 4 }), removed: fc.array(smallForward, { maxLength: 4 }) }).map((delta) => ({ kind: 'delta' as const, delta })),
  fc.record({ ok: fc.boolean(), arrived: fc.boolean() }).map((o) => ({ kind: 'outcome' as const, ...o })),
  fc.constant({ kind: 'restart' as const }),
  fc.constant({ kind: 'resync' as const }),
);

/** Drives the reducer against a simulated host; `check` sees every round it sends. */
class Simulation {
  state: VtunnelState = initialVtunnelState;
  readonly host = new Map<PortKey, Forward>();
  pending: Round | undefined;
  retryArmed = false;
  resyncArmed = false;
  done = false;

  feed(input: VtunnelInput): void {
    const step = reconcileVtunnel(this.state, input, config);
    this.state = step.state;
    for (const c of step.commands) {
      if (c.kind === 'send') {
        assert.equal(this.pending, undefined, 'one round at a time');
        this.checkPlan(step.state, c.round);
        this.pending = c.round;
      } else if (c.kind === 'timer') {
        if (c.timer === 'retry') this.retryArmed = c.ms !== undefined;
        if (c.timer === 'resync') this.resyncArmed = c.ms !== undefined;
      } else if (c.kind === 'done') this.done = true;
    }
  }

  /** The cheap plan, made from the dirty keys, is the reference plan over the state it was made from. */
  private checkPlan(planned: VtunnelState, round: Round): void {
    const reference = planRound(asMap(planned.desired), asMap(planned.onHost), planned.inSync);
    assert.deepEqual(keys(round.adds), keys(reference.adds));
    assert.deepEqual(keys(round.removes), keys(reference.removes));
  }

  /** The round in flight ends: `ok`, or failed with its adds `arrived` or not. */
  answer(ok: boolean, arrived: boolean): void {
    const round = this.pending;
    if (round === undefined) return;
    this.pending = undefined;
    for (const f of round.removes) this.host.delete(portKey(f));
    this.feed({ kind: 'delivered', remove: true, forwards: round.removes });
    if (ok || arrived) for (const f of round.adds) this.host.set(portKey(f), f);
    if (ok) {
      this.feed({ kind: 'delivered', remove: false, forwards: round.adds });
      this.feed({ kind: 'sent' });
    } else this.feed({ kind: 'failed', error: 'refused', random: 0.5 });
  }

  /** No more failures: answer everything and fire due timers until nothing is left to do. */
  settle(): void {
    for (let i = 0; i < 1000 && !this.done; i++) {
      if (this.pending) this.answer(true, true);
      else if (this.retryArmed) {
        this.retryArmed = false;
        this.feed({ kind: 'timer', timer: 'retry' });
      } else return;
    }
  }
}

test('property: whatever fails or restarts meanwhile, the host ends up holding exactly what is wanted, and nothing after a withdrawal', () => {
  fc.assert(
    fc.property(fc.array(event, { maxLength: 40 }), (events) => {
      const sim = new Simulation();
      for (const e of events) {
        if (e.kind === 'delta') sim.feed(e);
        else if (e.kind === 'outcome') sim.answer(e.ok, e.arrived);
        else if (e.kind === 'restart') sim.host.clear();
        else if (sim.resyncArmed && !sim.pending) {
          sim.resyncArmed = false;
          sim.feed({ kind: 'timer', timer: 'resync' });
        }
      }
      sim.settle();
      if (sim.resyncArmed) {
        sim.feed({ kind: 'timer', timer: 'resync' });
        sim.settle();
      }
      assert.deepEqual([...sim.host.keys()].sort(), [...asMap(sim.state.desired).keys()].sort());
      sim.feed({ kind: 'stop' });
      sim.settle();
      assert.ok(sim.done, 'the withdrawal finished');
      assert.equal(sim.host.size, 0);
    }),
    runs(300),
  );
});
