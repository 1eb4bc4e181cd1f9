/* live_fuzzer.c - mutated real streams against a running heaptraced.
 *
 *   live_fuzzer record OUT PROGRAM [ARGS...]
 *   live_fuzzer fuzz SOCKET SEED DURATION_MS THREADS STREAM...
 *
 * record runs PROGRAM (a real traced program) with HEAPTRACE_SOCKET on a
 * socket of its own, takes every byte of its session up to END, closes the
 * connection (the program then exits as if its session were committed) and
 * writes the bytes to OUT: a real stream, byte for byte. The program's
 * stdout is live_fuzzer's, so that what it says it did can be checked
 * against what a daemon makes of the recording.
 *
 * fuzz loads such streams and, from THREADS threads for DURATION_MS, opens
 * connection after connection to SOCKET and sends each a mutated copy of a
 * stream: bit flips anywhere or inside event bytes only, truncation,
 * frames reordered or duplicated, absurd lengths and counts, floods of
 * sites, second handshakes, frames of two streams spliced, control
 * requests with ingest records around them, garbage, slow dribbles. Some
 * connections are kept open and idle to the end. Every HELLO's pid is
 * rewritten to FUZZ_PID_BASE + thread, so that a test can tell fuzz
 * sessions from others. SEED makes a run repeatable (up to the daemon's
 * timing). At the end it prints one line of counts:
 *   connections=N frames=F events=E bytes=B refused=R idle=I <mutation>=N...
 * where events counts the events of the recorded EVENTS frames that went
 * out (before mutation) and refused the connections the daemon did not
 * accept. It exits 0, or 1 when it could not run (bad arguments, streams).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ht_proto.h"

#define FUZZ_PID_BASE 990000u
#define HELLO_PID_AT 10    /* payload offset of HELLO's pid (PROTOCOL.md) */
#define HELLO_APP_AT 34    /* payload offset of the length of HELLO's app */
#define EVENTS_COUNT_AT 12 /* payload offset of EVENTS' count */
#define MAX_STREAMS 16
#define MAX_THREADS 64
#define MAX_IDLE 16 /* connections held open, idle, to the end */
#define FLOOD_MAX_SITES 400
#define SEND_TIMEOUT_MS 500 /* a daemon that stops reading makes the send give up */
#define DRAIN_MS 200        /* at most this long a connection waits for the close */
#define RECORD_WAIT_MS 60000
#define GRACE_S 60 /* past the duration, the run is considered hung */

extern char **environ;

/* ======================================================================
 * Byte buffers and recorded streams
 * ==================================================================== */

typedef struct {
  uint8_t *p;
  size_t len, cap;
} buf_t;

static void buf_put(buf_t *b, const void *p, size_t n) {
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n)
      cap *= 2;
    uint8_t *g = realloc(b->p, cap);
    if (!g) {
      fprintf(stderr, "live_fuzzer: out of memory\n");
      exit(1);
    }
    b->p = g;
    b->cap = cap;
  }
  memcpy(b->p + b->len, p, n);
  b->len += n;
}

typedef struct {
  const uint8_t *p;
  size_t len;
  uint8_t type;
  uint32_t events; /* EVENTS: the count of its header */
} frame_t;

typedef struct {
  uint8_t *bytes;
  size_t len;
  frame_t *frames;
  size_t nframes;
} stream_t;

static stream_t streams[MAX_STREAMS];
static size_t nstreams;

static uint32_t get_u32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put_u32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}

/* Splits bytes into frames; returns how many bytes were whole frames. */
static size_t split_frames(const uint8_t *p, size_t len, frame_t **out, size_t *n) {
  size_t off = 0, cap = 0;
  ht_frame_t f;
  *out = NULL;
  *n = 0;
  while (ht_proto_frame(p + off, len - off, &f) == 0) {
    if (*n == cap) {
      cap = cap ? cap * 2 : 64;
      *out = realloc(*out, cap * sizeof **out);
      if (!*out)
        exit(1);
    }
    frame_t *fr = &(*out)[(*n)++];
    fr->p = p + off;
    fr->len = f.total;
    fr->type = f.type;
    fr->events = f.type == HT_REC_EVENTS && f.payload_len >= HT_PROTO_EVENTS_HDR
                     ? get_u32(f.payload + EVENTS_COUNT_AT)
                     : 0;
    off += f.total;
  }
  return off;
}

