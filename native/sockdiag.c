// Listening sockets of the caller's network namespace over NETLINK_SOCK_DIAG: one inet_diag
// dump per family and protocol, with the wanted states filtered in the kernel (TCP in LISTEN, UDP
// in CLOSE, i.e. bound and unconnected), so a scan costs the listeners, not every connection as
// /proc/net/tcp does. It runs on the calling thread: a dump of thousands of sockets takes the
// kernel well under a millisecond, less than a hop to a worker thread would.
//
// listeners() returns one Buffer of fixed 28-byte records (streams/procnetClient.ts decodes them):
//   0 family (4|6)  1 protocol (6 tcp|17 udp)  2 flags (1: v6only known, 2: v6only)  3 zero
//   4-5 local port (big-endian)  6-7 zero  8-11 inode (little-endian)  12-27 local address
//   (network order; an IPv4 address in 12-15, the rest zero)
#define NAPI_VERSION 8
#include <node_api.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/inet_diag.h>

#define RECORD_SIZE 28
#define TCP_LISTEN_STATE 10
#define TCP_CLOSE_STATE 7

typedef struct {
  uint8_t *data;
  size_t length;
  size_t capacity;
} records;

static int reserve(records *out, size_t more) {
  if (out->length + more <= out->capacity) return 0;
  size_t capacity = out->capacity ? out->capacity * 2 : 64 * RECORD_SIZE;
  while (capacity < out->length + more) capacity *= 2;
  uint8_t *grown = realloc(out->data, capacity);
  if (!grown) return ENOMEM;
  out->data = grown;
  out->capacity = capacity;
  return 0;
}

// IPV6_V6ONLY from the message's attributes (the kernel adds it for every AF_INET6 socket).
static int v6only_flags(struct nlmsghdr *h, struct inet_diag_msg *msg) {
  int len = (int)h->nlmsg_len - (int)NLMSG_LENGTH(sizeof *msg);
  for (struct rtattr *a = (struct rtattr *)(msg + 1); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
    if (a->rta_type == INET_DIAG_SKV6ONLY && RTA_PAYLOAD(a) >= 1) return 1 | (*(uint8_t *)RTA_DATA(a) ? 2 : 0);
  }
  return 0;
}

static int append(records *out, struct nlmsghdr *h, uint8_t protocol) {
  if (h->nlmsg_len < NLMSG_LENGTH(sizeof(struct inet_diag_msg))) return EPROTO;
  struct inet_diag_msg *msg = NLMSG_DATA(h);
  if (reserve(out, RECORD_SIZE) != 0) return ENOMEM;
  uint8_t *r = out->data + out->length;
  memset(r, 0, RECORD_SIZE);
  int v6 = msg->idiag_family == AF_INET6;
  r[0] = v6 ? 6 : 4;
  r[1] = protocol;
  r[2] = (uint8_t)(v6 ? v6only_flags(h, msg) : 0);
  memcpy(r + 4, &msg->id.idiag_sport, 2);
  uint32_t inode = msg->idiag_inode;
  r[8] = inode & 0xff; r[9] = (inode >> 8) & 0xff; r[10] = (inode >> 16) & 0xff; r[11] = inode >> 24;
  memcpy(r + 12, msg->id.idiag_src, v6 ? 16 : 4);
  out->length += RECORD_SIZE;
  return 0;
}

