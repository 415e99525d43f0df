/**
 * The AF_VSOCK transport of the vtunnel sink. This kernel has the virtio (guest → host) transport
 * but no loopback, so no connection can be made end to end here, and CID 2 (the real host) and
 * CID 1 (routed to the host by the guest transport) are never dialled. CID 3 and above have no
 * transport in a guest: connect fails at once with ENODEV, which exercises the whole native path
 * (worker thread, error mapping, promise) without sending anything anywhere.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { test } from 'node:test';
import { firstValueFrom, lastValueFrom, of, toArray } from 'rxjs';
import { vsockAvailable, vsockSender } from '../src/sinks/vsockTransport.js';
import { vtunnelSink } from '../src/sinks/vtunnel.js';
import { recordingLogger, fwd } from '../marbles/helpers.js';
import { requireOrSkip } from './engines.js';

const gate = requireOrSkip('AF_VSOCK (the vsock kernel module and the native addon)', existsSync('/dev/vsock') && vsockAvailable() === undefined, 'modprobe vmw_vsock_virtio_transport and run npm install with a C compiler');
const opts = gate.status === 'skip' ? { skip: gate.reason } : {};

test('the native addon is built by npm install', opts, () => {
  assert.equal(vsockAvailable(), undefined);
});

test('vsockSender reports a failed connect with the errno and the address', opts, async () => {
  if (gate.status === 'fail') throw new Error(gate.reason);
  const send = vsockSender(3, 17381, 2000);
  await assert.rejects(firstValueFrom(send('{"remove":false}\n')), (error: Error & { errno?: number }) => {
    assert.match(error.message, /^vsock connect to 3:17381: No such device$/);
    assert.equal(error.errno, 19);
    return true;
  });
});

test('the vtunnel sink speaks AF_VSOCK for vsock://CID:PORT and retries like over TCP', opts, async () => {
  if (gate.status === 'fail') throw new Error(gate.reason);
  const { log, lines } = recordingLogger();
  const reports = await lastValueFrom(
    of({ added: [fwd(8080)], removed: [] }).pipe(
      vtunnelSink({ address: 'vsock://3:17381', connectAddrs: [], logger: log, withdrawTimeoutMs: 300, backoff: { initialMs: 50, maxMs: 100 } }),
      toArray(),
    ),
  );
  const types = reports.map((r) => r.type);
  // Never reached: failures, then at the withdrawal deadline `abandoned` (never `withdrawn`).
  assert.equal(types.at(-1), 'abandoned', types.join(','));
  assert.ok(types.length > 1 && types.slice(0, -1).every((t) => t === 'failed'), `only failures before it: ${types.join(',')}`);
  assert.match(lines().map((l) => l.msg).join('\n'), /vsock connect to 3:17381: No such device/);
});