static int load_stream(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "live_fuzzer: cannot open %s: %s\n", path, strerror(errno));
    return -1;
  }
  buf_t b = {0};
  uint8_t chunk[65536];
  size_t n;
  while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
    buf_put(&b, chunk, n);
  fclose(f);
  stream_t *s = &streams[nstreams];
  s->bytes = b.p;
  s->len = b.len;
  if (split_frames(s->bytes, s->len, &s->frames, &s->nframes) != s->len || s->nframes < 2 ||
      s->frames[0].type != HT_REC_HELLO || s->frames[s->nframes - 1].type != HT_REC_END) {
    fprintf(stderr, "live_fuzzer: %s is not a recorded session (HELLO ... END)\n", path);
    return -1;
  }
  nstreams++;
  return 0;
}

/* ======================================================================
 * Recording
 * ==================================================================== */

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int listen_at(const char *path) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof sa.sun_path)
    return -1;
  memcpy(sa.sun_path, path, strlen(path) + 1);
  unlink(path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 4) != 0)
    return -1;
  return fd;
}

/* Reads one session from lfd's first connection until its END frame. */
static int take_session(int lfd, buf_t *out) {
  struct pollfd p = {lfd, POLLIN, 0};
  if (poll(&p, 1, RECORD_WAIT_MS) != 1)
    return -1;
  int fd = accept(lfd, NULL, NULL);
  if (fd < 0)
    return -1;
  size_t scanned = 0;
  uint64_t deadline = now_ms() + RECORD_WAIT_MS;
  int ended = 0;
  while (!ended && now_ms() < deadline) {
    uint8_t chunk[65536];
    struct pollfd q = {fd, POLLIN, 0};
    if (poll(&q, 1, 1000) <= 0)
      continue;
    ssize_t n = recv(fd, chunk, sizeof chunk, 0);
    if (n <= 0)
      break;
    buf_put(out, chunk, (size_t)n);
    ht_frame_t f;
    while (ht_proto_frame(out->p + scanned, out->len - scanned, &f) == 0) {
      scanned += f.total;
      ended = f.type == HT_REC_END;
    }
  }
  close(fd); /* as the daemon does once the session is committed */
  return ended && scanned == out->len ? 0 : -1;
}

static int record(const char *out_path, char **argv) {
  char sock[200];
  snprintf(sock, sizeof sock, "%s.sock", out_path);
  int lfd = listen_at(sock);
  if (lfd < 0) {
    fprintf(stderr, "live_fuzzer: cannot listen on %s: %s\n", sock, strerror(errno));
    return 1;
  }
  pid_t pid = fork();
  if (pid == 0) {
    setenv("HEAPTRACE_SOCKET", sock, 1);
    execve(argv[0], argv, environ);
    _exit(127);
  }
  buf_t b = {0};
  int rc = take_session(lfd, &b);
  int status = 0;
  waitpid(pid, &status, 0);
  close(lfd);
  unlink(sock);
  if (rc != 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    fprintf(stderr, "live_fuzzer: recording %s failed (session %s, status 0x%x)\n", argv[0],
            rc ? "incomplete" : "complete", status);
    return 1;
  }
  FILE *f = fopen(out_path, "wb");
  if (!f || fwrite(b.p, 1, b.len, f) != b.len || fclose(f) != 0) {
    fprintf(stderr, "live_fuzzer: cannot write %s\n", out_path);
    return 1;
  }
  fprintf(stderr, "live_fuzzer: recorded %zu bytes of %s\n", b.len, argv[0]);
  free(b.p);
  return 0;
}

/* ======================================================================
 * Mutations
 * ==================================================================== */

