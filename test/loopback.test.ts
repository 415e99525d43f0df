/**
 * Ports published on 127.0.0.1 reach the host end (docs/loopback.md), end to end as a user would
 * run it, in the style of test/e2e.test.ts: a "host" namespace joined to the root namespace (the
 * "VM", where the real dockerd runs) by a veth pair (10.213.N.1 host side, 10.213.N.2 VM side).
 *
 *   vtunnel:     portstream host (host ns) listens 127.0.0.1:P, dials 10.213.N.2:P
 *   host-switch: the forwarder stand-in (test/fakeForwarder.ts) records `remote` 10.213.N.2:P;
 *                the test dials it from the host ns as gvisor-tap-vsock's forwarder does
 *   VM:          the agent's loopback forwarder on 10.213.N.2:P dials 127.0.0.1:P, where
 *                `docker run -p 127.0.0.1:P:80` (busybox httpd, 1 MiB file) and a UDP echo answer
 *
 * Then: a container's peer (outside the host end's subnet) is refused; `kill -9` of the agent
 * leaves no socket and a restart makes exactly one again; `docker rm -f` closes everything; no
 * rule of portstream's ever appears in iptables-save. Everything made is removed in `after`.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { existsSync } from 'node:fs';
import type { TestContext } from 'node:test';
import { busyboxImage, containerPid, requireOrSkip, docker, dockerNeeds, engineTest, ensureBusyboxImage, ensureDockerd, TestContainers, waitFor } from './engines.js';
import { containerdNeeds, ctrImage, OwnContainerd } from './containerdEngine.js';
import { startFake } from './fakeForwarder.js';
import { cniNetwork, cniPath, makeNsPair, ruleLines, runBytes, socketsOn, start, stop, tail, udpClient, udpEcho, type NsPair, type Proc } from './loopbackHarness.js';

const bigSize = 1024 * 1024;
const node = process.execPath;

interface World {
  readonly pair: NsPair;
  readonly procs: Proc[];
  readonly cleanups: (() => Promise<unknown>)[];
  explain(): string;
}

async function world(t: TestContext, tag: string): Promise<World> {
  await ensureDockerd();
  await ensureBusyboxImage();
  const cleanups: (() => Promise<unknown>)[] = [];
  const procs: Proc[] = [];
  t.after(async () => {
    for (const cleanup of cleanups.reverse()) {
      try {
        await cleanup();
      } catch (err) {
        process.stderr.write(`loopback cleanup: ${err instanceof Error ? err.message : String(err)}\n`);
      }
    }
  });
  const pair = await makeNsPair(tag, cleanups);
  return { pair, procs, cleanups, explain: () => procs.map((p) => tail(p)).join('\n') };
}

function startAgent(w: World, args: readonly string[]): Proc {
  const agent = start('agent', node, ['--import', 'tsx', 'src/main.ts', '-docker', '-iptables=false', ...args], { ...process.env, PORTSTREAM_LOG_LEVEL: 'debug' });
  w.procs.push(agent);
  w.cleanups.push(() => stop(agent));
  return agent;
}

/** A busybox httpd with a 1 MiB file on 127.0.0.1:T and a UDP echo on 127.0.0.1:T+1; its id, ports and the file's sha256. */
async function loopbackContainer(w: World, containers: TestContainers): Promise<{ id: string; tcp: number; udp: number; sha: string }> {
  let id = '';
  let tcp = 0;
  for (let attempt = 0; attempt < 5 && id === ''; attempt++) {
    tcp = 43_000 + Math.floor(Math.random() * 900) * 2;
    try {
      id = await containers.run('-p', `127.0.0.1:${String(tcp)}:80`, '-p', `127.0.0.1:${String(tcp + 1)}:53/udp`, busyboxImage, 'sh', '-c',
        'busybox mkdir -p /www && busybox dd if=/dev/urandom of=/www/big bs=1024 count=1024 2>/dev/null && exec httpd -f -p 80 -h /www');
    } catch (err) {
      if (!(err instanceof Error && /address already in use|port is already allocated/i.test(err.message))) throw err;
    }
  }
  assert.notEqual(id, '', 'could not find free ports for the container');
  await waitFor(async () => (await docker('exec', id, 'busybox', 'stat', '-c', '%s', '/www/big')).trim() === String(bigSize), 30_000, 'the 1 MiB file');
  const sha = (await docker('exec', id, 'busybox', 'sha256sum', '/www/big')).split(' ')[0] ?? '';
  const echo = start('udp echo', 'nsenter', [`--net=/proc/${String(await containerPid(id))}/ns/net`, node, '-e', udpEcho]);
  w.procs.push(echo);
  w.cleanups.push(() => stop(echo));
  await waitFor(() => echo.output().includes('ready'), 15_000, () => `the UDP echo\n${w.explain()}`);
  return { id, tcp, udp: tcp + 1, sha };
}

