/* refusing_listener.c - a daemon that refuses every client, as a
 * heaptraced older than the library refuses its protocol version: it
 * accepts each connection, reads what the client sends first, and closes
 * it.
 *
 *   refusing_listener PATH [MAX_VERSION [DROP_AFTER_MS]]
 *
 * With MAX_VERSION it is such an older daemon: it refuses a client whose
 * HELLO says a newer version, and takes one that speaks MAX_VERSION or
 * older, reading its frames until END (then it closes the connection, as
 * heaptraced does) and checking that each PREVIOUS record carries the
 * fields of the version the client said. With DROP_AFTER_MS it closes the
 * first connection it took that long after taking it, as a daemon that
 * died would.
 *
 * Runs until killed (SIGTERM); then prints how many connections it took
 *   connections=N
 * and, with MAX_VERSION, the version of the last one it took (0: none),
 * the PREVIOUS records it read, and those shaped as that version's:
 *   accepted=V previous=P previous_ok=Q
 */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop;
static long accepted, previous, previous_ok;
static long drop_after_ms; /* 0: none, or done */

static long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint32_t le32(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Varints in p[0, n), or -1 when the last one runs past the end. */
static int varints(const unsigned char *p, size_t n) {
  int count = 0;
  for (size_t i = 0; i < n; count++) {
    while (i < n && (p[i] & 0x80))
      i++;
    if (i++ >= n)
      return -1;
  }
  return count;
}

/* Serves connection c as a daemon of protocol versions up to max: returns
 * once it refused the client, read END, or the client went away. */
static void serve(int c, int max) {
  static unsigned char buf[1u << 22];
  size_t have = 0;
  int version = 0;
  long t0 = now_ms();
  for (;;) {
    ssize_t n = read(c, buf + have, sizeof buf - have);
    if (n <= 0)
      return;
    if (version && drop_after_ms && now_ms() - t0 >= drop_after_ms) {
      drop_after_ms = 0;
      return;
    }
    have += (size_t)n;
    size_t at = 0;
    while (have - at >= 5 && have - at - 4 >= le32(buf + at)) {
      const unsigned char *body = buf + at + 4;
      size_t len = le32(buf + at);
      at += 4 + len;
      if (version == 0) { /* HELLO: type, magic, version */
        version = len >= 7 && body[0] == 1 ? body[5] | body[6] << 8 : 99;
        if (version > max)
          return;
        accepted = version;
      } else if (body[0] == 7 && len > 9) { /* PREVIOUS: start (8 bytes), varints */
        previous++;
        previous_ok += varints(body + 9, len - 9) == (version >= 4 ? 2 : 1);
      } else if (body[0] == 6) { /* END */
        return;
      }
    }
    memmove(buf, buf + at, have - at);
    have -= at;
  }
}

static void on_term(int sig) {
  (void)sig;
  stop = 1;
}

int main(int argc, char **argv) {
  if (argc < 2 || argc > 4 || strlen(argv[1]) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
    fprintf(stderr, "usage: refusing_listener PATH [MAX_VERSION [DROP_AFTER_MS]]\n");
    return 2;
  }
  int max = argc >= 3 ? atoi(argv[2]) : 0;
  drop_after_ms = argc == 4 ? atol(argv[3]) : 0;
  struct sigaction sa_term;
  memset(&sa_term, 0, sizeof sa_term);
  sa_term.sa_handler = on_term; /* no SA_RESTART: accept() returns */
  sigaction(SIGTERM, &sa_term, NULL);
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  memcpy(sa.sun_path, argv[1], strlen(argv[1]) + 1);
  if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 16) != 0) {
    perror("refusing_listener");
    return 1;
  }
  long n = 0;
  while (!stop) {
    int c = accept(fd, NULL, NULL);
    if (c < 0)
      continue;
    if (max) {
      serve(c, max);
    } else {
      char buf[4096];
      if (read(c, buf, sizeof buf) < 0)
        perror("refusing_listener: read");
    }
    close(c);
    n++;
  }
  printf("connections=%ld\n", n);
  if (max)
    printf("accepted=%ld previous=%ld previous_ok=%ld\n", accepted, previous, previous_ok);
  return 0;
}
