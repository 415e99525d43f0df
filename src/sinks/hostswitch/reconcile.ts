import { portKey, type Forward } from '../../model.js';
import type { SinkReport } from '../sink.js';
import { entryFor, entryKey, laneOf, type ForwarderEntry } from './api.js';
import type { Answer, Command, Entry, Env, Input, Op, State, Step } from './state.js';

/**
 * The host-switch sink's decisions as one pure function: given its state and what just happened,
 * what to do next. No I/O, no clock, no timers; the runner (`hostswitch.ts`) carries the
 * commands out and feeds what comes of them back as inputs. See docs/host-switch.md.
 *
 * - The host's list (`GET /all`) is read at start-up before anything is exposed: an entry it
 *   shows exactly as we want it is adopted, never exposed again. It is read again on a `tick`, and
 *   whenever an entry's state on the host is in doubt.
 * - Every entry has its own retry timer for every kind of failure; a failing entry never holds
 *   another back. At most `concurrency` requests are in flight, one per host port (lane).
 * - On `stop`, every entry that is ours is unexposed at once; `done` when all are answered, or
 *   when the `deadline` comes first (then `withdrawn` says how many were left).
 */
export function reconcile(state: State, input: Input, env: Env): Step {
  const out: Command[] = [];
  if (state.done) return { state, commands: out };
  switch (input.type) {
    case 'start':
      state.list.wanted = true;
      break;
    case 'delta':
      for (const f of input.delta.removed) unwant(state, f, env, out);
      for (const f of input.delta.added) want(state, f, env, out);
      break;
    case 'answer':
      answered(state, input.key, input.op, input.answer, env, out);
      break;
    case 'listed':
      listed(state, input.seq, input.list, env, out);
      break;
    case 'retry':
      retried(state, input.key, input.gen);
      break;
    case 'tick':
      if (!state.stopping && state.entries.size > 0) state.list.wanted = true;
      break;
    case 'stop':
      stop(state, env, out);
      break;
    case 'deadline':
      giveUp(state, env, out);
      return { state, commands: out };
  }
  pump(state, env, out);
  return { state, commands: out };
}

const what = (e: ForwarderEntry): string => `${e.local} (${e.protocol})`;
const report = (out: Command[], r: SinkReport): void => {
  out.push({ type: 'report', report: r });
};
const wrote = (out: Command[], added: readonly Forward[], removed: readonly Forward[]): void => {
  report(out, { sink: 'hostswitch', type: 'wrote', added, removed });
};

// ---- what is wanted ------------------------------------------------------------------------

function want(s: State, f: Forward, env: Env, out: Command[]): void {
  const key = portKey(f);
  const entry = entryFor(f, env.addressing);
  if (entry === undefined) {
    if (s.skipped.has(key)) return;
    s.skipped.add(key);
    // Docker publishes every -p on :: too: said once, not at every container start.
    const msg = `skipping ${key}: the host-switch API is IPv4 only${s.ipv6Said ? '' : ' (further IPv6 ports are skipped quietly)'}`;
    out.push({ type: 'log', level: s.ipv6Said ? 'debug' : 'info', fields: { port: key }, msg });
    s.ipv6Said = true;
    return;
  }
  const e = entryOf(s, entry, out);
  e.forwards.set(key, f);
  if (e.host === 'present' && e.ours && !e.reported.has(key)) {
    e.reported.set(key, f);
    wrote(out, [f], []);
  }
  if (e.phase === 'idle') s.pending.add(e.key);
}

/** The entry for `entry`, made if new: what the last list showed of it decides what we believe. */
function entryOf(s: State, entry: ForwarderEntry, out: Command[]): Entry {
  const key = entryKey(entry);
  const known = s.entries.get(key);
  if (known) return known;
  const there = s.listed?.get(key);
  // Shown exactly as ours at the last read: adopted (a stop now unexposes it); it may have gone
  // since, so it is read again rather than exposed.
  const adopted = there?.remote === entry.remote;
  const host = there === undefined ? 'absent' : adopted ? 'unknown' : 'theirs';
  const e: Entry = { key, lane: laneOf(entry), entry, forwards: new Map(), reported: new Map(), host, ours: false, phase: 'idle', attempt: 0, gen: 0, changed: 0, verifyAfterWait: false, sent: [] };
  if (adopted) adopt(e, out);
  s.entries.set(key, e);
  return e;
}

