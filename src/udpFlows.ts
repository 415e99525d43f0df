import type dgram from 'node:dgram';

/** One peer's flow through a UDP relay: the socket it was given, and its idle timer. */
export interface UdpFlow {
  readonly socket: dgram.Socket;
  readonly timer: NodeJS.Timeout;
}

/** The flows of one UDP relay by peer (`address|port`), kept in least recently used order. */
export interface UdpFlowTable<F extends UdpFlow> {
  /** The flow of `key`, marked as just used (its idle timer starts again); undefined when there is none. */
  touch(key: string): F | undefined;
  /** Opens the flow of `key` with `make`, given its idle timer; when full, the least recently used flow closes first. */
  open(key: string, make: (timer: NodeJS.Timeout) => F): F;
  /** Closes the flow of `key` (its socket and timer), if it has one. */
  close(key: string): void;
  /** Closes every flow. */
  closeAll(): void;
}

/**
 * A UDP relay's flow table, shared by the host side's proxy and the VM's loopback forwarder: a
 * flow closes after `idleMs` without a datagram either way, and past `maxFlows` the least
 * recently used one closes, so a peer that sprays source ports cannot take every socket.
 */
export function udpFlowTable<F extends UdpFlow>(idleMs: number, maxFlows: number): UdpFlowTable<F> {
  const flows = new Map<string, F>();
  const close = (key: string): void => {
    const flow = flows.get(key);
    if (!flow) return;
    flows.delete(key);
    clearTimeout(flow.timer);
    flow.socket.close();
  };
  return {
    touch: (key) => {
      const flow = flows.get(key);
      if (flow) {
        flow.timer.refresh();
        flows.delete(key);
        flows.set(key, flow);
      }
      return flow;
    },
    open: (key, make) => {
      if (flows.size >= maxFlows) {
        const oldest = flows.keys().next();
        if (oldest.done !== true) close(oldest.value);
      }
      const flow = make(setTimeout(() => { close(key); }, idleMs));
      flows.set(key, flow);
      return flow;
    },
    close,
    closeAll: () => {
      for (const key of [...flows.keys()]) close(key);
    },
  };
}
