/* handover_client.c - threads that free each other's blocks, so that
 * addresses pass from one thread to another all the time: a block freed
 * by one thread goes back to glibc's arena, and another thread's next
 * allocation gets its address, moments later.
 *
 *   handover_client THREADS OPS
 *
 * Each of THREADS threads does OPS rounds: ht_malloc of 1040..2064 bytes
 * (above glibc's per-thread cache, so every free goes back to an arena
 * that all threads share), the block into a shared pool, and, once the
 * pool holds more than POOL_KEEP blocks, the oldest block out of the pool
 * and ht_free, whichever thread allocated it; every other block is first
 * grown or shrunk with ht_realloc by the thread that took it out, so that
 * reallocs that move give their old address back to the arena while the
 * other threads allocate. At the end main frees what the pool holds, and
 * each thread leaks one LEAK_BYTES block. It prints what the daemon should
 * report:
 *   allocations=A frees=F reallocs=R live_blocks=B live_bytes=N events=E
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <heaptrace/heaptrace.h>

#define LEAK_BYTES 100
#define POOL_KEEP 64
#define POOL_CAP 4096 /* > POOL_KEEP + the threads' count */
#define MAX_THREADS 64

static long ops;
static atomic_long reallocs;
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static void *pool[POOL_CAP];
static size_t pool_head, pool_len; /* a ring: oldest at pool_head */

/* Puts p in the pool; returns the oldest block when the pool is past
 * POOL_KEEP, else NULL. */
static void *exchange(void *p) {
  void *out = NULL;
  pthread_mutex_lock(&pool_lock);
  pool[(pool_head + pool_len++) % POOL_CAP] = p;
  if (pool_len > POOL_KEEP) {
    out = pool[pool_head];
    pool_head = (pool_head + 1) % POOL_CAP;
    pool_len--;
  }
  pthread_mutex_unlock(&pool_lock);
  return out;
}

static void *worker(void *arg) {
  uint64_t x = (uint64_t)(uintptr_t)arg * 0x9e3779b97f4a7c15ull + 1;
  for (long i = 0; i < ops; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    char *p = ht_malloc(1040 + (size_t)(x % 1025));
    if (!p)
      abort();
    p[0] = 1;
    char *q = exchange(p);
    if (q && i % 2) {
      if (!(q = ht_realloc(q, 1040 + (size_t)(x >> 40) % 3073)))
        abort();
      q[0] = 2;
      atomic_fetch_add_explicit(&reallocs, 1, memory_order_relaxed);
    }
    ht_free(q);
  }
  if (!ht_malloc(LEAK_BYTES)) /* leaked */
    abort();
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: handover_client THREADS OPS\n");
    return 2;
  }
  long threads = atol(argv[1]);
  ops = atol(argv[2]);
  if (threads < 1 || threads > MAX_THREADS || ops < 1) {
    fprintf(stderr, "handover_client: bad THREADS or OPS\n");
    return 2;
  }
  pthread_t tid[MAX_THREADS];
  for (long t = 0; t < threads; t++)
    if (pthread_create(&tid[t], NULL, worker, (void *)(uintptr_t)(t + 1)) != 0)
      return 1;
  for (long t = 0; t < threads; t++)
    pthread_join(tid[t], NULL);
  while (pool_len > 0) {
    ht_free(pool[pool_head]);
    pool_head = (pool_head + 1) % POOL_CAP;
    pool_len--;
  }
  long allocs = threads * (ops + 1), frees = threads * ops, moved = atomic_load(&reallocs);
  printf("allocations=%ld frees=%ld reallocs=%ld live_blocks=%ld live_bytes=%ld events=%ld\n",
         allocs, frees, moved, threads, threads * LEAK_BYTES, allocs + frees + moved);
  return 0;
}
