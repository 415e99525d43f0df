// One-shot AF_VSOCK sender for the vtunnel wire: connect to CID:PORT, write one message,
// half-close, wait for the peer to close, all on a libuv worker thread so the event loop never
// blocks. Node 20 cannot wrap an AF_VSOCK descriptor in net.Socket (ERR_INVALID_FD_TYPE), and
// the wire needs nothing more than this, so the addon stays this small.
#define NAPI_VERSION 8
#include <node_api.h>
#include "addon.h"

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  napi_ref data_ref;
  uint32_t cid;
  uint32_t port;
  const char *data;
  size_t length;
  int64_t timeout_ms;
  int error;            // errno of the failure, 0 on success
  const char *stage;    // which step failed, for the message
} send_job;

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

// Waits until fd is ready for `events` or the deadline passes (ETIMEDOUT).
static int wait_fd(int fd, short events, int64_t deadline) {
  for (;;) {
    int64_t left = deadline - now_ms();
    if (left <= 0) return ETIMEDOUT;
    struct pollfd p = {.fd = fd, .events = events};
    int n = poll(&p, 1, (int)left);
    if (n > 0) return 0;
    if (n == 0) return ETIMEDOUT;
    if (errno != EINTR) return errno;
  }
}

static void execute(napi_env env, void *arg) {
  (void)env;
  send_job *job = arg;
  int64_t deadline = now_ms() + job->timeout_ms;
  job->error = 0;
  int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) { job->error = errno; job->stage = "socket"; return; }

  struct timeval tv = {.tv_sec = job->timeout_ms / 1000, .tv_usec = (job->timeout_ms % 1000) * 1000};
  setsockopt(fd, AF_VSOCK, SO_VM_SOCKETS_CONNECT_TIMEOUT, &tv, sizeof tv);
  struct sockaddr_vm addr;
  memset(&addr, 0, sizeof addr);
  addr.svm_family = AF_VSOCK;
  addr.svm_cid = job->cid;
  addr.svm_port = job->port;
  if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
    job->error = errno; job->stage = "connect"; close(fd); return;
  }

  size_t sent = 0;
  while (sent < job->length) {
    int w = wait_fd(fd, POLLOUT, deadline);
    if (w != 0) { job->error = w; job->stage = "write"; close(fd); return; }
    ssize_t n = send(fd, job->data + sent, job->length - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      job->error = errno; job->stage = "write"; close(fd); return;
    }
    sent += (size_t)n;
  }
  shutdown(fd, SHUT_WR);

  // The peer closes once it has read everything: that is the only acknowledgement the wire has.
  char sink[256];
  for (;;) {
    int w = wait_fd(fd, POLLIN, deadline);
    if (w != 0) { job->error = w; job->stage = "wait for close"; close(fd); return; }
    ssize_t n = recv(fd, sink, sizeof sink, MSG_DONTWAIT);
    if (n == 0) break;
    if (n < 0 && errno != EAGAIN && errno != EINTR) { job->error = errno; job->stage = "wait for close"; close(fd); return; }
  }
  close(fd);
}

static void complete(napi_env env, napi_status status, void *arg) {
  send_job *job = arg;
  if (status != napi_ok && job->error == 0) { job->error = ECANCELED; job->stage = "queue"; }
  if (job->error == 0) {
    napi_value undefined;
    napi_get_undefined(env, &undefined);
    napi_resolve_deferred(env, job->deferred, undefined);
  } else {
    char text[160];
    snprintf(text, sizeof text, "vsock %s to %u:%u: %s", job->stage, job->cid, job->port, strerror(job->error));
    napi_value message, error, code;
    napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &message);
    napi_create_error(env, NULL, message, &error);
    napi_create_int32(env, job->error, &code);
    napi_set_named_property(env, error, "errno", code);
    napi_reject_deferred(env, job->deferred, error);
  }
  napi_delete_reference(env, job->data_ref);
  napi_delete_async_work(env, job->work);
  free(job);
}

// send(cid: number, port: number, data: Buffer, timeoutMs: number): Promise<void>
static napi_value js_send(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 4) {
    napi_throw_type_error(env, NULL, "send(cid, port, data, timeoutMs)");
    return NULL;
  }
  send_job *job = calloc(1, sizeof *job);
  if (!job) { napi_throw_error(env, NULL, "out of memory"); return NULL; }
  void *data = NULL;
  bool is_buffer = false;
  napi_is_buffer(env, argv[2], &is_buffer);
  if (napi_get_value_uint32(env, argv[0], &job->cid) != napi_ok ||
      napi_get_value_uint32(env, argv[1], &job->port) != napi_ok || !is_buffer ||
      napi_get_buffer_info(env, argv[2], &data, &job->length) != napi_ok ||
      napi_get_value_int64(env, argv[3], &job->timeout_ms) != napi_ok || job->timeout_ms <= 0) {
    free(job);
    napi_throw_type_error(env, NULL, "send(cid: uint32, port: uint32, data: Buffer, timeoutMs: positive number)");
    return NULL;
  }
  job->data = data;
  napi_create_reference(env, argv[2], 1, &job->data_ref);  // keep the buffer alive while the worker reads it
  napi_value promise, name;
  napi_create_promise(env, &job->deferred, &promise);
  napi_create_string_utf8(env, "portstream:vsock-send", NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, execute, complete, job, &job->work);
  napi_queue_async_work(env, job->work);
  return promise;
}

// Called from native/addon.c, which holds the one module init for every native/*.c source.
void portstream_init_vsock(napi_env env, napi_value exports) {
  napi_value fn;
  napi_create_function(env, "send", NAPI_AUTO_LENGTH, js_send, NULL, &fn);
  napi_set_named_property(env, exports, "send", fn);
}
