/* raw_client.c - the protocol by hand, for the hostile and lifecycle
 * tests. See raw_client.h. Records come from the proto encoders; only the
 * bytes a test means to break are written by hand. */
#include "raw_client.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

uint64_t raw_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t realtime_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ======================================================================
 * Connection
 * ==================================================================== */

void raw_connect(raw_client_t *c, const char *path) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  cr_assert(strlen(path) < sizeof sa.sun_path, "socket path too long: %s", path);
  memcpy(sa.sun_path, path, strlen(path) + 1);
  c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  cr_assert(c->fd >= 0, "socket: %s", strerror(errno));
  cr_assert(connect(c->fd, (struct sockaddr *)&sa, sizeof sa) == 0, "connect %s: %s", path,
            strerror(errno));
}

void raw_close(raw_client_t *c) {
  if (c->fd >= 0)
    close(c->fd);
  c->fd = -1;
}

int raw_send(raw_client_t *c, const void *p, size_t n) {
  for (size_t put = 0; put < n;) {
    ssize_t w = send(c->fd, (const char *)p + put, n - put, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR)
      continue;
    if (w < 0)
      return -errno;
    put += (size_t)w;
  }
  return 0;
}

static void send_ok(raw_client_t *c, const void *p, size_t n, const char *what) {
  int rc = raw_send(c, p, n);
  cr_assert(rc == 0, "sending %s: %s", what, strerror(-rc));
}

int raw_wait_closed(raw_client_t *c, int timeout_ms) {
  uint64_t deadline = raw_now_ns() + (uint64_t)timeout_ms * 1000000u;
  char sink[4096];
  for (;;) {
    uint64_t now = raw_now_ns();
    if (now >= deadline)
      return 0;
    struct pollfd p = {c->fd, POLLIN, 0};
    int n = poll(&p, 1, (int)((deadline - now) / 1000000u) + 1);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      continue; /* the deadline check above ends the wait */
    ssize_t r = recv(c->fd, sink, sizeof sink, 0);
    if (r == 0)
      return 1;
    /* A peer that closes with our bytes unread resets the connection. */
    if (r < 0 && errno != EINTR && errno != EAGAIN)
      return 1;
  }
}

/* ======================================================================
 * Records
 * ==================================================================== */

size_t raw_encode_hello(uint8_t *out, size_t cap, uint32_t pid, const char *app) {
  return raw_encode_hello_as(out, cap, pid, app, realtime_ns(), 0, HT_PROTO_VERSION);
}

size_t raw_encode_hello_as(uint8_t *out, size_t cap, uint32_t pid, const char *app,
                           uint64_t start_realtime_ns, uint16_t flags, uint16_t version) {
  static ht_hello_t h; /* the argv table is large */
  memset(&h, 0, sizeof h);
  h.version = version;
  h.ptr_size = (uint8_t)sizeof(void *);
  h.clock = 1;
  h.flags = flags;
  h.pid = pid;
  h.ppid = 1;
  h.start_realtime_ns = start_realtime_ns;
  h.start_mono_ns = raw_now_ns();
  h.app = ht_str(app);
  h.exe = ht_str("/raw/client");
  h.argc = 1;
  h.argv[0] = ht_str(app);
  ht_wbuf_t w;
  ht_wbuf_init(&w, out, cap);
  ht_proto_put_hello(&w, &h);
  cr_assert(!w.overflow, "HELLO does not fit in %zu bytes", cap);
  return w.len;
}

size_t raw_encode_account(uint8_t *out, size_t cap, uint32_t pid, const char *app,
                          uint64_t start_realtime_ns, uint64_t undelivered) {
  size_t n = raw_encode_hello_as(out, cap, pid, app, start_realtime_ns, HT_HELLO_F_RECONNECT,
                                 HT_PROTO_VERSION);
  ht_wbuf_t w;
  ht_wbuf_init(&w, out + n, cap - n);
  ht_proto_put_end(&w, &(ht_end_rec_t){.reason = HT_END_CLEAN, .undelivered = undelivered});
  cr_assert(!w.overflow, "END does not fit in %zu bytes", cap);
  return n + w.len;
}

