/* dying_listener.c - a process that listens on a Unix socket as a daemon
 * killed with SIGKILL does while its last thread is still exiting: its
 * main thread is gone (a zombie leader), another thread keeps the socket
 * open, and nothing ever accepts.
 *
 *   dying_listener PATH [LOCK]
 *
 * With LOCK it also holds that file's lock, with its pid in it, as a
 * daemon holds its database's (DB.lock). The socket is made under a
 * name of its own and renamed to PATH only once the main thread is a
 * zombie, so that nobody connects while it still looks alive. Prints
 * "ready" then; runs until killed.
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

static char path[108], tmp[120];

/* 1 once the thread group's leader (the main thread) is a zombie. */
static int leader_gone(void) {
  char stat[512];
  FILE *f = fopen("/proc/self/stat", "r");
  size_t n = f ? fread(stat, 1, sizeof stat - 1, f) : 0;
  if (f)
    fclose(f);
  stat[n] = '\0';
  const char *end = strrchr(stat, ')');
  return end && end[1] == ' ' && end[2] == 'Z';
}

static void *straggler(void *arg) {
  (void)arg;
  while (!leader_gone())
    usleep(1000);
  if (rename(tmp, path) != 0) {
    perror("dying_listener: rename");
    _exit(1);
  }
  printf("ready\n");
  fflush(stdout);
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
  snprintf(path, sizeof path, "%s", argv[1]);
  snprintf(tmp, sizeof tmp, "%s.new", argv[1]);
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(tmp) >= sizeof sa.sun_path) {
    fprintf(stderr, "dying_listener: path too long: %s\n", tmp);
    return 2;
  }
  memcpy(sa.sun_path, tmp, strlen(tmp) + 1);
  if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 16) != 0) {
    perror("dying_listener");
    return 1;
  }
  pthread_t t;
  if (pthread_create(&t, NULL, straggler, NULL) != 0)
    return 1;
  pthread_exit(NULL); /* the process lives on in the straggler */
}
