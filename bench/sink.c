/* sink.c - a stand-in for heaptraced that reads and discards (bench/overhead).
 *
 *   sink --socket PATH
 *
 * Listens on a Unix socket, serves one connection at a time, reads every
 * byte and throws it away. It walks the frame structure (proto/PROTOCOL.md)
 * only as far as needed to count frames and events and to see END: after
 * the END frame, or on EOF, it closes the connection, which is what the
 * client waits for at exit (libclient/transport.c, wait_for_receipt). So the
 * traced program pays for encoding and transport, not for storage.
 *
 * stdout, line-buffered: "sink: ready" once listening, then per connection
 *   sink: conn=N bytes=B frames=F events=E event_bytes=X end=0|1 seconds=S
 * where bytes counts everything received, event_bytes the event payload of
 * EVENTS frames only (frame prefixes and EVENTS headers excluded), and
 * seconds runs from accept to close. Stops on SIGTERM or SIGINT, and when
 * the process that started it dies (so a killed benchmark leaves no sink).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "ht_proto.h"

#define SINK_BUF (1u << 20)
/* Header bytes kept of each frame: prefix, type, and for EVENTS
 * stream u32 + first_seq u64 + count u32. */
#define SINK_HEAD HT_PROTO_EVENTS_HEAD

typedef struct {
  uint64_t bytes, frames, events, event_bytes;
  int end_seen;
  /* Frame walker. */
  uint8_t head[SINK_HEAD];
  size_t head_have, head_want;
  uint64_t skip; /* bytes of the current frame still to discard */
  int in_body;
} conn_t;

static volatile sig_atomic_t stop;

static void on_signal(int sig) {
  (void)sig;
  stop = 1;
}

static uint32_t le32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Feeds received bytes to the frame walker. Returns 1 when a whole END
 * frame has been consumed, -1 on a malformed frame length, else 0. */
static int walk(conn_t *c, const uint8_t *p, size_t n) {
  while (n > 0) {
    if (c->in_body) {
      size_t take = c->skip < n ? (size_t)c->skip : n;
      c->skip -= take;
      p += take;
      n -= take;
      if (c->skip == 0) {
        c->in_body = 0;
        c->head_have = 0;
        if (c->end_seen)
          return 1;
      }
      continue;
    }
    size_t want = c->head_have < 5 ? 5 : c->head_want;
    size_t take = want - c->head_have < n ? want - c->head_have : n;
    memcpy(c->head + c->head_have, p, take);
    c->head_have += take;
    p += take;
    n -= take;
    if (c->head_have < want)
      continue;
    uint32_t len = le32(c->head);
    if (len < 1 || len > HT_PROTO_MAX_FRAME)
      return -1;
    uint8_t type = c->head[4];
    if (c->head_have == 5) {
      /* Decide how much of this frame's start to keep. */
      size_t total = HT_PROTO_FRAME_PREFIX + (size_t)len;
      c->head_want = type == HT_REC_EVENTS && total >= SINK_HEAD ? SINK_HEAD : 5;
      if (c->head_want > 5)
        continue;
    }
    c->frames++;
    if (type == HT_REC_EVENTS) {
      c->events += le32(c->head + 5 + 4 + 8);
      c->event_bytes += (uint64_t)len + HT_PROTO_FRAME_PREFIX - SINK_HEAD;
    } else if (type == HT_REC_END) {
      c->end_seen = 1;
    }
    c->skip = (uint64_t)len + HT_PROTO_FRAME_PREFIX - c->head_have;
    c->in_body = 1;
    if (c->skip == 0) {
      c->in_body = 0;
      c->head_have = 0;
      if (c->end_seen)
        return 1;
    }
  }
  return 0;
}

int main(int argc, char **argv) {
  const char *path = NULL;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--socket") == 0 && i + 1 < argc) {
      path = argv[++i];
    } else {
      fprintf(stderr, "usage: sink --socket PATH\n");
      return 1;
    }
  }
  if (!path) {
    fprintf(stderr, "usage: sink --socket PATH\n");
    return 1;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal; /* no SA_RESTART: accept/recv return EINTR */
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  prctl(PR_SET_PDEATHSIG, SIGTERM);

  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof addr.sun_path) {
    fprintf(stderr, "sink: socket path too long: %s\n", path);
    return 1;
  }
  memcpy(addr.sun_path, path, strlen(path) + 1);
  int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (lfd < 0) {
    perror("sink: socket");
    return 1;
  }
  unlink(path);
  if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(lfd, 16) != 0) {
    fprintf(stderr, "sink: cannot listen on %s: %s\n", path, strerror(errno));
    return 1;
  }
  printf("sink: ready\n");

  static uint8_t buf[SINK_BUF];
  int status = 0;
  for (unsigned long conn_no = 1; !stop; conn_no++) {
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) {
        conn_no--;
        continue;
      }
      perror("sink: accept");
      status = 1;
      break;
    }
    double t0 = now_s();
    conn_t c;
    memset(&c, 0, sizeof c);
    for (;;) {
      ssize_t n = recv(fd, buf, sizeof buf, 0);
      if (n < 0 && errno == EINTR && !stop)
        continue;
      if (n <= 0)
        break;
      c.bytes += (uint64_t)n;
      int w = walk(&c, buf, (size_t)n);
      if (w < 0) {
        fprintf(stderr, "sink: connection %lu: bad frame length; closing\n", conn_no);
        break;
      }
      if (w > 0)
        break; /* END read: close, as heaptraced does */
    }
    close(fd);
    printf("sink: conn=%lu bytes=%" PRIu64 " frames=%" PRIu64 " events=%" PRIu64
           " event_bytes=%" PRIu64 " end=%d seconds=%.6f\n",
           conn_no, c.bytes, c.frames, c.events, c.event_bytes, c.end_seen, now_s() - t0);
  }
  close(lfd);
  unlink(path);
  return status;
}