void raw_hello(raw_client_t *c, uint32_t pid, const char *app) {
  uint8_t buf[512];
  size_t n = raw_encode_hello(buf, sizeof buf, pid, app);
  send_ok(c, buf, n, "HELLO");
}

void raw_site(raw_client_t *c, uint32_t id, uint32_t line, const char *file, const char *func) {
  uint8_t buf[3 * HT_PROTO_MAX_STRING + 64];
  ht_site_rec_t rec = {id, line, ht_str(file), ht_str(func), ht_str("")};
  ht_wbuf_t w;
  ht_wbuf_init(&w, buf, sizeof buf);
  ht_proto_put_site(&w, &rec);
  cr_assert(!w.overflow);
  send_ok(c, buf, w.len, "SITE");
}

void raw_end(raw_client_t *c) {
  uint8_t buf[32];
  ht_end_rec_t rec = {.reason = HT_END_CLEAN};
  ht_wbuf_t w;
  ht_wbuf_init(&w, buf, sizeof buf);
  ht_proto_put_end(&w, &rec);
  cr_assert(!w.overflow);
  send_ok(c, buf, w.len, "END");
}

void raw_frame(raw_client_t *c, uint8_t type, const void *payload, size_t n) {
  uint8_t head[5];
  uint32_t body = (uint32_t)(n + 1);
  for (int i = 0; i < 4; i++)
    head[i] = (uint8_t)(body >> (8 * i));
  head[4] = type;
  send_ok(c, head, sizeof head, "a frame header");
  send_ok(c, payload, n, "a frame payload");
}

/* ======================================================================
 * Events
 * ==================================================================== */

void raw_stream_init(raw_stream_t *s, uint32_t id, uint64_t t0_ns) {
  memset(s, 0, sizeof *s);
  s->id = id;
  s->time_ns = t0_ns;
}

void raw_stream_append(raw_stream_t *s, const ht_event_t *ev) {
  cr_assert(s->len + HT_PROTO_MAX_EVENT_BYTES <= sizeof s->buf, "raw stream buffer full");
  s->len += ht_proto_event_encode(s->buf + s->len, &s->enc, ev);
  s->count++;
}

/* Appends op - MALLOC, FREE, or REALLOC from old_ptr (old_size bytes) -
 * of size bytes at ptr, 1000 ns after the stream's last event, and moves
 * the running totals as the op implies. */
static void append_op(raw_stream_t *s, uint32_t op, uint32_t site, uint64_t ptr, uint64_t old_ptr,
                      uint64_t old_size, uint64_t size) {
  ht_event_t ev = {0};
  ev.op = op;
  ev.time_ns = s->time_ns += 1000;
  ev.site = site;
  ev.caps = HT_SYSTEM_HEAP_CAPS;
  ev.ptr = ptr;
  ev.old_ptr = old_ptr;
  ev.size = size;
  ev.usable = size;
  ev.old_usable = old_size;
  int64_t dbytes = op == HT_OP_FREE ? -(int64_t)size : (int64_t)size - (int64_t)old_size;
  s->cur_bytes += dbytes;
  s->cur_blocks += op == HT_OP_FREE ? -1 : op == HT_OP_REALLOC ? 0 : 1;
  if (dbytes > 0)
    s->total_bytes += (uint64_t)dbytes;
  ev.cur_bytes = s->cur_bytes;
  ev.cur_blocks = s->cur_blocks;
  ev.total_bytes = s->total_bytes;
  raw_stream_append(s, &ev);
}

void raw_stream_malloc(raw_stream_t *s, uint32_t site, uint64_t ptr, uint64_t size) {
  append_op(s, HT_OP_MALLOC, site, ptr, 0, 0, size);
}

void raw_stream_free(raw_stream_t *s, uint32_t site, uint64_t ptr, uint64_t size) {
  append_op(s, HT_OP_FREE, site, ptr, 0, 0, size);
}

