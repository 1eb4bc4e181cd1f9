/* stream_client.c - a traced program whose heap activity is known exactly,
 * for the daemon lifecycle tests.
 *
 *   ht_stream_client ROUNDS
 *
 * Does ROUNDS rounds of ht_malloc((i % 256) + 1) + ht_free, then allocates
 * one 64-byte block it never frees: 2 * ROUNDS + 1 events, ROUNDS + 1
 * allocations, ROUNDS frees, 64 bytes live at exit. A large ROUNDS keeps it
 * streaming long enough for a test to act on the daemon meanwhile; SIGUSR1
 * then ends the rounds early (the counts above hold for the rounds done).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include <heaptrace/heaptrace.h>

#define LEAKED_BYTES 64

static volatile sig_atomic_t stop;

static void on_usr1(int sig) {
  (void)sig;
  stop = 1;
}

int main(int argc, char **argv) {
  char *end = NULL;
  errno = 0;
  long long rounds = argc == 2 ? strtoll(argv[1], &end, 10) : -1;
  if (argc != 2 || errno || !end || *end || rounds < 0) {
    fprintf(stderr, "usage: ht_stream_client ROUNDS\n");
    return 2;
  }
  signal(SIGUSR1, on_usr1);
  long long i;
  for (i = 0; i < rounds && !stop; i++) {
    void *p = ht_malloc((size_t)(i % 256) + 1);
    if (!p)
      return 1;
    ht_free(p);
  }
  void *kept = ht_malloc(LEAKED_BYTES);
  printf("done: %lld rounds, %d bytes kept at %p\n", i, LEAKED_BYTES, kept);
  return 0;
}