/** The 1 MiB body, intact, and a UDP reply, from the host namespace through `dial`. */
async function assertReachable(w: World, dial: string, c: { tcp: number; udp: number; sha: string }): Promise<void> {
  const body = await runBytes('ip', ['netns', 'exec', w.pair.ns, 'busybox', 'wget', '-q', '-O', '-', `http://${dial}:${String(c.tcp)}/big`]);
  assert.equal(body.length, bigSize, 'the whole 1 MiB arrived');
  assert.equal(createHash('sha256').update(body).digest('hex'), c.sha, 'and intact');
  const token = `ping-${String(Date.now())}`;
  const reply = await runBytes('ip', ['netns', 'exec', w.pair.ns, node, '-e', udpClient, dial, String(c.udp), token]);
  assert.equal(reply.toString(), `echo:${token}`, 'the UDP request got its reply');
}

/** The agent's forwarder sockets on the VM address: one TCP listener on T, one UDP socket on T+1. */
async function forwarderSockets(w: World, c: { tcp: number; udp: number }): Promise<string[]> {
  return [...(await socketsOn(w.pair.vmAddr, c.tcp)), ...(await socketsOn(w.pair.vmAddr, c.udp))];
}

interface HostEnd {
  /** Where the host namespace dials to reach the port: what the host end connects its users to. */
  readonly dial: string;
  readonly agentArgs: readonly string[];
  /** Whether the host end shows both forwards (exactly once each). */
  ready(c: { tcp: number; udp: number }): Promise<boolean>;
  gone(c: { tcp: number; udp: number }): Promise<boolean>;
}

