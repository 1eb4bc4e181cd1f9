/* fork_early.c - a fork while another thread's first traced call starts
 * the transport, for tests/test_e2e_transport.c.
 *
 *   fork_early DELAY_US
 *
 * A thread makes the process's first traced call, which connects to the
 * daemon; DELAY_US microseconds after starting it the main thread, which
 * has traced nothing, forks. The child makes a traced allocation and
 * exits; the parent waits for it at most 5 s and exits 0 if it did, 1 if
 * it hung (killed) or failed.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <heaptrace/heaptrace.h>

static void *first_call(void *arg) {
  (void)arg;
  ht_free(ht_malloc(64));
  return NULL;
}

static void pause_us(long us) {
  struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
  nanosleep(&ts, NULL);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: fork_early DELAY_US\n");
    return 2;
  }
  long delay = atol(argv[1]);
  pthread_t t;
  if (pthread_create(&t, NULL, first_call, NULL) != 0)
    return 1;
  if (delay > 0)
    pause_us(delay);
  pid_t child = fork();
  if (child == 0) {
    void *p = ht_malloc(32);
    ht_free(p);
    _exit(p ? 0 : 1);
  }
  int status = -1, waited = 0;
  while (child > 0 && waitpid(child, &status, WNOHANG) == 0 && waited < 5000) {
    pause_us(10000);
    waited += 10;
  }
  if (waited >= 5000) {
    kill(child, SIGKILL);
    waitpid(child, &status, 0);
    printf("child hung\n");
    return 1;
  }
  pthread_join(t, NULL);
  return child > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}
