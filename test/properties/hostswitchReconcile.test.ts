/**
 * Properties of the host-switch reconciler (`src/sinks/hostswitch/reconcile.ts`), with no I/O:
 * a simulated forwarder (keyed by protocol+local, answering a duplicate expose with the bind error
 * as forwarders before v0.8.2 do) and a random interleaving of deltas, answers (200, 408, no
 * answer, 400), list reads, retry timers and ticks. Whatever the interleaving:
 * - never more than `concurrency` requests in flight, never two for one host port;
 * - never an expose of an entry the forwarder already holds (adopted from the list instead);
 * - once the faults stop and every timer has run, the forwarder holds exactly what is wanted
 *   (plus what others own), and the host's own entries are never touched;
 * - after `stop`, everything ours is gone, `withdrawn` is the last report, and the sink is done.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import type { Forward } from '../../src/model.js';
import { classifyReply as classify, entryFor, entryKey, exposeBody, laneOf } from '../../src/sinks/hostswitch/api.js';
import { reconcile } from '../../src/sinks/hostswitch/reconcile.js';
import { initialState, type Command, type Env, type Input, type State } from '../../src/sinks/hostswitch/state.js';
import type { SinkReport } from '../../src/sinks/sink.js';
import { runs } from './arbitraries.js';

type Fault = 'ok' | '408' | 'none' | '400';
type Action =
  | { readonly kind: 'toggle'; readonly forward: number }
  | { readonly kind: 'answer'; readonly pick: number; readonly fault: Fault }
  | { readonly kind: 'list'; readonly fail: boolean }
  | { readonly kind: 'timer'; readonly pick: number }
  | { readonly kind: 'tick' };

const tap = '192.168.127.2';
const universe: Forward[] = [];
for (const protocol of ['tcp', 'udp'] as const) {
  for (const hostIp of ['0.0.0.0', '127.0.0.1', '10.0.0.5', '::']) {
    for (const hostPort of [1, 2, 3]) universe.push({ protocol, hostIp, hostPort, source: 'docker', owner: 'c' });
  }
}

class Sim {
  state: State = initialState();
  readonly host = new Map<string, string>(); // protocol/local → remote
  inFlight: Extract<Command, { type: 'expose' | 'unexpose' }>[] = [];
  lists: number[] = [];
  timers: Input[] = [];
  deadline = false;
  done = false;
  duplicates = 0;
  readonly reports: SinkReport[] = [];
  readonly wanted = new Set<number>();
  constructor(readonly env: Env) {}

  feed(input: Input): void {
    const step = reconcile(this.state, input, this.env);
    this.state = step.state;
    for (const c of step.commands) this.carry(c);
    assert.equal(this.state.inFlight, this.inFlight.length);
    assert.ok(this.inFlight.length <= this.env.concurrency, 'within the concurrency bound');
    const lanes = this.inFlight.map((c) => laneOf(c.entry));
    assert.equal(new Set(lanes).size, lanes.length, `one request per host port: ${lanes.join(' ')}`);
  }

  carry(c: Command): void {
    if (c.type === 'expose' || c.type === 'unexpose') this.inFlight.push(c);
    else if (c.type === 'list') this.lists.push(c.seq);
    else if (c.type === 'cancelList') this.lists = [];
    else if (c.type === 'wait') this.timers.push({ type: 'retry', key: c.key, gen: c.gen });
    else if (c.type === 'deadline') this.deadline = true;
    else if (c.type === 'report') this.reports.push(c.report);
    else if (c.type === 'done') this.done = true;
  }

  /** Answers an in-flight request as the forwarder would, or with a fault (that may still have taken effect). */
  answer(pick: number, fault: Fault): void {
    const c = this.inFlight.splice(pick % this.inFlight.length, 1)[0]!;
    const key = entryKey(c.entry);
    let status = 200;
    let body = '';
    if (fault === '400') [status, body] = [400, 'bad'];
    else if (c.type === 'expose' && this.host.has(key)) {
      this.duplicates += 1;
      [status, body] = [500, `listen ${c.entry.protocol} ${c.entry.local}: bind: address already in use`];
    } else if (c.type === 'expose') this.host.set(key, c.entry.remote);
    else if (!this.host.delete(key)) [status, body] = [500, 'proxy not found'];
    if (fault === '408') [status, body] = [408, 'Request Timeout'];
    const answer = fault === 'none' ? { kind: 'none' as const, message: 'ECONNRESET' } : classify(c.type, status, body);
    this.feed({ type: 'answer', key, op: c.type, answer });
  }

  list(fail: boolean): void {
    const seq = this.lists.shift();
    if (seq === undefined) return;
    const list = fail ? { error: 'not JSON' } : [...this.host].map(([k, remote]) => ({ protocol: k.slice(0, 3) as 'tcp' | 'udp', local: k.slice(4), remote }));
    this.feed({ type: 'listed', seq, list });
  }

  /**
   * Everything answered well and every timer run, until nothing is left to do. An entry held by
   * the host's own forward retries for as long as it is there (that is right): its timers are
   * dropped here, or this would never end.
   */
  heal(blocked: ReadonlyMap<string, string>): void {
    for (let i = 0; i < 10_000; i++) {
      if (this.inFlight.length > 0) this.answer(0, 'ok');
      else if (this.lists.length > 0) this.list(false);
      else {
        const timer = this.timers.shift();
        if (timer === undefined) return;
        if (timer.type === 'retry' && timer.key !== undefined && blocked.has(timer.key)) continue;
        this.feed(timer);
      }
    }
    assert.fail('no quiescence after 10,000 steps');
  }
}