async function scenario(t: TestContext, w: World, host: HostEnd): Promise<void> {
  const rulesBefore = await ruleLines(/portstream/i);
  let agent = startAgent(w, host.agentArgs);
  await waitFor(() => agent.output().includes('portstream agent running'), 30_000, () => `the agent to start\n${w.explain()}`);
  const containers = new TestContainers();
  w.cleanups.push(() => containers.removeAll());
  const c = await loopbackContainer(w, containers);

  await waitFor(async () => (await forwarderSockets(w, c)).length === 2, 15_000, () => `the forwarder sockets on ${w.pair.vmAddr}\n${w.explain()}`);
  await waitFor(() => host.ready(c), 15_000, () => `the host end to show both forwards\n${w.explain()}`);
  await assertReachable(w, host.dial, c);

  // Who can reach it: only the host end's subnet. A container (172.17/16) dialling the VM address is refused.
  await assert.rejects(docker('exec', c.id, 'busybox', 'wget', '-q', '-O', '/dev/null', '-T', '3', `http://${w.pair.vmAddr}:${String(c.tcp)}/big`));
  assert.deepEqual(await ruleLines(/portstream/i), rulesBefore, 'no rule of portstream');
  assert.deepEqual(await ruleLines(new RegExp(w.pair.vmAddr.replaceAll('.', '\\.'))), [], 'no rule for the connect address');

  // kill -9: the kernel closes every socket; a restart makes exactly one of each again, no duplicates.
  agent.child.kill('SIGKILL');
  await agent.exited;
  await waitFor(async () => (await forwarderSockets(w, c)).length === 0, 10_000, 'the killed agent to leave no socket');
  agent = startAgent(w, host.agentArgs);
  await waitFor(async () => (await forwarderSockets(w, c)).length === 2, 30_000, () => `the restarted agent's forwarders\n${w.explain()}`);
  const owners = (await forwarderSockets(w, c)).map((l) => /pid=(\d+)/.exec(l)?.[1]);
  assert.deepEqual(owners, [String(agent.child.pid), String(agent.child.pid)], 'both held by the new agent');
  await waitFor(() => host.ready(c), 15_000, () => `the host end after the restart\n${w.explain()}`);
  await assertReachable(w, host.dial, c);

  // docker rm -f: the forwarders close, the host end lets go, nothing answers.
  await docker('rm', '-f', c.id);
  await waitFor(async () => (await socketsOn(w.pair.vmAddr)).length === 0, 15_000, () => `the forwarders to close\n${w.explain()}`);
  await waitFor(() => host.gone(c), 15_000, () => `the host end to let go\n${w.explain()}`);
  await assert.rejects(runBytes('ip', ['netns', 'exec', w.pair.ns, 'busybox', 'wget', '-q', '-O', '-', '-T', '3', `http://${host.dial}:${String(c.tcp)}/big`], 10_000));
  assert.deepEqual(await ruleLines(/portstream/i), rulesBefore, 'still no rule of portstream');

  assert.equal(await stop(agent), 0, `the agent exits 0 on SIGTERM\n${tail(agent)}`);
  assert.deepEqual(await socketsOn(w.pair.vmAddr), [], 'nothing left on the connect address');
  t.diagnostic(`reachable through ${host.dial}, refused from a container, gone after kill -9 and rm -f`);
}

engineTest('loopback, vtunnel: a container on 127.0.0.1 reaches `portstream host` in another namespace; kill -9, restart and rm -f leave nothing', { needs: [...dockerNeeds, 'ip', 'iptables'], timeout: 240_000 }, async (t) => {
  const w = await world(t, 'v');
  const host = start('portstream host', 'ip', ['netns', 'exec', w.pair.ns, node, '--import', 'tsx', 'src/main.ts', 'host', '-listen', `${w.pair.hostAddr}:3040`, '-debug']);
  w.procs.push(host);
  w.cleanups.push(() => stop(host));
  await waitFor(() => host.output().includes(`receiving PortMappings on ${w.pair.hostAddr}:3040`), 30_000, () => `the host side to listen\n${w.explain()}`);
  const hostListens = async (c: { tcp: number; udp: number }): Promise<number> =>
    (await socketsOn('127.0.0.1', c.tcp, w.pair.ns)).length + (await socketsOn('127.0.0.1', c.udp, w.pair.ns)).length;
  await scenario(t, w, {
    dial: '127.0.0.1',
    agentArgs: ['-privilegedService', '-procnet=false', '-vtunnelAddr', `${w.pair.hostAddr}:3040`, '-connectInterface', w.pair.vethVm],
    ready: async (c) => (await hostListens(c)) === 2,
    gone: async (c) => (await hostListens(c)) === 0,
  });
});

