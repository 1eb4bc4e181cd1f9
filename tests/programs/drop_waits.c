/* drop_waits.c - what a drop-mode program waits for while the flusher is
 * stuck on a full socket, for tests/test_e2e_transport.c.
 *
 *   drop_waits CHURN_MS GO_FILE
 *
 * Run in drop mode against a stopped daemon. Twice, the program allocates
 * and frees for CHURN_MS milliseconds, which fills the socket so that the
 * flusher waits on it, and then times one call that takes the transport's
 * locks: fork() (the child exits at once), and the registration of a heap
 * region. It prints
 *   fork_ms=F register_ms=R
 * and waits until GO_FILE exists (the daemon reads again), allocates for
 * CHURN_MS more and prints every event it made:
 *   events=E
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <heaptrace/heaptrace.h>

#include "churn.h"

static _Alignas(16) char region[64 * 1024];

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: drop_waits CHURN_MS GO_FILE\n");
    return 2;
  }
  double churn_ms = atof(argv[1]);
  unsigned long long events = churn(churn_ms);

  double t0 = now_ms();
  pid_t child = fork();
  if (child == 0)
    _exit(0);
  double fork_ms = now_ms() - t0;
  int status;
  if (child < 0 || waitpid(child, &status, 0) != child || status != 0)
    return 1;

  events += churn(churn_ms);
  t0 = now_ms();
  if (ht_heap_add_region((intptr_t)region, (intptr_t)(region + sizeof region)) != 0)
    return 1;
  double register_ms = now_ms() - t0;

  printf("fork_ms=%.0f register_ms=%.0f\n", fork_ms, register_ms);
  fflush(stdout);
  for (int waited = 0; access(argv[2], F_OK) != 0; waited += 10) {
    if (waited > 60000)
      return 1;
    nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
  }
  events += churn(churn_ms);
  printf("events=%llu\n", events);
  return 0;
}
