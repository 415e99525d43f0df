/**
 * The real grpc-js client of the containerd stream against a containerd that hangs: a gRPC
 * server on a unix socket of a temporary directory, serving the vendored Containers service, that
 * takes each call and never answers. Giving up on a call (a reconnect, a failed scan) must cancel
 * it, not leave it open until its deadline. And the file a container label points at is read
 * with care. No engine is needed.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { pino } from 'pino';
import { lastValueFrom } from 'rxjs';
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
  const client = grpcContainerdClient(socketPath, { callTimeoutMs: 60_000, logger: pino({ level: 'silent' }) });
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

test('containerd client: network-config.json is read only as a regular file of bounded size; a FIFO there does not block', { timeout: 30_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'portstream-state-dirs-'));
  const client = grpcContainerdClient(join(dir, 'no.sock'), { logger: pino({ level: 'silent' }) });
  t.after(() => {
    client.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const stateDir = (name: string, make: (file: string) => void): string => {
    const path = join(dir, name);
    mkdirSync(path);
    make(join(path, 'network-config.json'));
    return path;
  };
  const read = (path: string): Promise<string | undefined> => lastValueFrom(client.networkConfig(path));
  const config = '{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}';

  assert.equal(await read(stateDir('plain', (f) => { writeFileSync(f, config); })), config);
  assert.equal(await read(join(dir, 'none')), undefined, 'no file: no ports, not an error');
  await assert.rejects(read(stateDir('fifo', (f) => execFileSync('mkfifo', [f]))), /not a regular file/);
  await assert.rejects(read(stateDir('dir', (f) => { mkdirSync(f); })), /not a regular file/);
  await assert.rejects(read(stateDir('huge', (f) => { writeFileSync(f, Buffer.alloc(2 * 1024 * 1024, 0x20)); })), /2097152 bytes, more than 1048576/);
  await assert.rejects(read('relative/dir'), /not an absolute path/);
});
