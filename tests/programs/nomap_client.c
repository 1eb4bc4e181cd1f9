/* nomap_client.c - a thread whose event buffer cannot be mapped, for the
 * transport's end-to-end tests.
 *
 *   nomap_client PAIRS
 *
 * main makes a traced pair, then caps its address space (RLIMIT_AS) a
 * little above what it uses: room for a thread with a 64 KiB stack, not
 * for that thread's event buffer (a quarter MiB). The thread makes PAIRS
 * malloc/free pairs, untraced but counted; main lifts the cap and makes
 * one more pair. Prints
 *   traced=T untraced=U
 * (events made with a buffer, and without). Not under a sanitizer, whose
 * runtime needs the address space the cap takes away.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

#include <heaptrace/heaptrace.h>

#define STACK_BYTES (64 * 1024)
#define ROOM_BYTES (160 * 1024) /* the thread's stack, not its buffer */

static long pairs;

static void *worker(void *arg) {
  (void)arg;
  for (long i = 0; i < pairs; i++)
    ht_free(ht_malloc((size_t)(16 + i % 64)));
  return NULL;
}

/* The process's address space now, in bytes (/proc/self/statm). */
static long vm_bytes(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  long pages = -1;
  if (f) {
    if (fscanf(f, "%ld", &pages) != 1)
      pages = -1;
    fclose(f);
  }
  return pages < 0 ? -1 : pages * sysconf(_SC_PAGESIZE);
}

int main(int argc, char **argv) {
  pairs = argc == 2 ? atol(argv[1]) : 0;
  if (pairs < 1) {
    fprintf(stderr, "usage: nomap_client PAIRS\n");
    return 2;
  }
  ht_free(ht_malloc(1)); /* connected, the flusher running */
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, STACK_BYTES);
  struct rlimit old, capped;
  long vm = vm_bytes();
  if (vm < 0 || getrlimit(RLIMIT_AS, &old) != 0)
    return 1;
  capped = old;
  capped.rlim_cur = (rlim_t)(vm + ROOM_BYTES);
  pthread_t t;
  if (setrlimit(RLIMIT_AS, &capped) != 0 || pthread_create(&t, &attr, worker, NULL) != 0)
    return 1;
  pthread_join(t, NULL);
  if (setrlimit(RLIMIT_AS, &old) != 0)
    return 1;
  ht_free(ht_malloc(2));
  printf("traced=4 untraced=%ld\n", 2 * pairs);
  return 0;
}