// One dump: send the request, read replies until NLMSG_DONE. Returns 0 or an errno.
static int dump(int fd, uint8_t family, uint8_t protocol, uint32_t states, uint32_t seq, records *out, uint8_t *buffer, size_t size, const char **stage) {
  struct {
    struct nlmsghdr nlh;
    struct inet_diag_req_v2 req;
  } request;
  memset(&request, 0, sizeof request);
  request.nlh.nlmsg_len = sizeof request;
  request.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  request.nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  request.nlh.nlmsg_seq = seq;
  request.req.sdiag_family = family;
  request.req.sdiag_protocol = protocol;
  request.req.idiag_states = states;
  struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
  *stage = "send";
  if (sendto(fd, &request, sizeof request, 0, (struct sockaddr *)&kernel, sizeof kernel) < 0) return errno;

  *stage = "receive";
  for (;;) {
    ssize_t n = recv(fd, buffer, size, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (n == 0) return EPROTO;
    int left = (int)n;
    for (struct nlmsghdr *h = (struct nlmsghdr *)buffer; NLMSG_OK(h, left); h = NLMSG_NEXT(h, left)) {
      if (h->nlmsg_seq != seq) continue;
      if (h->nlmsg_type == NLMSG_DONE) return 0;
      if (h->nlmsg_type == NLMSG_ERROR) {
        struct nlmsgerr *err = NLMSG_DATA(h);
        return err->error ? -err->error : EPROTO;
      }
      if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY) continue;
      int e = append(out, h, protocol);
      if (e != 0) { *stage = "decode"; return e; }
    }
  }
}

static napi_value throw_errno(napi_env env, const char *what, int error) {
  char text[160];
  snprintf(text, sizeof text, "sock_diag %s: %s", what, strerror(error));
  napi_value message, exception, code;
  napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &message);
  napi_create_error(env, NULL, message, &exception);
  napi_create_int32(env, error, &code);
  napi_set_named_property(env, exception, "errno", code);
  napi_throw(env, exception);
  return NULL;
}

// listeners(): Buffer: TCP LISTEN and UDP CLOSE sockets of AF_INET and AF_INET6.
static napi_value js_listeners(napi_env env, napi_callback_info info) {
  (void)info;
  int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (fd < 0) return throw_errno(env, "socket", errno);
  // The kernel answers at once; the timeout only bounds a kernel that never does.
  struct timeval tv = {.tv_sec = 2, .tv_usec = 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  static const struct { uint8_t family, protocol; uint32_t states; const char *name; } dumps[] = {
    {AF_INET, IPPROTO_TCP, 1u << TCP_LISTEN_STATE, "tcp"},
    {AF_INET6, IPPROTO_TCP, 1u << TCP_LISTEN_STATE, "tcp6"},
    {AF_INET, IPPROTO_UDP, 1u << TCP_CLOSE_STATE, "udp"},
    {AF_INET6, IPPROTO_UDP, 1u << TCP_CLOSE_STATE, "udp6"},
  };
  // Replies come a page or so per datagram; 64 KiB takes the largest the kernel sends.
  size_t size = 64 * 1024;
  uint8_t *buffer = malloc(size);
  if (!buffer) { close(fd); return throw_errno(env, "buffer", ENOMEM); }
  records out = {0};
  for (uint32_t i = 0; i < sizeof dumps / sizeof dumps[0]; i++) {
    const char *stage = "";
    int e = dump(fd, dumps[i].family, dumps[i].protocol, dumps[i].states, i + 1, &out, buffer, size, &stage);
    if (e != 0) {
      close(fd);
      free(buffer);
      free(out.data);
      char what[64];
      snprintf(what, sizeof what, "%s dump (%s)", dumps[i].name, stage);
      return throw_errno(env, what, e);
    }
  }
  close(fd);
  free(buffer);
  napi_value result;
  napi_status status = napi_create_buffer_copy(env, out.length, out.length ? out.data : (const void *)"", NULL, &result);
  free(out.data);
  if (status != napi_ok) return throw_errno(env, "result", ENOMEM);
  return result;
}

// Called from the module's init (native/addon.c): adds listeners() to the addon's exports.
void portstream_init_sockdiag(napi_env env, napi_value exports) {
  napi_value fn;
  napi_create_function(env, "listeners", NAPI_AUTO_LENGTH, js_listeners, NULL, &fn);
  napi_set_named_property(env, exports, "listeners", fn);
}
