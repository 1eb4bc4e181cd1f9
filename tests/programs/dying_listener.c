/* dying_listener.c - a process that listens on a Unix socket as a daemon
 * killed with SIGKILL does while its last thread is still exiting: its
 * main thread is gone (a zombie leader), another thread keeps the socket
 * open, and nothing ever accepts.
 *
 *   dying_listener PATH
 *
 * Prints "ready" once listening; runs until killed.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static void *straggler(void *arg) {
  (void)arg;
  for (;;)
    pause();
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 2 || strlen(argv[1]) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
    fprintf(stderr, "usage: dying_listener PATH\n");
    return 2;
  }
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  memcpy(sa.sun_path, argv[1], strlen(argv[1]) + 1);
  if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 16) != 0) {
    perror("dying_listener");
    return 1;
  }
  pthread_t t;
  if (pthread_create(&t, NULL, straggler, NULL) != 0)
    return 1;
  printf("ready\n");
  fflush(stdout);
  pthread_exit(NULL); /* the process lives on in the straggler */
}