#define MUTATIONS(X)                                                                               \
  X(clean)                                                                                         \
  X(bitflip)                                                                                       \
  X(event_bytes)                                                                                   \
  X(truncate)                                                                                      \
  X(reorder)                                                                                       \
  X(duplicate)                                                                                     \
  X(length)                                                                                        \
  X(fields)                                                                                        \
  X(site_flood)                                                                                    \
  X(handshake)                                                                                     \
  X(splice)                                                                                        \
  X(control)                                                                                       \
  X(garbage)                                                                                       \
  X(dribble)

typedef enum {
#define MUT_ENUM(name) MUT_##name,
  MUTATIONS(MUT_ENUM)
#undef MUT_ENUM
      MUT_COUNT
} mutation_t;

static const char *const mutation_names[] = {
#define MUT_NAME(name) #name,
    MUTATIONS(MUT_NAME)
#undef MUT_NAME
};

typedef struct {
  uint64_t s;
} rng_t;

static uint64_t rnd(rng_t *r) { /* xorshift64* */
  r->s ^= r->s >> 12;
  r->s ^= r->s << 25;
  r->s ^= r->s >> 27;
  return r->s * 2685821657736338717ull;
}

static size_t below(rng_t *r, size_t n) {
  return n ? (size_t)(rnd(r) % n) : 0;
}

typedef struct {
  buf_t out;
  uint64_t events; /* of recorded EVENTS frames included */
  size_t frames;
  uint32_t pid;
  int dribble; /* send slowly, in small pieces */
} conn_plan_t;

/* Appends a frame, with its HELLO pid rewritten. */
static void put_frame(conn_plan_t *c, const frame_t *f) {
  size_t at = c->out.len;
  buf_put(&c->out, f->p, f->len);
  if (f->type == HT_REC_HELLO && f->len >= HT_PROTO_FRAME_PREFIX + 1 + HELLO_PID_AT + 4)
    put_u32(c->out.p + at + HT_PROTO_FRAME_PREFIX + 1 + HELLO_PID_AT, c->pid);
  c->events += f->events;
  c->frames++;
}

static void put_frames(conn_plan_t *c, const stream_t *s, size_t from, size_t to) {
  for (size_t i = from; i < to && i < s->nframes; i++)
    put_frame(c, &s->frames[i]);
}

static void flip_bits(rng_t *r, uint8_t *p, size_t n, size_t flips) {
  for (size_t i = 0; i < flips && n; i++)
    p[below(r, n)] ^= (uint8_t)(1u << below(r, 8));
}

static void mut_event_bytes(rng_t *r, conn_plan_t *c, const stream_t *s) {
  for (size_t i = 0; i < s->nframes; i++) {
    size_t at = c->out.len;
    put_frame(c, &s->frames[i]);
    size_t head = HT_PROTO_FRAME_PREFIX + 1 + HT_PROTO_EVENTS_HDR;
    if (s->frames[i].type == HT_REC_EVENTS && s->frames[i].len > head && below(r, 3) == 0)
      flip_bits(r, c->out.p + at + head, s->frames[i].len - head, 1 + below(r, 4));
  }
}

static void mut_reorder(rng_t *r, conn_plan_t *c, const stream_t *s) {
  size_t n = s->nframes;
  size_t *order = malloc(n * sizeof *order);
  if (!order)
    exit(1);
  for (size_t i = 0; i < n; i++)
    order[i] = i;
  /* Shuffles a window of w frames; the handshake stays first half of the
   * time, so that the shuffle reaches past it. */
  size_t lo = below(r, 2), span = n - lo;
  size_t w = span >= 2 ? 2 + below(r, span - 1) : span;
  size_t start = lo + below(r, span - w + 1);
  for (size_t i = w; i > 1; i--) {
    size_t a = start + i - 1, b = start + below(r, i), t = order[a];
    order[a] = order[b];
    order[b] = t;
  }
  for (size_t i = 0; i < n; i++)
    put_frame(c, &s->frames[order[i]]);
  free(order);
}

