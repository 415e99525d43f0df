/**
 * `portstream/procnet`: listeners of the machine's own network namespace (host-network
 * containers, servers started in the VM) as a source. `procnetEvents` takes any `SocketTable`;
 * `nodeSocketTable` reads the real one over NETLINK_SOCK_DIAG, else /proc/net.
 * @module
 */
export { procnetEvents, procnetDefaults, type ProcnetOptions, type SocketTable, type SocketRead } from '../../streams/procnet.js';
export { nodeSocketTable, procNetTable, sockDiagTable } from '../../streams/procnetClient.js';
export { publishable, parsePortList, procnetExclusions, defaultProcnetExclude, type ForwardPolicy, type PortRange } from '../../streams/procnetPolicy.js';
export { parseProcNet, type ListeningSocket } from '../../streams/procnetTable.js';