engineTest('loopback, host-switch: a container on 127.0.0.1 is reachable at the tap address the forwarder dials; kill -9, restart and rm -f leave nothing', { needs: [...dockerNeeds, 'ip', 'iptables'], timeout: 240_000 }, async (t) => {
  const w = await world(t, 's');
  // bind: false: in this one machine the engine's proxy already holds 127.0.0.1:P, which the real forwarder binds on the host.
  const fake = await startFake(t, 0, { bind: false });
  const entries = (c: { tcp: number; udp: number }): string[] =>
    fake.view().filter((v) => v.endsWith(`:${String(c.tcp)}`) || v.endsWith(`:${String(c.udp)}`));
  await scenario(t, w, {
    dial: w.pair.vmAddr,
    agentArgs: ['-hostSwitchURL', fake.url, '-procnet=false', '-tap-interface-ip', w.pair.vmAddr],
    ready: (c) =>
      Promise.resolve(entries(c).join(',') === `tcp 127.0.0.1:${String(c.tcp)}->${w.pair.vmAddr}:${String(c.tcp)},udp 127.0.0.1:${String(c.udp)}->${w.pair.vmAddr}:${String(c.udp)}`),
    gone: (c) => Promise.resolve(entries(c).length === 0),
  });
});

engineTest('loopback, bad input: a -tap-interface-ip the VM does not have gives one log line per binding, no socket, no crash', { needs: [...dockerNeeds, 'ip'], timeout: 120_000 }, async (t) => {
  const w = await world(t, 'b');
  const fake = await startFake(t, 0, { bind: false });
  const missing = w.pair.vmAddr.replace(/\.2$/, '.3');
  const agent = startAgent(w, ['-hostSwitchURL', fake.url, '-procnet=false', '-tap-interface-ip', missing]);
  await waitFor(() => agent.output().includes('portstream agent running'), 30_000, () => `the agent to start\n${w.explain()}`);
  const containers = new TestContainers();
  w.cleanups.push(() => containers.removeAll());
  const c = await loopbackContainer(w, containers);
  const said = (): string[] => agent.output().split('\n').filter((l) => l.includes(`127.0.0.1:${String(c.tcp)}: the VM has no IPv4 address`));
  await waitFor(() => said().length > 0, 15_000, () => `the log line\n${w.explain()}`);
  await waitFor(() => fake.view().length >= 2, 15_000, 'the host-switch sink to go on regardless');
  await new Promise((resolve) => setTimeout(resolve, 6000)); // past a re-read of the addresses
  assert.equal(said().length, 1, `said once\n${tail(agent)}`);
  assert.deepEqual((await socketsOn(missing)).concat(await socketsOn(w.pair.vmAddr)), [], 'nothing listens for it');
  assert.equal(await stop(agent), 0, `still running, and exits 0\n${tail(agent)}`);
});

const cniGate = requireOrSkip('the CNI plugins in /usr/lib/cni', existsSync(`${cniPath}/portmap`) && existsSync(`${cniPath}/bridge`), 'apt-get install -y containernetworking-plugins');