static void mut_duplicate(rng_t *r, conn_plan_t *c, const stream_t *s) {
  size_t dup = 1 + below(r, s->nframes - 1);
  for (size_t i = 0; i < s->nframes; i++) {
    put_frame(c, &s->frames[i]);
    if (i == dup)
      put_frame(c, &s->frames[i]);
  }
}

/* A frame length the daemon must not believe. */
static void mut_length(rng_t *r, conn_plan_t *c, const stream_t *s) {
  static const uint32_t absurd[] = {
      0, 1, 2, 0xffffffffu, HT_PROTO_MAX_FRAME, HT_PROTO_MAX_FRAME + 1, 0x7fffffffu, 0x80000000u};
  size_t victim = below(r, s->nframes);
  for (size_t i = 0; i < s->nframes; i++) {
    size_t at = c->out.len;
    put_frame(c, &s->frames[i]);
    if (i != victim)
      continue;
    uint32_t len = get_u32(c->out.p + at);
    uint32_t v = below(r, 3) ? absurd[below(r, sizeof absurd / sizeof *absurd)]
                             : len + (uint32_t)below(r, 64) - 32;
    put_u32(c->out.p + at, v);
  }
}

/* Fields inside records set to extremes: event counts and sequence
 * numbers, string lengths, argc, version. */
static void mut_fields(rng_t *r, conn_plan_t *c, const stream_t *s) {
  static const uint32_t counts[] = {0, 1, 0xffffffffu, HT_PROTO_MAX_FRAME_EVENTS,
                                    HT_PROTO_MAX_FRAME_EVENTS + 1};
  static const uint64_t seqs[] = {UINT64_MAX, 1ull << 63, 1ull << 40, 1};
  size_t victim = below(r, s->nframes);
  for (size_t i = 0; i < s->nframes; i++) {
    size_t at = c->out.len;
    put_frame(c, &s->frames[i]);
    if (i != victim)
      continue;
    uint8_t *pl = c->out.p + at + HT_PROTO_FRAME_PREFIX + 1;
    size_t n = s->frames[i].len - HT_PROTO_FRAME_PREFIX - 1;
    switch (s->frames[i].type) {
    case HT_REC_EVENTS:
      if (below(r, 2))
        put_u32(pl + EVENTS_COUNT_AT, counts[below(r, sizeof counts / sizeof *counts)]);
      else
        for (int k = 0; k < 8; k++)
          pl[4 + k] = (uint8_t)(seqs[below(r, sizeof seqs / sizeof *seqs)] >> (8 * k));
      break;
    case HT_REC_HELLO: /* version (u16 at 4) or the app string's length */
      if (below(r, 2)) {
        pl[4] = 0xff;
        pl[5] = 0xff;
      } else if (n > HELLO_APP_AT + 2) {
        pl[HELLO_APP_AT] = 0xff;
        pl[HELLO_APP_AT + 1] = 0xff;
      }
      break;
    default: /* a string length or a varint blown up, near the start */
      if (n > 2)
        memset(pl + below(r, n - 1), 0xff, 2);
      break;
    }
  }
}

/* Printable text for flooded sites; filled before the threads start. */
static char flood_text[HT_PROTO_MAX_STRING];

static void mut_site_flood(rng_t *r, conn_plan_t *c, const stream_t *s) {
  put_frame(c, &s->frames[0]);
  size_t sites = 1 + below(r, FLOOD_MAX_SITES);
  uint8_t rec[3 * HT_PROTO_MAX_STRING + 64];
  for (size_t i = 0; i < sites; i++) {
    /* Mostly new ids, some repeated; strings up to the longest allowed. */
    uint32_t id = (uint32_t)(below(r, 3) ? 1000 + i : 1 + below(r, 8));
    ht_site_rec_t site = {id,
                          (uint32_t)rnd(r),
                          {flood_text, below(r, HT_PROTO_MAX_STRING + 1)},
                          {flood_text, below(r, 256)},
                          {flood_text, below(r, 2) ? 0 : below(r, 64)}};
    ht_wbuf_t w;
    ht_wbuf_init(&w, rec, sizeof rec);
    ht_proto_put_site(&w, &site);
    buf_put(&c->out, rec, w.len);
    c->frames++;
  }
  put_frames(c, s, 1, s->nframes);
}

