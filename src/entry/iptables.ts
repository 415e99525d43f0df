/**
 * `portstream/iptables`: the nat table's port-forwarding rules (CNI portmap's, or your own) as a
 * source. `iptablesEvents` takes any `IptablesClient`; `nodeIptablesClient` is the real one.
 * @module
 */
export {
  iptablesEvents,
  iptablesDefaults,
  type Family,
  type IptablesClient,
  type IptablesStreamOptions,
  type MonitorKind,
} from '../../streams/iptables.js';
export { nodeIptablesClient, type NodeIptablesClientOptions } from '../../streams/iptablesClient.js';
export { cniPortmapRules, parseIptablesSave, type CountingRule, type Parsed as ParsedRules } from '../../streams/iptablesRules.js';
