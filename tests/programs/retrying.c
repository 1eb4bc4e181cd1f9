/* retrying.c - a drop-mode program that goes on while the daemon stops
 * and reads again, for tests/test_e2e_transport.c.
 *
 *   retrying STOP_FILE
 *
 * Until STOP_FILE exists the program allocates and frees for 20 ms at a
 * time, which fills the socket of a stopped daemon, and forks a child
 * that exits at once after each: a fork takes the transport's locks, so
 * the flusher gives a stuck connection up within HT_DROP_PATIENCE_MS and
 * tries a new one on its retry schedule. Then it prints every event it
 * made:
 *   events=E
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
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
    events += churn(20);
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