function unwant(s: State, f: Forward, env: Env, out: Command[]): void {
  const key = portKey(f);
  if (s.skipped.delete(key)) return;
  const entry = entryFor(f, env.addressing);
  const e = entry && s.entries.get(entryKey(entry));
  if (!e?.forwards.delete(key)) return;
  if (e.forwards.size > 0) {
    // The entry stays for its other forwards; this one is no longer forwarded on its behalf.
    if (e.reported.delete(key)) wrote(out, [], [f]);
    return;
  }
  if (e.phase === 'idle') s.pending.add(e.key);
}

// ---- deciding ------------------------------------------------------------------------------

/** Looks at pending entries while there is room for requests; reads the list when wanted. */
function pump(s: State, env: Env, out: Command[]): void {
  const started = s.listed !== undefined;
  const listAllowed = !s.stopping || !started; // a withdraw before the first read still needs it
  if (s.list.wanted && s.list.phase === 'idle' && listAllowed) {
    s.list.wanted = false;
    s.list.phase = 'busy';
    s.list.seq = ++s.clock;
    out.push({ type: 'list', seq: s.list.seq });
  }
  // Nothing is exposed or withdrawn before the host's list is known.
  if (started) decidePending(s, env, out);
  if (s.stopping && s.entries.size === 0 && s.inFlight === 0) {
    report(out, { sink: 'hostswitch', type: 'withdrawn', count: s.stopping.removed });
    s.done = true;
    out.push({ type: 'done' });
  }
}

function decidePending(s: State, env: Env, out: Command[]): void {
  for (const key of s.pending) {
    if (s.inFlight >= env.concurrency) break;
    const e = s.entries.get(key);
    if (e?.phase !== 'idle') {
      s.pending.delete(key); // it comes back when its timer, request or read ends
      continue;
    }
    if (s.busyLanes.has(e.lane)) continue;
    s.pending.delete(key);
    decide(s, e, env, out);
  }
}

function decide(s: State, e: Entry, env: Env, out: Command[]): void {
  if (s.stopping === undefined && e.forwards.size > 0) {
    if (e.host === 'absent') send(s, e, 'expose', out);
    else if (e.host === 'present') reportUnreported(e, out);
    else if (e.host === 'unknown') verify(s, e);
    else fail(s, e, `cannot expose ${what(e.entry)}: the host switch forwards it to ${theirRemote(s, e)} (not ours, left alone)`, env, out, true);
    return;
  }
  if (e.ours && (e.host === 'present' || e.host === 'unknown')) {
    send(s, e, 'unexpose', out);
    return;
  }
  s.entries.delete(e.key); // nothing of ours on the host, and nothing wanted
}

const theirRemote = (s: State, e: Entry): string => s.listed?.get(e.key)?.remote ?? 'another address';

function send(s: State, e: Entry, op: Op, out: Command[]): void {
  e.phase = 'busy';
  if (op === 'expose') e.sent = [...e.forwards.values()];
  s.inFlight += 1;
  s.busyLanes.add(e.lane);
  out.push({ type: op, key: e.key, entry: e.entry });
}

function verify(s: State, e: Entry): void {
  e.phase = 'verify';
  s.list.wanted = true;
}

function reportUnreported(e: Entry, out: Command[], also: readonly Forward[] = []): void {
  const added: Forward[] = [];
  for (const f of also) {
    const key = portKey(f);
    if (e.reported.has(key)) continue;
    e.reported.set(key, f);
    added.push(f);
  }
  for (const [key, f] of e.forwards) {
    if (e.reported.has(key)) continue;
    e.reported.set(key, f);
    added.push(f);
  }
  if (added.length > 0) wrote(out, added, []);
}

// ---- answers -------------------------------------------------------------------------------

