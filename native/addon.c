// The module init of portstream.node. binding.gyp compiles every native/*.c into this one addon;
// a new source adds its init to addon.h and one line below, and must not define a module init
// of its own (an addon has exactly one).
#define NAPI_VERSION 8
#include <node_api.h>
#include "addon.h"

NAPI_MODULE_INIT() {
  portstream_init_vsock(env, exports);  // send(cid, port, data, timeoutMs): vtunnel over AF_VSOCK
  portstream_init_sockdiag(env, exports);  // listeners(family, protocol): inet_diag dump of listening sockets
  portstream_init_trim(env, exports);  // trimHeap(): malloc_trim(0) where glibc has it
  return exports;
}