/* A second HELLO in the middle, or a control request before the HELLO. */
static void mut_handshake(rng_t *r, conn_plan_t *c, const stream_t *s) {
  size_t at = 1 + below(r, s->nframes - 1);
  if (below(r, 4) == 0) {
    static const char req[] = "{\"cmd\":\"sessions\"}";
    uint8_t head[5];
    put_u32(head, (uint32_t)sizeof req);
    head[4] = HT_REC_CTL_REQUEST;
    buf_put(&c->out, head, sizeof head);
    buf_put(&c->out, req, sizeof req - 1);
    c->frames++;
    at = 0;
  }
  for (size_t i = 0; i < s->nframes; i++) {
    if (i == at && at > 0)
      put_frame(c, &streams[below(r, nstreams)].frames[0]);
    put_frame(c, &s->frames[i]);
  }
}

/* Frames of two streams after one HELLO: their delta states collide. */
static void mut_splice(rng_t *r, conn_plan_t *c, const stream_t *s) {
  const stream_t *o = &streams[below(r, nstreams)];
  put_frame(c, &s->frames[0]);
  size_t i = 1, j = 1;
  while (i < s->nframes - 1 || j < o->nframes - 1) {
    if (j >= o->nframes - 1 || (i < s->nframes - 1 && below(r, 2)))
      put_frame(c, &s->frames[i++]);
    else
      put_frame(c, &o->frames[j++]);
  }
  put_frame(c, &s->frames[s->nframes - 1]);
}

/* A request heapctl sends, then whatever follows it. */
static void mut_control(rng_t *r, conn_plan_t *c, const stream_t *s) {
  static const char *const reqs[] = {"{\"cmd\":\"sessions\"}",
                                     "{\"cmd\":\"status\"}",
                                     "{\"cmd\":\"stats\"}",
                                     "{\"cmd\":\"leaks\",\"by\":\"site\"}",
                                     "{\"cmd\":\"top\",\"by\":\"count\",\"limit\":3}",
                                     "{\"cmd\":\"events\",\"limit\":5}",
                                     "{\"cmd\":",
                                     "[1,2,",
                                     "{\"cmd\":\"nope\"}"};
  const char *req = reqs[below(r, sizeof reqs / sizeof *reqs)];
  uint8_t head[5];
  put_u32(head, (uint32_t)strlen(req) + 1);
  head[4] = HT_REC_CTL_REQUEST;
  buf_put(&c->out, head, sizeof head);
  buf_put(&c->out, req, strlen(req));
  c->frames++;
  if (below(r, 2))
    put_frames(c, s, 0, 1 + below(r, s->nframes)); /* a session after the request */
}

static void mut_garbage(rng_t *r, conn_plan_t *c, const stream_t *s) {
  if (below(r, 2))
    put_frame(c, &s->frames[0]);
  size_t n = 1 + below(r, 4096);
  for (size_t i = 0; i < n; i++) {
    uint8_t b = (uint8_t)rnd(r);
    buf_put(&c->out, &b, 1);
  }
}