engineTest('loopback, containerd: a nerdctl-labelled task on 127.0.0.1 behind real CNI portmap rules reaches `portstream host`', { needs: [...containerdNeeds, 'ip', 'iptables'], timeout: 240_000 }, async (t) => {
  if (cniGate.status !== 'ok') {
    if (cniGate.status === 'fail') throw new Error(cniGate.reason);
    t.skip(cniGate.reason);
    return;
  }
  const w = await world(t, 'c');
  const containerd = new OwnContainerd('portstream-test-loopback');
  w.cleanups.push(() => containerd.stop());
  await containerd.start();
  await containerd.sweep();
  const ns = 'portstream-test-loopback';
  await containerd.importBusybox(ns);

  const host = start('portstream host', 'ip', ['netns', 'exec', w.pair.ns, node, '--import', 'tsx', 'src/main.ts', 'host', '-listen', `${w.pair.hostAddr}:3040`, '-debug']);
  w.procs.push(host);
  w.cleanups.push(() => stop(host));
  await waitFor(() => host.output().includes(`receiving PortMappings on ${w.pair.hostAddr}:3040`), 30_000, () => `the host side to listen\n${w.explain()}`);
  const agent = startAgent(w, ['-containerd', '-containerdSock', containerd.socket, '-privilegedService', '-procnet=false', '-vtunnelAddr', `${w.pair.hostAddr}:3040`, '-connectInterface', w.pair.vethVm]);
  await waitFor(() => agent.output().includes('portstream agent running'), 30_000, () => `the agent to start\n${w.explain()}`);

  // The task and its network, as nerdctl makes them: the label, then CNI bridge + portmap in the task's netns.
  const port = 44_000 + Math.floor(Math.random() * 900);
  const id = `lb${String(process.pid)}`;
  const cni = await cniNetwork(`pstlb${String(process.pid % 10_000)}`, `pstlb${String(process.pid % 10_000)}`, `10.214.${String(200 + (process.pid % 50))}.0/24`, id);
  // Cleanups run last-pushed first: the network's DEL before the task goes, while its namespace exists.
  w.cleanups.push(() => containerd.removeTask(ns, id).then(() => containerd.ctr(ns, 'containers', 'delete', id)).catch(() => undefined));
  w.cleanups.push(() => cni.remove());
  const label = `nerdctl/ports=${JSON.stringify([{ HostPort: port, ContainerPort: 80, Protocol: 'tcp', HostIP: '127.0.0.1' }])}`;
  await containerd.ctr(ns, 'run', '-d', '--label', label, ctrImage, id, 'sh', '-c',
    'busybox mkdir -p /www && busybox dd if=/dev/urandom of=/www/big bs=1024 count=1024 2>/dev/null && exec httpd -f -p 80 -h /www');
  const pid = (await containerd.tasksOf(ns)).get(id)?.pid ?? 0;
  assert.ok(pid > 0, 'the task runs');
  await cni.add(`/proc/${String(pid)}/ns/net`, [{ hostPort: port, containerPort: 80, protocol: 'tcp', hostIP: '127.0.0.1' }]);
  assert.ok((await ruleLines(new RegExp(`-d 127\\.0\\.0\\.1/32 .*--dport ${String(port)} .*-j DNAT`))).length > 0, 'portmap wrote its 127.0.0.1 rule');

  await waitFor(async () => (await socketsOn(w.pair.vmAddr, port)).length === 1, 15_000, () => `the forwarder on ${w.pair.vmAddr}:${String(port)}\n${w.explain()}`);
  await waitFor(async () => (await socketsOn('127.0.0.1', port, w.pair.ns)).length === 1, 15_000, () => `the host end to listen\n${w.explain()}`);
  await waitFor(async () => (await runBytes('ip', ['netns', 'exec', w.pair.ns, 'busybox', 'wget', '-q', '-O', '-', `http://127.0.0.1:${String(port)}/big`])).length === bigSize, 15_000, 'the 1 MiB body through CNI');

  // As a runtime stops a container: CNI DEL while its network namespace still exists, then the task goes.
  await cni.remove();
  await containerd.removeTask(ns, id);
  assert.deepEqual(await ruleLines(/pstlb|CNI-HOSTPORT|CNI-DN-/), [], 'CNI left no rule behind');
  await waitFor(async () => (await socketsOn(w.pair.vmAddr)).length === 0, 15_000, () => `the forwarder to close with the task\n${w.explain()}`);
  assert.equal(await stop(agent), 0, `the agent exits 0\n${tail(agent)}`);
});

