/* refusing_listener.c - a daemon that refuses every client, as a
 * heaptraced older than the library refuses its protocol version: it
 * accepts each connection, reads what the client sends first, and closes
 * it.
 *
 *   refusing_listener PATH
 *
 * Runs until killed (SIGTERM); then prints how many connections it took:
 *   connections=N
 */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_term(int sig) {
  (void)sig;
  stop = 1;
}

int main(int argc, char **argv) {
  if (argc != 2 || strlen(argv[1]) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
    fprintf(stderr, "usage: refusing_listener PATH\n");
    return 2;
  }
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
    char buf[4096];
    if (read(c, buf, sizeof buf) < 0)
      perror("refusing_listener: read");
    close(c);
    n++;
  }
  printf("connections=%ld\n", n);
  return 0;
}