function answered(s: State, key: string, op: Op, answer: Answer, env: Env, out: Command[]): void {
  const e = s.entries.get(key);
  if (e?.phase !== 'busy') return;
  e.phase = 'idle';
  e.changed = ++s.clock;
  s.inFlight -= 1;
  s.busyLanes.delete(e.lane);
  s.pending.add(key);
  if (answer.kind === 'none' || answer.kind === 'unexpected') {
    s.outage += 1;
    e.host = 'unknown';
    e.ours = true; // it may have taken effect; an unexpose of something not there is harmless
    const error = answer.kind === 'none' ? `could not ${op} ${what(e.entry)}: ${answer.message}` : `${op} ${what(e.entry)} answered ${answer.message}`;
    fail(s, e, error, env, out, true);
    return;
  }
  s.outage = 0;
  if (answer.kind === 'refused') {
    const error = answer.bindError
      ? `cannot expose ${what(e.entry)}: the host port is taken (${answer.message})`
      : `the host switch refused to ${op} ${what(e.entry)}: HTTP ${String(answer.status)} ${answer.message}`;
    fail(s, e, error, env, out, false);
    return;
  }
  e.attempt = 0;
  if (op === 'unexpose') unexposed(s, e, out);
  else if (answer.kind === 'adopted') alreadyRunning(s, e, out);
  else exposed(e, out);
}

function exposed(e: Entry, out: Command[]): void {
  e.host = 'present';
  e.ours = true;
  // A forward withdrawn while its expose was in flight was on the host all the same.
  reportUnreported(e, out, e.sent);
  e.sent = [];
}

function unexposed(s: State, e: Entry, out: Command[]): void {
  e.host = 'absent';
  e.ours = false;
  if (s.stopping) s.stopping.removed += 1;
  else if (e.reported.size > 0) wrote(out, [], [...e.reported.values()]);
  e.reported.clear();
}

/**
 * `proxy already running`: something holds the entry. Ours (an earlier run's) only if the host's
 * list shows it forwarding where ours would; read it again unless the last read already says so.
 */
function alreadyRunning(s: State, e: Entry, out: Command[]): void {
  if (s.listed?.get(e.key)?.remote === e.entry.remote) {
    adopt(e, out);
    exposed(e, out);
    return;
  }
  e.host = 'unknown';
  verify(s, e);
  out.push({ type: 'log', level: 'debug', fields: { local: e.entry.local, protocol: e.entry.protocol }, msg: `${what(e.entry)} is already exposed, but was not when last read; reading the host's forwards again` });
}

function adopt(e: Entry, out: Command[]): void {
  e.ours = true;
  out.push({ type: 'log', level: 'info', fields: { local: e.entry.local, protocol: e.entry.protocol }, msg: `${what(e.entry)} is already exposed (by an earlier run): adopted` });
}

/** A failure of one entry: reported, and retried on its own timer (after a list read when `thenVerify`). */
function fail(s: State, e: Entry, error: string, env: Env, out: Command[], thenVerify: boolean): void {
  e.attempt += 1;
  e.gen += 1;
  e.phase = 'waiting';
  e.verifyAfterWait = thenVerify;
  s.lastError = error;
  const retryInMs = env.delayOf(e.attempt);
  // Without an answer the whole host switch is likely away: the first failure of the outage warns.
  const news = e.attempt === 1 && (e.host !== 'unknown' || s.outage <= 1);
  out.push({ type: 'log', level: news ? 'warn' : 'debug', fields: { key: e.key, err: error, attempt: e.attempt, retryInMs }, msg: `${error}; retrying in ${String(retryInMs)} ms` });
  const forwards = [...e.forwards.values()];
  report(out, { sink: 'hostswitch', type: 'failed', error, retryInMs, ...(forwards.length > 0 && { forwards }) });
  out.push({ type: 'wait', key: e.key, gen: e.gen, ms: retryInMs });
}

function retried(s: State, key: string | undefined, gen: number): void {
  if (key === undefined) {
    if (s.list.phase !== 'waiting' || s.list.gen !== gen) return;
    s.list.phase = 'idle';
    s.list.wanted = true;
    return;
  }
  const e = s.entries.get(key);
  if (e?.phase !== 'waiting' || e.gen !== gen) return; // a stale timer
  e.phase = 'idle';
  if (e.verifyAfterWait && !s.stopping) verify(s, e);
  else s.pending.add(key);
}

// ---- the host's list -----------------------------------------------------------------------