const action: fc.Arbitrary<Action> = fc.oneof(
  fc.record({ kind: fc.constant('toggle' as const), forward: fc.nat(universe.length - 1) }),
  fc.record({ kind: fc.constant('answer' as const), pick: fc.nat(), fault: fc.constantFrom<Fault>('ok', 'ok', '408', 'none', '400') }),
  fc.record({ kind: fc.constant('list' as const), fail: fc.boolean() }),
  fc.record({ kind: fc.constant('timer' as const), pick: fc.nat() }),
  fc.constant({ kind: 'tick' as const }),
);

test('reconcile: bounded, per-port, never a duplicate expose; converges once faults stop; withdraws all of ours and nothing else', () => {
  fc.assert(
    fc.property(fc.array(action, { maxLength: 80 }), fc.boolean(), fc.integer({ min: 1, max: 3 }), fc.subarray([1, 2, 3]), (actions, adminInstall, concurrency, leftover) => {
      const addressing = { tapInterfaceIp: tap, adminInstall };
      const sim = new Sim({ addressing, concurrency, withdrawTimeoutMs: 100, delayOf: (n) => n * 10, where: 'sim' });
      // The host's own entries (another remote), and an earlier run's on our ports: adoptable.
      sim.host.set('tcp/127.0.0.1:9', '10.0.0.9:9');
      sim.host.set('udp/127.0.0.1:1', '10.0.0.9:1');
      for (const p of leftover) sim.host.set(`tcp/127.0.0.1:${String(p)}`, `${tap}:${String(p)}`);
      const theirs = new Map([...sim.host].filter(([, remote]) => !remote.startsWith(tap)));
      sim.feed({ type: 'start' });
      for (const a of actions) {
        if (a.kind === 'toggle') {
          const f = universe[a.forward]!;
          const on = !sim.wanted.has(a.forward);
          if (on) sim.wanted.add(a.forward);
          else sim.wanted.delete(a.forward);
          sim.feed({ type: 'delta', delta: on ? { added: [f], removed: [] } : { added: [], removed: [f] } });
        } else if (a.kind === 'answer' && sim.inFlight.length > 0) sim.answer(a.pick, a.fault);
        else if (a.kind === 'list') sim.list(a.fail);
        else if (a.kind === 'timer' && sim.timers.length > 0) sim.feed(sim.timers.splice(a.pick % sim.timers.length, 1)[0]!);
        else if (a.kind === 'tick') sim.feed({ type: 'tick' });
      }
      sim.heal(theirs);
      sim.feed({ type: 'tick' }); // a last look at the host, as the periodic re-read does
      sim.heal(theirs);
      assert.equal(sim.duplicates, 0, 'never an expose of what the forwarder holds');
      const want = new Map<string, string>();
      for (const i of sim.wanted) {
        const e = entryFor(universe[i]!, addressing);
        if (e) want.set(entryKey(e), e.remote);
      }
      for (const [k, remote] of want) {
        if (!theirs.has(k)) assert.equal(sim.host.get(k), remote, `${k} is on the host: ${exposeBody({ local: k.slice(4), remote, protocol: 'tcp' })}`);
      }
      for (const [k, remote] of theirs) assert.equal(sim.host.get(k), remote, `the host's own ${k} is untouched`);
      sim.feed({ type: 'stop' });
      sim.heal(theirs);
      assert.ok(sim.done, 'done after the withdraw');
      assert.equal(sim.reports.at(-1)?.type, 'withdrawn');
      for (const k of want.keys()) if (!theirs.has(k)) assert.equal(sim.host.has(k), false, `${k} withdrawn`);
      for (const [k, remote] of theirs) assert.equal(sim.host.get(k), remote, `the host's own ${k} is untouched at stop`);
    }),
    runs(300),
  );
});
