/* stream_client.c - a traced program whose heap activity is known exactly,
 * for the daemon lifecycle tests.
 *
 *   ht_stream_client ROUNDS [FLUSH_EVERY [DIR]]
 *
 * Does ROUNDS rounds of ht_malloc((i % 256) + 1) + ht_free, then allocates
 * one 64-byte block it never frees: 2 * ROUNDS + 1 events, ROUNDS + 1
 * allocations, ROUNDS frees, 64 bytes live at exit. A large ROUNDS keeps it
 * streaming long enough for a test to act on the daemon meanwhile; SIGUSR1
 * then ends the rounds early (the counts above hold for the rounds done).
 * With FLUSH_EVERY, ht_flush() runs after every FLUSH_EVERY rounds, so
 * that the events are written to the socket by ht_flush and never fill the
 * event buffer (0: never). With DIR, it changes its working directory to
 * DIR after its first round, as a program that daemonizes does. With
 * STREAM_CLIENT_EXEC=PATH in its environment, the first SIGUSR1 has it
 * execv PATH, which is to fail (a file that is not there), and go on with
 * its rounds, saying on stderr
 *   exec failed: ERRNO
 * and the second SIGUSR1 ends them. It prints, as its last line:
 *   done: N rounds, 64 bytes kept at P
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <heaptrace/heaptrace.h>

#define LEAKED_BYTES 64

static volatile sig_atomic_t usr1s; /* SIGUSR1s received */

static void on_usr1(int sig) {
  (void)sig;
  usr1s++;
}

/* argv[i] as a count >= 0, or -1. */
static long long count_arg(const char *arg) {
  char *end = NULL;
  errno = 0;
  long long n = strtoll(arg, &end, 10);
  return errno || !end || end == arg || *end || n < 0 ? -1 : n;
}

int main(int argc, char **argv) {
  long long rounds = argc >= 2 && argc <= 4 ? count_arg(argv[1]) : -1;
  long long flush_every = argc >= 3 ? count_arg(argv[2]) : 0;
  const char *dir = argc == 4 ? argv[3] : NULL;
  if (rounds < 0 || flush_every < 0) {
    fprintf(stderr, "usage: ht_stream_client ROUNDS [FLUSH_EVERY [DIR]]\n");
    return 2;
  }
  const char *exec_path = getenv("STREAM_CLIENT_EXEC");
  const sig_atomic_t last_usr1 = exec_path ? 2 : 1;
  /* sigaction: signal() in strict C resets the handler after one. */
  struct sigaction sa = {.sa_handler = on_usr1};
  sigaction(SIGUSR1, &sa, NULL);
  long long i;
  for (i = 0; i < rounds && usr1s < last_usr1; i++) {
    if (exec_path && usr1s == 1) {
      char *args[] = {(char *)exec_path, NULL};
      execv(exec_path, args);
      fprintf(stderr, "exec failed: %d\n", errno);
      exec_path = NULL;
    }
    void *p = ht_malloc((size_t)(i % 256) + 1);
    if (!p)
      return 1;
    ht_free(p);
    if (dir && i == 0 && chdir(dir) != 0) {
      perror(dir);
      return 1;
    }
    if (flush_every && (i + 1) % flush_every == 0)
      ht_flush();
  }
  void *kept = ht_malloc(LEAKED_BYTES);
  printf("done: %lld rounds, %d bytes kept at %p\n", i, LEAKED_BYTES, kept);
  return 0;
}
