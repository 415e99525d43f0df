/**
 * The DNAT candidate for loopback-published ports (docs/loopback.md), as the benchmark measures
 * it: per binding, a nat rule in the VM that sends what arrives on the connect interface for the
 * connect address and port to 127.0.0.1 on the same port. It needs `route_localnet=1` on that
 * interface (the kernel otherwise drops a packet routed to 127/8 from outside as a martian).
 *
 * Done as the issue asks of any rule portstream makes: every rule lives in a chain of its own,
 * entered from PREROUTING by one jump, and carries a comment naming portstream; each add is
 * checked first (`-C`), so adding twice is a no-op; `sweep` removes the jump and the chain (what a
 * killed run left), and rules of other programs are never read or changed. It works the same with
 * `iptables-nft` and `iptables-legacy`, whichever `command` names. Every command runs with an
 * argument array, never a shell.
 */
import { execFile } from 'node:child_process';

export const dnatChain = 'PORTSTREAM-LOOPBACK';
export const dnatTag = 'portstream loopback';

export interface DnatBinding {
  readonly iface: string;
  readonly connectAddr: string;
  readonly protocol: 'tcp' | 'udp';
  readonly port: number;
}

/** The rule (after `-A CHAIN`, `-C CHAIN` or `-D CHAIN`) for one binding: pure. */
export function dnatRule(b: DnatBinding): string[] {
  const port = String(b.port);
  return ['-i', b.iface, '-d', `${b.connectAddr}/32`, '-p', b.protocol, '-m', b.protocol, '--dport', port, '-m', 'comment', '--comment', dnatTag, '-j', 'DNAT', '--to-destination', `127.0.0.1:${port}`];
}

const jump = ['-m', 'comment', '--comment', dnatTag, '-j', dnatChain];

/** `prefix... iptables -w 5 -t nat args` → stdout; rejects with stderr. */
export function nat(prefix: readonly string[], command: string, args: readonly string[]): Promise<string> {
  const [cmd, ...rest] = [...prefix, command];
  return new Promise((resolve, reject) => {
    execFile(cmd, [...rest, '-w', '5', '-t', 'nat', ...args], (error, stdout, stderr) => {
      if (error) reject(new Error(`${command} -t nat ${args.join(' ')}: ${stderr.trim() || error.message}`));
      else resolve(stdout);
    });
  });
}

const succeeds = (p: Promise<unknown>): Promise<boolean> => p.then(() => true, () => false);

/** The chain and the one jump to it, each only when missing. */
export async function ensureDnatChain(prefix: readonly string[], command: string): Promise<void> {
  if (!(await succeeds(nat(prefix, command, ['-S', dnatChain])))) await nat(prefix, command, ['-N', dnatChain]);
  if (!(await succeeds(nat(prefix, command, ['-C', 'PREROUTING', ...jump])))) await nat(prefix, command, ['-I', 'PREROUTING', '1', ...jump]);
}

/** Adds the binding's rule unless it is there already. */
export async function addDnat(prefix: readonly string[], command: string, b: DnatBinding): Promise<void> {
  await ensureDnatChain(prefix, command);
  if (!(await succeeds(nat(prefix, command, ['-C', dnatChain, ...dnatRule(b)])))) await nat(prefix, command, ['-A', dnatChain, ...dnatRule(b)]);
}

/** Removes the binding's rule; one that is gone already is fine. */
export async function removeDnat(prefix: readonly string[], command: string, b: DnatBinding): Promise<void> {
  await nat(prefix, command, ['-D', dnatChain, ...dnatRule(b)]).catch(() => undefined);
}

/** Removes every jump to our chain and the chain itself: at start-up (a killed run's) and at shutdown. */
export async function sweepDnat(prefix: readonly string[], command: string): Promise<void> {
  while (await succeeds(nat(prefix, command, ['-D', 'PREROUTING', ...jump]))) {
    // one jump per call, until none is left
  }
  if (await succeeds(nat(prefix, command, ['-F', dnatChain]))) await nat(prefix, command, ['-X', dnatChain]);
}
