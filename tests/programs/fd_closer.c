/* fd_closer.c - a traced program that, tracing already, closes every
 * descriptor above stderr, as a program that daemonizes does, and then
 * opens a connection of its own that takes the number heaptrace's socket
 * had (tests/test_e2e_transport.c).
 *
 *   fd_closer ROUNDS
 *
 * It closes stdin before its first traced call, so that the lowest free
 * number when heaptrace connects is 0: the socket must not take it (the
 * program would print into it, or dup2() a file over it). Then ROUNDS
 * malloc/free pairs before the closing, ROUNDS after it (shipped
 * by ht_flush() while the number is the program's), then, once heaptrace
 * has connected again (it polls ht_flush() for up to 5 s), ROUNDS more.
 * Prints one line:
 *   events=E socket_fd=F stray_bytes=N reconnected=0|1
 * where socket_fd is the number heaptrace's socket had and stray_bytes
 * what reached the program's own connection at that number: it must be 0.
 * Exit status 0, 1 when the set-up failed.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <heaptrace/heaptrace.h>

static unsigned long long events;

static void rounds(long n) {
  for (long i = 0; i < n; i++) {
    void *p = ht_malloc((size_t)(16 + i % 512));
    ht_free(p);
    events += 2;
  }
}

/* The number of the one socket the process holds (heaptrace's), or -1. */
static int heaptrace_socket(void) {
  DIR *d = opendir("/proc/self/fd");
  if (!d)
    return -1;
  int found = -1;
  for (struct dirent *e; (e = readdir(d)) != NULL;) {
    char path[300], target[64];
    snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
    ssize_t n = readlink(path, target, sizeof target - 1);
    if (n > 0 && strncmp(target, "socket:", 7) == 0 && atoi(e->d_name) != dirfd(d))
      found = atoi(e->d_name);
  }
  closedir(d);
  return found;
}

int main(int argc, char **argv) {
  long n = argc == 2 ? atol(argv[1]) : 0;
  if (n <= 0) {
    fprintf(stderr, "usage: fd_closer ROUNDS\n");
    return 1;
  }
  close(STDIN_FILENO);
  rounds(n);
  if (ht_flush() != 0) {
    fprintf(stderr, "fd_closer: not traced\n");
    return 1;
  }
  int was = heaptrace_socket();
  if (was < 0) {
    fprintf(stderr, "fd_closer: no socket found\n");
    return 1;
  }
  for (int fd = STDERR_FILENO + 1; fd < 1024; fd++)
    close(fd);
  /* Connections of the program's own until one end has that number. */
  int mine = -1, peer = -1;
  while (mine != was) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0 || sv[0] > was) {
      fprintf(stderr, "fd_closer: number %d not reached\n", was);
      return 1;
    }
    mine = sv[0] == was ? sv[0] : sv[1] == was ? sv[1] : -1;
    peer = sv[0] == was ? sv[1] : sv[0];
  }
  rounds(n);
  ht_flush(); /* finds the number taken */
  int reconnected = 0;
  for (int waited = 0; waited < 5000 && !reconnected; waited += 20) {
    reconnected = ht_flush() == 0;
    if (!reconnected)
      nanosleep(&(struct timespec){0, 20 * 1000000L}, NULL);
  }
  rounds(n);
  ht_flush();
  char buf[4096];
  long stray = 0;
  for (ssize_t got; (got = recv(peer, buf, sizeof buf, MSG_DONTWAIT)) > 0;)
    stray += got;
  printf("events=%llu socket_fd=%d stray_bytes=%ld reconnected=%d\n", events, was, stray,
         reconnected);
  return 0;
}
