/* retrying.c - a drop-mode program that goes on while the daemon stops
 * and reads again, for tests/test_e2e_transport.c.
 *
 *   retrying STOP_FILE
 *
 * Until STOP_FILE exists the program, every 20 ms, allocates and frees
 * for 1 ms (about 100 KB on the wire: a stopped daemon's socket is full
 * within a few rounds, and a running one keeps up with ease, however
 * loaded the machine), then forks a child that exits at once: a fork
 * takes the transport's locks, so the flusher gives a stuck connection up
 * within HT_DROP_PATIENCE_MS and tries a new one on its retry schedule.
 * Then it prints every event it made:
 *   events=E
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "churn.h"

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: retrying STOP_FILE\n");
    return 2;
  }
  unsigned long long events = 0;
  while (access(argv[1], F_OK) != 0) {
    double round = now_ms();
    events += churn(1);
    double rest = 20 - (now_ms() - round);
    if (rest > 0)
      nanosleep(&(struct timespec){0, (long)(rest * 1e6)}, NULL);
    pid_t child = fork();
    if (child == 0)
      _exit(0);
    int status;
    if (child < 0 || waitpid(child, &status, 0) != child || status != 0)
      return 1;
  }
  printf("events=%llu\n", events);
  return 0;
}