engineTest('loopback, listener mode: nothing extra is made for a 127.0.0.1 port (WSL forwards 127.0.0.1 itself)', { needs: [...dockerNeeds, 'ip'], timeout: 120_000 }, async (t) => {
  const w = await world(t, 'l');
  const agent = startAgent(w, ['-iptables', '-connectInterface', w.pair.vethVm]);
  await waitFor(() => agent.output().includes('portstream agent running'), 30_000, () => `the agent to start\n${w.explain()}`);
  const containers = new TestContainers();
  w.cleanups.push(() => containers.removeAll());
  const c = await loopbackContainer(w, containers);
  await new Promise((resolve) => setTimeout(resolve, 3000));
  const pid = String(agent.child.pid);
  const agentSockets = [...(await socketsOn('0.0.0.0')), ...(await socketsOn(w.pair.vmAddr))].filter((l) => l.includes(`pid=${pid},`));
  assert.deepEqual(agentSockets, [], 'the agent holds no socket for it');
  assert.deepEqual(await socketsOn(w.pair.vmAddr, c.tcp), [], 'nothing on the connect address');
  assert.doesNotMatch(agent.output(), /"module":"loopback"/, 'no loopback sink runs');
  assert.equal(await stop(agent), 0);
});

engineTest('loopback, host network: a plain listener on 127.0.0.1 in the VM reaches `portstream host` through -procnet, and goes when it closes', { needs: [...dockerNeeds, 'ip'], timeout: 120_000 }, async (t) => {
  const w = await world(t, 'h');
  const host = start('portstream host', 'ip', ['netns', 'exec', w.pair.ns, node, '--import', 'tsx', 'src/main.ts', 'host', '-listen', `${w.pair.hostAddr}:3040`]);
  w.procs.push(host);
  w.cleanups.push(() => stop(host));
  await waitFor(() => host.output().includes(`receiving PortMappings on ${w.pair.hostAddr}:3040`), 30_000, () => `the host side to listen\n${w.explain()}`);

  // A dev server started by hand in the VM, on loopback only: no engine, no rule says it exists.
  const token = `procnet-${String(Date.now())}`;
  const server = createServer((_req, res) => res.end(token));
  const port = await listenOnFreePort(server);
  w.cleanups.push(() => new Promise((resolve) => { server.closeAllConnections(); server.close(resolve); }));

  // -procnet is on by default with the vtunnel.
  const agent = startAgent(w, ['-privilegedService', '-vtunnelAddr', `${w.pair.hostAddr}:3040`, '-connectInterface', w.pair.vethVm]);
  await waitFor(async () => (await socketsOn('127.0.0.1', port, w.pair.ns)).length === 1, 20_000, () => `the host end to listen on 127.0.0.1:${String(port)}\n${w.explain()}`);
  assert.equal((await socketsOn(w.pair.vmAddr, port)).length, 1, 'a loopback forwarder on the connect address');
  const get = "const r = await fetch(process.argv[1], { signal: AbortSignal.timeout(5000) }); process.stdout.write(await r.text());";
  const body = await runBytes('ip', ['netns', 'exec', w.pair.ns, node, '--input-type=module', '-e', get, `http://127.0.0.1:${String(port)}/`]);
  assert.equal(body.toString(), token, 'the host namespace reached the listener in the VM');

  // The listener goes: the forward is withdrawn at the next scan, forwarder and host end with it.
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
  await waitFor(async () => (await socketsOn('127.0.0.1', port, w.pair.ns)).length === 0, 15_000, () => `the host end to let go\n${w.explain()}`);
  await waitFor(async () => (await socketsOn(w.pair.vmAddr, port)).length === 0, 15_000, () => `the forwarder to close\n${w.explain()}`);
  assert.equal(await stop(agent), 0, `the agent exits 0 on SIGTERM\n${tail(agent)}`);
  t.diagnostic(`127.0.0.1:${String(port)} in the VM reached from the host namespace, and withdrawn when it closed`);
});

/** Listens on 127.0.0.1 at a port from a range the other tests do not use; resolves to the port. */
async function listenOnFreePort(server: Server): Promise<number> {
  for (let attempt = 0; ; attempt++) {
    const port = 45_000 + Math.floor(Math.random() * 900);
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, '127.0.0.1', () => { server.off('error', reject); resolve(); });
      });
      return port;
    } catch (err) {
      if (attempt >= 5 || !(err instanceof Error && 'code' in err && err.code === 'EADDRINUSE')) throw err;
    }
  }
}