function listed(s: State, seq: number, list: readonly ForwarderEntry[] | { readonly error: string }, env: Env, out: Command[]): void {
  if (s.list.phase !== 'busy' || s.list.seq !== seq) return;
  s.list.phase = 'idle';
  if ('error' in list) {
    listFailed(s, list.error, env, out);
    return;
  }
  if (s.list.attempt > 0) out.push({ type: 'log', level: 'info', fields: { url: env.where, failures: s.list.attempt }, msg: `reached the host switch (${env.where}) again` });
  s.list.attempt = 0;
  s.outage = 0;
  s.listed = new Map(list.map((entry) => [entryKey(entry), entry]));
  for (const e of s.entries.values()) {
    if (e.phase === 'busy' || e.phase === 'waiting' || e.changed > seq) continue; // we know better
    // Most entries are as we believed: only the others, and those waiting for this read, are looked at.
    if (!believeList(s, e, out) && e.phase === 'idle') continue;
    e.phase = 'idle';
    s.pending.add(e.key);
  }
}

/** Updates what we believe of `e` from the list just read; whether that changed anything. */
function believeList(s: State, e: Entry, out: Command[]): boolean {
  const there = s.listed?.get(e.key);
  const before = e.host;
  const wasOurs = e.ours;
  if (there === undefined) {
    // Gone (the host restarted, or someone removed it): exposed again if wanted.
    e.host = 'absent';
    e.ours = false;
    e.reported.clear();
  } else if (there.remote === e.entry.remote) {
    e.host = 'present';
    if (!e.ours && e.forwards.size > 0) adopt(e, out);
  } else {
    e.host = 'theirs';
    e.ours = false;
  }
  return e.host !== before || e.ours !== wasOurs;
}

function listFailed(s: State, error: string, env: Env, out: Command[]): void {
  s.list.attempt += 1;
  s.list.gen += 1;
  s.list.phase = 'waiting';
  s.outage += 1;
  s.lastError = error;
  const retryInMs = env.delayOf(s.list.attempt);
  out.push({
    type: 'log',
    level: s.list.attempt === 1 ? 'warn' : 'debug',
    fields: { url: env.where, err: error, failures: s.list.attempt, retryInMs },
    msg: `host switch (${env.where}): ${error}; retrying in ${String(retryInMs)} ms`,
  });
  report(out, { sink: 'hostswitch', type: 'failed', error, retryInMs });
  out.push({ type: 'wait', key: undefined, gen: s.list.gen, ms: retryInMs });
}

// ---- shutdown ------------------------------------------------------------------------------

function stop(s: State, env: Env, out: Command[]): void {
  s.stopping = { removed: 0 };
  if (s.listed !== undefined && s.list.phase === 'busy') {
    // A re-read would hold the unexposes back; a withdraw needs no list ("proxy not found" is fine).
    s.list.phase = 'idle';
    out.push({ type: 'cancelList' });
  }
  s.list.wanted = false;
  for (const e of s.entries.values()) {
    // Shutdown does not sit out a long back-off: every entry tries now, and backs off afresh.
    e.attempt = 0;
    if (e.phase === 'waiting' || e.phase === 'verify') {
      e.gen += 1;
      e.phase = 'idle';
    }
    if (e.phase === 'idle') s.pending.add(e.key);
  }
  out.push({ type: 'deadline', ms: env.withdrawTimeoutMs });
}

function giveUp(s: State, env: Env, out: Command[]): void {
  if (!s.stopping) return;
  let left = 0;
  for (const e of s.entries.values()) if (e.ours && (e.host === 'present' || e.host === 'unknown')) left += 1;
  const msg =
    `gave up withdrawing ${String(left)} forward${left === 1 ? '' : 's'} from the host switch (${env.where}) after ${String(env.withdrawTimeoutMs)} ms` +
    (s.lastError ? ` (last error: ${s.lastError})` : '');
  out.push({ type: 'log', level: 'warn', fields: { url: env.where, forwards: left, err: s.lastError }, msg });
  report(out, { sink: 'hostswitch', type: 'withdrawn', count: s.stopping.removed, left });
  s.done = true;
  out.push({ type: 'done' });
}
