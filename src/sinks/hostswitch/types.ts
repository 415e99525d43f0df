import type { ObservableInput } from 'rxjs';

/** One call of the forwarder API; `path` is one of `forwarderPaths`. */
export interface HostSwitchRequest {
  readonly method: 'GET' | 'POST';
  readonly path: string;
  readonly body?: string;
}

/** An answer of the host-switch API: its status and body. */
export interface HostSwitchResponse {
  readonly status: number;
  readonly body: string;
}

/**
 * Makes one request. It errors only when no HTTP answer came (refused, reset, timed out); any
 * status is an answer. An Observable is best: the sink unsubscribes to cancel (its own timeout,
 * shutdown). A promise works too. A synchronous throw is a bug in the requester: the sink ends
 * with that error (the agent restarts it).
 */
export type HostSwitchRequester = (request: HostSwitchRequest) => ObservableInput<HostSwitchResponse>;