/* Builds what one connection sends. */
static mutation_t plan(rng_t *r, conn_plan_t *c) {
  const stream_t *s = &streams[below(r, nstreams)];
  mutation_t m = (mutation_t)below(r, MUT_COUNT);
  switch (m) {
  case MUT_clean:
    put_frames(c, s, 0, s->nframes);
    break;
  case MUT_bitflip:
    put_frames(c, s, 0, s->nframes);
    flip_bits(r, c->out.p, c->out.len, 1 + below(r, 16));
    break;
  case MUT_event_bytes:
    mut_event_bytes(r, c, s);
    break;
  case MUT_truncate:
    put_frames(c, s, 0, s->nframes);
    c->out.len = below(r, c->out.len);
    break;
  case MUT_reorder:
    mut_reorder(r, c, s);
    break;
  case MUT_duplicate:
    mut_duplicate(r, c, s);
    break;
  case MUT_length:
    mut_length(r, c, s);
    break;
  case MUT_fields:
    mut_fields(r, c, s);
    break;
  case MUT_site_flood:
    mut_site_flood(r, c, s);
    break;
  case MUT_handshake:
    mut_handshake(r, c, s);
    break;
  case MUT_splice:
    mut_splice(r, c, s);
    break;
  case MUT_control:
    mut_control(r, c, s);
    break;
  case MUT_garbage:
    mut_garbage(r, c, s);
    break;
  case MUT_dribble:
    put_frames(c, s, 0, s->nframes);
    c->out.len = c->out.len / 2 + below(r, c->out.len / 2 + 1);
    c->dribble = 1;
    break;
  default:
    break;
  }
  return m;
}

/* ======================================================================
 * Connections
 * ==================================================================== */

static const char *socket_path;
static uint64_t stop_at_ms;
static _Atomic uint64_t n_conns, n_frames, n_events, n_bytes, n_refused, n_idle;
static _Atomic uint64_t n_mut[MUT_COUNT];
static pthread_mutex_t idle_lock = PTHREAD_MUTEX_INITIALIZER;
static int idle_fds[MAX_IDLE];
static size_t nidle;

static void sleep_us(long us) {
  struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
  nanosleep(&ts, NULL);
}

/* Connects with a bounded wait (SO_SNDTIMEO also bounds a connect to a
 * full backlog). Returns the socket or -1. */
