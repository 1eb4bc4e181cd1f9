/* retrying.c - a drop-mode program that goes on while the daemon stops
 * and reads again, for tests/test_e2e_transport.c.
 *
 *   retrying STOP_FILE BURST_FILE
 *
 * Until STOP_FILE exists the program, every 20 ms, allocates and frees
 * for 1 ms, or for 20 ms while BURST_FILE exists, then forks a child that
 * exits at once. The test makes the burst while the daemon is stopped, so
 * that its socket is full within a round or two however slow the build,
 * and not while it reads, so that it keeps up however loaded the machine.
 * A fork takes the transport's locks: the flusher gives a stuck
 * connection up within HT_DROP_PATIENCE_MS and tries a new one on its
 * retry schedule. Then the program prints every event it made:
 *   events=E
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "churn.h"

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: retrying STOP_FILE BURST_FILE\n");
    return 2;
  }
  unsigned long long events = 0;
  while (access(argv[1], F_OK) != 0) {
    double round = now_ms();
    events += churn(access(argv[2], F_OK) == 0 ? 20 : 1);
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
