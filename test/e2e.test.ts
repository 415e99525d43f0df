/**
 * End to end, as a user would run it: a "host" network namespace that the test makes, joined to
 * the root namespace (which plays the VM, where the real dockerd runs) by a veth pair with
 * private test addresses (10.213.N.1/30 on the host side, 10.213.N.2/30 on the VM side).
 *
 *   host netns                                   root netns ("the VM")
 *   portstream host -listen 10.213.N.1:3040  <── agent: -docker -privilegedService -vtunnelAddr 10.213.N.1:3040
 *   listens 0.0.0.0:P, proxies to 10.213.N.2:P ──> docker -p P:80 (busybox httpd), -p U:53/udp (echo)
 *   client: wget http://127.0.0.1:P/big, UDP to 127.0.0.1:U
 *
 * Only addresses in the namespace and veth pair made here, and loopback, are ever a target.
 * Everything made (namespace, veth, container, processes) is removed in `after`, also on failure.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { test, type TestContext } from 'node:test';
import { runBytes, start, stop, tail, type Proc } from './loopbackHarness.js';
import {
  busyboxImage,
  containerPid,
  docker,
  dockerNeeds,
  ensureBusyboxImage,
  ensureDockerd,
  findBinary,
  gateFor,
  requireOrSkip,
  run,
  succeeds,
  TestContainers,
  waitFor,
  type Gate,
} from './engines.js';

const bigSize = 1024 * 1024;

function gate(): Gate {
  const engines = gateFor([...dockerNeeds, 'ip']);
  if (engines.status !== 'ok') return engines;
  // nsenter runs the UDP echo inside the container's network namespace (busybox's nc has no -u).
  return requireOrSkip('`nsenter`', findBinary('nsenter') !== undefined, 'apt-get install -y util-linux');
}

/** A /30 in 10.213.0.0/16 that no interface here uses yet. */
async function freeSubnet(): Promise<number> {
  const used = (await run('ip', ['-4', '-o', 'addr', 'show'])).stdout;
  for (let i = 0; i < 250; i++) {
    const octet = (process.pid + i) % 250;
    if (!used.includes(`10.213.${String(octet)}.`)) return octet;
  }
  throw new Error('no free 10.213.N.0/30 subnet');
}

/** Listening sockets on `port` in the namespace (`ss -H -ltn` or `-lun`). */
async function listeners(ns: string, protocol: 'tcp' | 'udp', port: number): Promise<string> {
  const flags = protocol === 'tcp' ? '-Hltn' : '-Hlun';
  return (await run('ip', ['netns', 'exec', ns, 'ss', flags, `sport = :${String(port)}`])).stdout.trim();
}

/** A UDP client run inside the host namespace: sends until a reply comes, prints it. */
const udpClient = `
const dgram = require('node:dgram');
const [host, port, text] = process.argv.slice(1);
const s = dgram.createSocket('udp4');
let tries = 0;
const send = () => {
  if (tries++ === 10) { console.error('no reply'); process.exit(1); }
  s.send(text, Number(port), host);
};
s.on('message', (m) => { process.stdout.write(m.toString()); process.exit(0); });
s.bind(0, () => { send(); setInterval(send, 300); });
`;

/** A UDP echo run inside the container's network namespace on port 53. */
const udpEcho = `
const dgram = require('node:dgram');
const s = dgram.createSocket('udp4');
s.on('message', (m, r) => s.send('echo:' + m.toString(), r.port, r.address));
s.bind(53, '0.0.0.0', () => console.log('ready'));
`;