static int open_conn(void) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  memcpy(sa.sun_path, socket_path, strlen(socket_path) + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -1;
  struct timeval tv = {SEND_TIMEOUT_MS / 1000, (SEND_TIMEOUT_MS % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

/* Sends what it can: a daemon that hung up or stopped reading ends it. */
static size_t send_some(int fd, const uint8_t *p, size_t n, int dribble, rng_t *r) {
  size_t put = 0;
  while (put < n) {
    size_t piece = dribble ? 1 + below(r, 64) : n - put;
    if (piece > n - put)
      piece = n - put;
    ssize_t w = send(fd, p + put, piece, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      break;
    put += (size_t)w;
    if (dribble)
      sleep_us((long)below(r, 2000));
  }
  return put;
}

/* Waits a random while, bounded, for the daemon to close, reading what it
 * sends: some connections see their session through, others hang up
 * first. */
static void drain(int fd, rng_t *r) {
  uint64_t until = now_ms() + below(r, DRAIN_MS);
  char sink[4096];
  for (uint64_t now = now_ms(); now < until; now = now_ms()) {
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, (int)(until - now)) <= 0)
      continue;
    ssize_t n = recv(fd, sink, sizeof sink, MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN))
      return;
  }
}

/* A connection that says HELLO and half a frame, then nothing until the
 * end of the run. */
static void hold_idle(rng_t *r, uint32_t pid) {
  pthread_mutex_lock(&idle_lock);
  int room = nidle < MAX_IDLE;
  pthread_mutex_unlock(&idle_lock);
  if (!room)
    return;
  int fd = open_conn();
  if (fd < 0)
    return;
  conn_plan_t c = {.pid = pid};
  const stream_t *s = &streams[below(r, nstreams)];
  put_frames(&c, s, 0, 2);
  c.out.len -= below(r, s->frames[1].len);
  send_some(fd, c.out.p, c.out.len, 0, r);
  free(c.out.p);
  pthread_mutex_lock(&idle_lock);
  if (nidle < MAX_IDLE) {
    idle_fds[nidle++] = fd;
    fd = -1;
  }
  pthread_mutex_unlock(&idle_lock);
  if (fd >= 0)
    close(fd);
  else
    n_idle++;
}

typedef struct {
  pthread_t thread;
  uint32_t index;
  uint64_t seed;
} worker_t;

static void *worker(void *arg) {
  worker_t *wk = arg;
  rng_t r = {wk->seed * 0x9e3779b97f4a7c15ull + wk->index + 1};
  uint32_t pid = FUZZ_PID_BASE + wk->index;
  while (now_ms() < stop_at_ms) {
    if (below(&r, 64) == 0)
      hold_idle(&r, pid);
    conn_plan_t c = {.pid = pid};
    mutation_t m = plan(&r, &c);
    int fd = open_conn();
    if (fd < 0) {
      n_refused++;
      free(c.out.p);
      sleep_us(10000);
      continue;
    }
    size_t put = send_some(fd, c.out.p, c.out.len, c.dribble, &r);
    shutdown(fd, SHUT_WR);
    drain(fd, &r);
    close(fd);
    n_conns++;
    n_mut[m]++;
    n_bytes += put;
    if (put == c.out.len) {
      n_frames += c.frames;
      n_events += c.events;
    }
    free(c.out.p);
  }
  return NULL;
}

static void on_alarm(int sig) {
  (void)sig;
  static const char msg[] = "live_fuzzer: the run did not end in time (hung send?)\n";
  ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
  (void)w;
  _exit(3);
}

static int fuzz(int argc, char **argv) {
  socket_path = argv[0];
  uint64_t seed = strtoull(argv[1], NULL, 0);
  long duration = atol(argv[2]), threads = atol(argv[3]);
  struct sockaddr_un sa;
  if (strlen(socket_path) >= sizeof sa.sun_path || duration <= 0 || threads <= 0 ||
      threads > MAX_THREADS) {
    fprintf(stderr, "live_fuzzer: bad socket, duration or thread count\n");
    return 1;
  }
  for (int i = 4; i < argc && nstreams < MAX_STREAMS; i++)
    if (load_stream(argv[i]) != 0)
      return 1;
  if (nstreams == 0) {
    fprintf(stderr, "live_fuzzer: no streams given\n");
    return 1;
  }
  for (size_t i = 0; i < sizeof flood_text; i++)
    flood_text[i] = (char)('a' + i % 26);
  signal(SIGPIPE, SIG_IGN);
  signal(SIGALRM, on_alarm);
  alarm((unsigned)(duration / 1000 + GRACE_S));
  stop_at_ms = now_ms() + (uint64_t)duration;
  static worker_t w[MAX_THREADS];
  for (long i = 0; i < threads; i++) {
    w[i].index = (uint32_t)i;
    w[i].seed = seed;
    if (pthread_create(&w[i].thread, NULL, worker, &w[i]) != 0) {
      fprintf(stderr, "live_fuzzer: cannot start thread %ld\n", i);
      return 1;
    }
  }
  for (long i = 0; i < threads; i++)
    pthread_join(w[i].thread, NULL);
  for (size_t i = 0; i < nidle; i++)
    close(idle_fds[i]);
  printf("connections=%llu frames=%llu events=%llu bytes=%llu refused=%llu idle=%llu",
         (unsigned long long)n_conns, (unsigned long long)n_frames, (unsigned long long)n_events,
         (unsigned long long)n_bytes, (unsigned long long)n_refused, (unsigned long long)n_idle);
  for (int m = 0; m < MUT_COUNT; m++)
    printf(" %s=%llu", mutation_names[m], (unsigned long long)n_mut[m]);
  printf("\n");
  return 0;
}

int main(int argc, char **argv) {
  if (argc >= 4 && strcmp(argv[1], "record") == 0)
    return record(argv[2], argv + 3);
  if (argc >= 7 && strcmp(argv[1], "fuzz") == 0)
    return fuzz(argc - 2, argv + 2);
  fprintf(stderr, "usage: live_fuzzer record OUT PROGRAM [ARGS...]\n"
                  "       live_fuzzer fuzz SOCKET SEED DURATION_MS THREADS STREAM...\n");
  return 2;
}
