/**
 * `portstream/model`: the data every layer shares (Forward, PortKey, PortSet, PortDelta, the
 * sources' raw events) and the pure functions on it. No I/O, no dependencies.
 * @module
 */
export {
  applyDelta,
  canonicalHostIp,
  diff,
  emptyPortSet,
  isEmptyDelta,
  isIPv6,
  isValidPort,
  portKey,
  portSetOf,
  remove,
  snapshot,
  upsert,
  type Forward,
  type PortDelta,
  type PortKey,
  type PortSet,
  type Protocol,
  type SourceEvent,
  type SourceName,
} from '../model.js';
