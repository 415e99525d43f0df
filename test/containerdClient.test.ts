/**
 * The real grpc-js client of the containerd stream against a containerd that hangs: a gRPC
 * server on a unix socket of a temporary directory, serving the vendored Containers service, that
 * takes each call and never answers. Giving up on a call (a reconnect, a failed scan) must cancel
 * it, not leave it open until its deadline. No engine is needed.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { pino } from 'pino';
import { containerdProto, grpcContainerdClient } from '../streams/containerdClient.js';
import { waitFor } from './engines.js';

test('containerd client: a lookup given up on is cancelled at once, not left to its deadline', { timeout: 30_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'portstream-hung-containerd-'));
  const socketPath = join(dir, 'containerd.sock');
  const calls: { namespace: string; id: string; cancelled: boolean }[] = [];
  const server = new grpc.Server();
  server.addService(containerdProto().containerd.services.containers.v1.Containers.service, {
    Get: (call: grpc.ServerUnaryCall<{ id: string }, unknown>) => {
      const seen = { namespace: String(call.metadata.get('containerd-namespace')[0]), id: call.request.id, cancelled: false };
      calls.push(seen);
      call.on('cancelled', () => {
        seen.cancelled = true;
      });
      // never answers
    },
  });
  await new Promise<void>((resolve, reject) => {
    server.bindAsync(`unix://${socketPath}`, grpc.ServerCredentials.createInsecure(), (err) => {
      if (err) reject(err);
      else resolve();
    });
  });
  const client = grpcContainerdClient(socketPath, { callTimeoutMs: 60_000, log: pino({ level: 'silent' }) });
  t.after(() => {
    client.close();
    server.forceShutdown();
    rmSync(dir, { recursive: true, force: true });
  });

  const sub = client.container('tenant', 'c1').subscribe({ error: () => undefined });
  await waitFor(() => calls.length === 1, 5_000, 'the lookup to reach the server');
  assert.deepEqual(calls[0], { namespace: 'tenant', id: 'c1', cancelled: false }, 'the namespace travels as containerd-namespace metadata');
  sub.unsubscribe();
  await waitFor(() => calls[0]?.cancelled === true, 5_000, 'the server to see the call cancelled');
});