const gated = gate();
const body = async (t: TestContext): Promise<void> => {
  await ensureDockerd();
  await ensureBusyboxImage();

  const suffix = String(process.pid % 100_000);
  const ns = `psh${suffix}`;
  const vethVm = `psv${suffix}`;
  const vethHost = `psh${suffix}`;
  const octet = await freeSubnet();
  const hostAddr = `10.213.${String(octet)}.1`;
  const vmAddr = `10.213.${String(octet)}.2`;

  const cleanups: (() => Promise<unknown>)[] = [];
  const procs: Proc[] = [];
  t.after(async () => {
    for (const cleanup of cleanups.reverse()) {
      try {
        await cleanup();
      } catch (err) {
        process.stderr.write(`e2e cleanup: ${err instanceof Error ? err.message : String(err)}\n`);
      }
    }
  });
  const explain = (): string => procs.map((p) => tail(p)).join('\n');

  // ---- the two namespaces and the veth pair between them ----------------------------------
  cleanups.push(() => run('ip', ['netns', 'del', ns]).catch(() => undefined));
  cleanups.push(() => run('ip', ['link', 'del', vethVm]).catch(() => undefined));
  await run('ip', ['netns', 'add', ns]);
  await run('ip', ['link', 'add', vethVm, 'type', 'veth', 'peer', 'name', vethHost]);
  await run('ip', ['link', 'set', vethHost, 'netns', ns]);
  await run('ip', ['addr', 'add', `${vmAddr}/30`, 'dev', vethVm]);
  await run('ip', ['link', 'set', vethVm, 'up']);
  await run('ip', ['netns', 'exec', ns, 'ip', 'addr', 'add', `${hostAddr}/30`, 'dev', vethHost]);
  await run('ip', ['netns', 'exec', ns, 'ip', 'link', 'set', vethHost, 'up']);
  await run('ip', ['netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up']);
  await waitFor(() => succeeds('ip', ['netns', 'exec', ns, 'busybox', 'ping', '-c', '1', '-W', '1', vmAddr]), 10_000, 'the veth pair to carry traffic');

  // ---- the host side in the host namespace, the agent beside dockerd ----------------------
  const node = process.execPath;
  const host = start('portstream host', 'ip', ['netns', 'exec', ns, node, '--import', 'tsx', 'src/main.ts', 'host', '-listen', `${hostAddr}:3040`, '-debug']);
  procs.push(host);
  cleanups.push(() => stop(host));
  await waitFor(() => host.output().includes(`receiving PortMappings on ${hostAddr}:3040`), 30_000, () => `the host side to listen\n${explain()}`);

  const agent = start('agent', node, [
    '--import',
    'tsx',
    'src/main.ts',
    '-docker',
    '-privilegedService',
    '-iptables=false',
    '-procnet=false',
    '-vtunnelAddr',
    `${hostAddr}:3040`,
    '-connectInterface',
    vethVm,
  ], { ...process.env, PORTSTREAM_LOG_LEVEL: 'debug' });
  procs.push(agent);
  cleanups.push(() => stop(agent));
  await waitFor(() => agent.output().includes('portstream agent running'), 30_000, () => `the agent to start\n${explain()}`);

  // ---- a busybox httpd with a 1 MiB file, and a UDP echo ------------------------------------
  const containers = new TestContainers();
  cleanups.push(() => containers.removeAll());
  let id = '';
  let tcpPort = 0;
  let udpPort = 0;
  for (let attempt = 0; attempt < 5 && id === ''; attempt++) {
    tcpPort = 42_000 + Math.floor(Math.random() * 900);
    udpPort = tcpPort + 1;
    try {
      id = await containers.run(
        '-p',
        `${String(tcpPort)}:80`,
        '-p',
        `${String(udpPort)}:53/udp`,
        busyboxImage,
        'sh',
        '-c',
        `busybox mkdir -p /www && busybox dd if=/dev/urandom of=/www/big bs=1024 count=1024 2>/dev/null && exec httpd -f -p 80 -h /www`,
      );
    } catch (err) {
      if (!(err instanceof Error && /address already in use|port is already allocated/i.test(err.message))) throw err;
    }
  }
  assert.notEqual(id, '', 'could not find free host ports for the container');
  await waitFor(async () => (await docker('exec', id, 'busybox', 'stat', '-c', '%s', '/www/big')).trim() === String(bigSize), 30_000, 'the 1 MiB file');
  const expected = (await docker('exec', id, 'busybox', 'sha256sum', '/www/big')).split(' ')[0] ?? '';
  assert.match(expected, /^[0-9a-f]{64}$/);

  const echo = start('udp echo', 'nsenter', [`--net=/proc/${String(await containerPid(id))}/ns/net`, node, '-e', udpEcho]);
  procs.push(echo);
  cleanups.push(() => stop(echo));
  await waitFor(() => echo.output().includes('ready'), 15_000, () => `the UDP echo\n${explain()}`);

  // ---- from the host namespace: the forwards appear, and traffic flows ----------------------
  await waitFor(async () => (await listeners(ns, 'tcp', tcpPort)) !== '', 15_000, () => `tcp ${String(tcpPort)} to listen in the host namespace\n${explain()}`);
  await waitFor(async () => (await listeners(ns, 'udp', udpPort)) !== '', 15_000, () => `udp ${String(udpPort)} to listen in the host namespace\n${explain()}`);

  const bodyBytes = await runBytes('ip', ['netns', 'exec', ns, 'busybox', 'wget', '-q', '-O', '-', `http://127.0.0.1:${String(tcpPort)}/big`]);
  assert.equal(bodyBytes.length, bigSize, 'the whole 1 MiB arrived');
  assert.equal(createHash('sha256').update(bodyBytes).digest('hex'), expected, 'and intact (sha256 as in the container)');

  const token = `ping-${String(Date.now())}`;
  const reply = await runBytes('ip', ['netns', 'exec', ns, node, '-e', udpClient, '127.0.0.1', String(udpPort), token]);
  assert.equal(reply.toString(), `echo:${token}`, 'the UDP request got its reply');

  // What crossed the wire: the agent's PortMapping, as the host side logged it.
  assert.match(host.output(), new RegExp(`"msg":"add [^"]*tcp/0\\.0\\.0\\.0:${String(tcpPort)}`), tail(host));

  // ---- docker rm -f: the host ports close ------------------------------------------------
  await docker('rm', '-f', id);
  await waitFor(async () => (await listeners(ns, 'tcp', tcpPort)) === '' && (await listeners(ns, 'udp', udpPort)) === '', 15_000, () => `the host ports to close\n${explain()}`);
  await assert.rejects(runBytes('ip', ['netns', 'exec', ns, 'busybox', 'wget', '-q', '-O', '-', `http://127.0.0.1:${String(tcpPort)}/big`], 10_000), /Connection refused|can't connect/i);

  // ---- SIGTERM: both exit 0 ----------------------------------------------------------------
  assert.equal(await stop(agent), 0, `the agent exits 0 on SIGTERM\n${tail(agent)}`);
  assert.equal(await stop(host), 0, `the host side exits 0 on SIGTERM\n${tail(host)}`);
  assert.equal((await run('ip', ['netns', 'exec', ns, 'ss', '-Hltn', 'sport = :3040'])).stdout.trim(), '', 'the receiver socket is closed');
};

if (gated.status === 'ok') {
  void test('end to end across two network namespaces: HTTP with a 1 MiB body and UDP from "host" to a container; docker rm -f closes the host port', { timeout: 240_000 }, body);
} else if (gated.status === 'skip') {
  void test('end to end across two network namespaces', { skip: gated.reason }, () => undefined);
} else {
  const reason = gated.reason;
  void test('end to end across two network namespaces', () => {
    throw new Error(reason);
  });
}
