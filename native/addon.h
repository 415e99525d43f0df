// The one native addon (portstream.node): every native/*.c source is compiled into it and adds
// its functions to the exports from an init function declared here and called in addon.c.
#ifndef PORTSTREAM_ADDON_H
#define PORTSTREAM_ADDON_H
#include <node_api.h>

void portstream_init_vsock(napi_env env, napi_value exports);
void portstream_init_sockdiag(napi_env env, napi_value exports);
void portstream_init_trim(napi_env env, napi_value exports);

#endif