void raw_stream_realloc(raw_stream_t *s, uint32_t site, uint64_t from, uint64_t to,
                        uint64_t old_size, uint64_t size) {
  append_op(s, HT_OP_REALLOC, site, to, from, old_size, size);
}

int raw_send_events_as(raw_client_t *c, raw_stream_t *s, uint64_t first_seq, uint32_t count) {
  uint8_t head[HT_PROTO_EVENTS_HEAD];
  ht_proto_events_head(head, s->id, first_seq, count, s->len);
  int rc = raw_send(c, head, sizeof head);
  if (rc == 0)
    rc = raw_send(c, s->buf, s->len);
  s->next_seq = first_seq + s->count;
  s->len = 0;
  s->count = 0;
  return rc;
}

void raw_send_events(raw_client_t *c, raw_stream_t *s) {
  int rc = raw_send_events_as(c, s, s->next_seq, s->count);
  cr_assert(rc == 0, "sending EVENTS: %s", strerror(-rc));
}

/* ======================================================================
 * A well-behaved session
 * ==================================================================== */

#define GOOD_SITE 1
#define GOOD_BASE 0x7f0000001000ull

void raw_session_begin(raw_session_t *g, const char *socket, uint32_t pid, const char *app) {
  raw_connect(&g->c, socket);
  raw_hello(&g->c, pid, app);
  raw_site(&g->c, GOOD_SITE, 42, "good.c", "well_behaved");
  raw_stream_init(&g->s, 1, raw_now_ns());
  for (uint64_t i = 0; i < 4; i++)
    raw_stream_malloc(&g->s, GOOD_SITE, GOOD_BASE + i * 0x1000, 100 * (i + 1));
  raw_stream_free(&g->s, GOOD_SITE, GOOD_BASE, 100);
  raw_stream_free(&g->s, GOOD_SITE, GOOD_BASE + 0x1000, 200);
  raw_send_events(&g->c, &g->s);
}

void raw_session_finish(raw_session_t *g) {
  raw_stream_malloc(&g->s, GOOD_SITE, GOOD_BASE + 0x10000, 500);
  raw_stream_malloc(&g->s, GOOD_SITE, GOOD_BASE + 0x11000, 600);
  raw_stream_free(&g->s, GOOD_SITE, GOOD_BASE + 0x2000, 300);
  raw_send_events(&g->c, &g->s);
  raw_end(&g->c);
  shutdown(g->c.fd, SHUT_WR);
  cr_assert(raw_wait_closed(&g->c, RAW_WAIT_MS),
            "the daemon did not close a well-behaved session after END within %d ms", RAW_WAIT_MS);
  raw_close(&g->c);
}

/* ======================================================================
 * Control
 * ==================================================================== */

static int read_full(int fd, void *p, size_t n) {
  for (size_t got = 0; got < n;) {
    ssize_t r = recv(fd, (char *)p + got, n - got, 0);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      return -1;
    got += (size_t)r;
  }
  return 0;
}

char *raw_control(const char *socket, const void *payload, size_t n) {
  raw_client_t c;
  raw_connect(&c, socket);
  raw_frame(&c, HT_REC_CTL_REQUEST, payload, n);
  /* A daemon that never answers must fail the test, not hang it. */
  struct timeval tv = {RAW_WAIT_MS / 1000, 0};
  setsockopt(c.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  uint8_t head[5];
  char *text = NULL;
  if (read_full(c.fd, head, sizeof head) == 0 && head[4] == HT_REC_CTL_REPLY) {
    uint32_t body = (uint32_t)head[0] | (uint32_t)head[1] << 8 | (uint32_t)head[2] << 16 |
                    (uint32_t)head[3] << 24;
    text = body >= 1 && body <= (1u << 20) ? malloc(body) : NULL;
    if (text && read_full(c.fd, text, body - 1) == 0) {
      text[body - 1] = '\0';
    } else {
      free(text);
      text = NULL;
    }
  }
  raw_close(&c);
  return text;
}
