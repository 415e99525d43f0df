// trimHeap(): gives the C heap's free pages back to the kernel (glibc's malloc_trim(0)). glibc
// returns memory on its own only from the top of each arena; what a burst freed in the middle
// (Node's buffers, libuv's requests, V8's own mallocs) stays resident until then. Returns true
// when something was given back; false, doing nothing, where the C library has no malloc_trim
// (musl returns free pages itself).
#define NAPI_VERSION 8
#include <node_api.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

static napi_value trim_heap(napi_env env, napi_callback_info info) {
  (void)info;
  int released = 0;
#if defined(__GLIBC__)
  released = malloc_trim(0);
#endif
  napi_value result;
  napi_get_boolean(env, released != 0, &result);
  return result;
}

void portstream_init_trim(napi_env env, napi_value exports) {
  napi_value fn;
  if (napi_create_function(env, "trimHeap", NAPI_AUTO_LENGTH, trim_heap, NULL, &fn) == napi_ok) {
    napi_set_named_property(env, exports, "trimHeap", fn);
  }
}
