/* dying_listener.c - a process that listens on a Unix socket as a daemon
 * killed with SIGKILL does while its last thread is still exiting: its
 * main thread is gone (a zombie leader), another thread keeps the socket
 * open, and nothing ever accepts.
 *
 *   dying_listener PATH [LOCK]
 *
 * With LOCK it also holds that file's lock, with its pid in it, as a
 * daemon holds its database's (DB.lock). Prints "ready" once listening;
 * runs until killed.
 */
#define _DEFAULT_SOURCE /* flock */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
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
  if (argc < 2 || argc > 3 || strlen(argv[1]) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
    fprintf(stderr, "usage: dying_listener PATH [LOCK]\n");
    return 2;
  }
  if (argc == 3) {
    int lk = open(argv[2], O_RDWR | O_CREAT, 0600);
    if (lk < 0 || flock(lk, LOCK_EX | LOCK_NB) != 0 || ftruncate(lk, 0) != 0 ||
        dprintf(lk, "%d\n", (int)getpid()) < 0) {
      perror("dying_listener: lock");
      return 1;
    }
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
