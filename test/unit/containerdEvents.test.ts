/**
 * Decoding containerd's event envelopes with the vendored protos: the bytes here are made with
 * the same protos' serialisers, in the shape containerd sends (type URLs without a prefix, as
 * containerd's typeurl registry writes them, and with one for good measure).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { containerdProto, decodeEnvelope, protoDir } from '../../streams/containerdClient.js';
import type { Envelope__Output } from '../../streams/containerd-types/containerd/services/events/v1/Envelope.js';
import { recordingLogger } from '../../marbles/helpers.js';

const events = containerdProto().containerd.events;
const envelope = (topic: string, type_url: string, value: Buffer, namespace = 'default'): Envelope__Output => ({
  timestamp: null,
  namespace,
  topic,
  event: { type_url, value },
});

test('the vendored protos are found beside streams/', () => {
  assert.match(protoDir(), /\/proto$/);
});

test('decodeEnvelope: the four topics, with their namespace', () => {
  const { log } = recordingLogger();
  assert.deepEqual(
    decodeEnvelope(envelope('/tasks/start', 'containerd.events.TaskStart', events.TaskStart.serialize({ container_id: 'web', pid: 42 }), 'k8s.io'), log),
    { namespace: 'k8s.io', topic: '/tasks/start', event: { container_id: 'web', pid: 42 } },
  );
  const exit = decodeEnvelope(envelope('/tasks/exit', 'containerd.events.TaskExit', events.TaskExit.serialize({ container_id: 'web', id: 'exec-1', pid: 7, exit_status: 3 })), log);
  assert.ok(exit?.topic === '/tasks/exit');
  assert.deepEqual({ container_id: exit.event.container_id, id: exit.event.id }, { container_id: 'web', id: 'exec-1' });
  const update = decodeEnvelope(
    envelope('/containers/update', 'containerd.events.ContainerUpdate', events.ContainerUpdate.serialize({ id: 'web', labels: { 'nerdctl/ports': '[]', a: 'b' } })),
    log,
  );
  assert.deepEqual(update?.topic === '/containers/update' && update.event.labels, { 'nerdctl/ports': '[]', a: 'b' });
  assert.deepEqual(
    decodeEnvelope(envelope('/containers/delete', 'type.googleapis.com/containerd.events.ContainerDelete', events.ContainerDelete.serialize({ id: 'web' })), log),
    { namespace: 'default', topic: '/containers/delete', event: { id: 'web' } },
  );
});

test('decodeEnvelope: other topics are not ours; a payload that does not match its topic is logged and dropped', () => {
  const { log, lines } = recordingLogger();
  assert.equal(decodeEnvelope(envelope('/images/create', 'containerd.events.ImageCreate', Buffer.alloc(0)), log), undefined);
  assert.equal(lines().length, 0);
  assert.equal(decodeEnvelope(envelope('/tasks/start', 'containerd.events.TaskExit', Buffer.alloc(0)), log), undefined);
  assert.equal(decodeEnvelope(envelope('/tasks/start', 'containerd.events.TaskStart', Buffer.from([0x0f]) /* field 1, wire type 7: no such wire type */), log), undefined);
  const warnings = lines().map((l) => l.msg);
  assert.equal(warnings.length, 2);
  assert.match(warnings[0]!, /\/tasks\/start event whose payload is "containerd.events.TaskExit", not containerd.events.TaskStart/);
  assert.match(warnings[1]!, /\/tasks\/start event that does not decode/);
});
