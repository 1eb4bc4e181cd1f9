/* stream.c - the per-thread event stream: a single-producer ring.
 *
 * The owning thread encodes each event straight into its ring and then
 * publishes (head, seq) with one release store; the shipping side reads
 * that word, sends the bytes between what it shipped last and head, and
 * publishes how far it got in `consumed`. No lock and no system call on
 * this path; the ring is mmap'd so that the library never calls malloc.
 *
 * The ring has HT_PROTO_MAX_EVENT_BYTES of slack past its end: an event is
 * always encoded contiguously, and the part that spilled past the end is
 * copied to the start, where the byte stream continues.
 *
 * A new connection (after the daemon went away, or in a fork child) is a
 * new epoch: the delta state starts again at zero, and so do the sequence
 * numbers the daemon sees. The thread notices the epoch on its next event,
 * restarts its encoder and publishes where the new epoch begins (head and
 * seq); the shipping side discards what was encoded for the old connection
 * and reports it as undelivered. The commit word's seq runs on across
 * epochs, so that any word, of whichever epoch, counts the events up to it
 * (the shipping side numbers an epoch's events from its restart_seq).
 */
#define _GNU_SOURCE
#include <limits.h>
#include <errno.h>
#include <pthread.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "client.h"
#include "ht_event.h"

__thread ht_stream_t *ht__tls_stream;
static __thread int tls_dead;   /* the thread's stream was handed over */
static __thread int tls_rounds; /* rounds of TLS destructors seen */
/* Events a thread makes after its stream could not be mapped before it
 * tries again. */
#define HT_MAP_RETRY_EVENTS 1024
static __thread unsigned tls_map_wait;
_Atomic uint64_t ht__unstreamed;
static pthread_key_t stream_key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;
static _Atomic size_t maps_live; /* streams mapped and not yet unmapped */

/* Runs when a thread exits: the flusher ships what is left and unmaps.
 * Other keys' destructors may run after this one and free what the
 * thread kept (a per-thread cache): the stream stays, set again, for the
 * next rounds of destructors, and goes in the one before the C library's
 * last (PTHREAD_DESTRUCTOR_ITERATIONS), so that their events are traced.
 * Not in the last: sanitizer runtimes (TSan, ASan) tear the thread's own
 * state down in it, first, and the library's code may not run after
 * that. A destructor that runs after the stream went is counted only
 * (ht__unstreamed). */
static void stream_orphan(void *arg) {
  ht_stream_t *s = arg;
  if (++tls_rounds < PTHREAD_DESTRUCTOR_ITERATIONS - 1 && pthread_setspecific(stream_key, s) == 0)
    return;
  ht__tls_stream = NULL;
  tls_dead = 1;
  atomic_store_explicit(&s->orphaned, 1, memory_order_release);
  ht__transport_kick();
}

static void make_key(void) {
  pthread_key_create(&stream_key, stream_orphan);
}

#define STREAM_MAP_BYTES (sizeof(ht_stream_t) + HT_RING_BYTES + HT_PROTO_MAX_EVENT_BYTES)

static ht_stream_t *stream_create(void) {
  void *mem =
      mmap(NULL, STREAM_MAP_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED)
    return NULL;
  ht_stream_t *s = mem; /* mmap memory is zeroed: every counter starts at 0 */
  s->ring = (uint8_t *)mem + sizeof(ht_stream_t);
  atomic_fetch_add_explicit(&maps_live, 1, memory_order_relaxed);
  return s;
}

void ht__stream_unmap(ht_stream_t *s) {
  munmap(s, STREAM_MAP_BYTES);
  atomic_fetch_sub_explicit(&maps_live, 1, memory_order_relaxed);
}

size_t ht_trace_buffers(void) {
  return atomic_load_explicit(&maps_live, memory_order_relaxed);
}

void ht__stream_forget_all(void) {
  ht_stream_t *s = ht__transport_take_streams();
  while (s) {
    ht_stream_t *next = s->next;
    ht__stream_unmap(s);
    s = next;
  }
  ht__tls_stream = NULL;
}

/* An event no stream takes: counted (END reports it as undelivered). */
static ht_stream_t *unstreamed(void) {
  atomic_fetch_add_explicit(&ht__unstreamed, 1, memory_order_relaxed);
  return NULL;
}

ht_stream_t *ht__stream_get_slow(void) {
  ht__transport_init();
  if (!atomic_load_explicit(&ht__tracing, memory_order_relaxed))
    return NULL;
  /* Allocations made by TLS destructors after ours ran are not traced
   * (a fresh stream would never be shipped), only counted. */
  if (tls_dead)
    return unstreamed();
  /* A thread whose stream could not be mapped tries again now and then. */
  if (tls_map_wait) {
    tls_map_wait--;
    return unstreamed();
  }
  pthread_once(&key_once, make_key);
  ht_stream_t *s = stream_create();
  if (!s) {
    static _Atomic int said;
    if (!atomic_exchange(&said, 1))
      ht__warn("heaptrace: cannot map a thread's event buffer (%s); its events are counted as "
               "undelivered until one can be",
               strerror(errno));
    tls_map_wait = HT_MAP_RETRY_EVENTS;
    return unstreamed();
  }
  pthread_setspecific(stream_key, s);
  ht__transport_adopt(s);
  s->epoch_seen = atomic_load_explicit(&s->epoch, memory_order_relaxed);
  ht__tls_stream = s;
  return s;
}

/* A new connection epoch: the next event starts a fresh delta state; tell
 * the shipping side where the epoch begins (release: after these stores). */
void ht__stream_restart(ht_stream_t *s, uint32_t epoch) {
  atomic_store_explicit(&s->restart_head, s->head, memory_order_relaxed);
  atomic_store_explicit(&s->restart_seq, s->seq, memory_order_relaxed);
  ht__stream_carry(s, 0, 0); /* the new connection's delta state starts at zero */
  memset(&s->enc, 0, sizeof s->enc);
  s->epoch_seen = epoch;
  atomic_store_explicit(&s->epoch_ack, epoch, memory_order_release);
}

/* Slow path: the ring has no room for one more event. Block mode sleeps
 * until the flusher has shipped some of it (lossless); drop mode counts
 * the event and returns 0. The sleep is a futex wait on the ring's
 * "drained" word, which the flusher bumps and wakes after each shipment:
 * a waiting thread costs no CPU. */
static int wait_for_room(ht_stream_t *s, int drop) {
  uint64_t since = 0; /* when the ring last drained while we waited */
  uint32_t since_seen = 0;
  for (;;) {
    ht__transport_kick();
    uint32_t seen = atomic_load_explicit(&s->drained, memory_order_acquire);
    s->tail_cache = atomic_load_explicit(&s->consumed, memory_order_acquire);
    if (HT_RING_BYTES - (s->head - s->tail_cache) >= HT_PROTO_MAX_EVENT_BYTES)
      return 1;
    if (drop || !atomic_load_explicit(&ht__tracing, memory_order_relaxed))
      return 0;
    atomic_store(&s->waiting, 1);
    /* Announced before the re-check: a shipment after it will wake us. */
    if (atomic_load(&s->drained) == seen) {
      struct timespec ts = {0, 20 * 1000 * 1000};
      syscall(SYS_futex, &s->drained, FUTEX_WAIT_PRIVATE, seen, &ts, NULL, 0);
    }
    atomic_store(&s->waiting, 0);
    uint64_t now = ht__clock_real_ns();
    if (!since || seen != since_seen) {
      since = now;
      since_seen = seen;
    } else if (now - since >= HT_STALL_WARN_MS * 1000000ull) {
      ht__transport_stalled(since);
    }
  }
}

int ht__stream_pend_site(ht_stream_t *s, uint32_t idx) {
  uint32_t head = atomic_load_explicit(&s->pend_head, memory_order_relaxed);
  uint32_t tail = atomic_load_explicit(&s->pend_tail, memory_order_acquire);
  for (uint32_t i = tail; i != head; i++)
    if (s->pend_sites[i % HT_PEND_SITES] == idx)
      return 1; /* held already */
  if (head - tail >= HT_PEND_SITES)
    return 0;
  s->pend_sites[head % HT_PEND_SITES] = idx;
  atomic_store_explicit(&s->pend_head, head + 1, memory_order_release);
  return 1;
}

void ht__stream_drop_next(ht_stream_t *s) {
  s->drop_next = 1;
  s->tail_cache = s->head - HT_RING_BYTES; /* no room: the slow path runs */
}

uint8_t *ht__stream_room_slow(ht_stream_t *s) {
  s->tail_cache = atomic_load_explicit(&s->consumed, memory_order_acquire);
  if (HT_UNLIKELY(s->drop_next)) {
    s->drop_next = 0;
    atomic_fetch_add_explicit(&s->lost, 1, memory_order_relaxed);
    return NULL;
  }
  if (HT_RING_BYTES - (s->head - s->tail_cache) < HT_PROTO_MAX_EVENT_BYTES &&
      !wait_for_room(s, ht__mode == HT_MODE_DROP)) {
    atomic_fetch_add_explicit(&s->lost, 1, memory_order_relaxed);
    return NULL;
  }
  return s->ring + (s->head & (HT_RING_BYTES - 1));
}

void ht__stream_publish_slow(ht_stream_t *s, size_t n) {
  size_t pos = (size_t)(s->head & (HT_RING_BYTES - 1));
  if (pos + n > HT_RING_BYTES)
    memcpy(s->ring, s->ring + HT_RING_BYTES, pos + n - HT_RING_BYTES);
  s->head += n;
  s->seq++;
  uint64_t word = (s->head & 0xffffffffu) | (s->seq << 32);
  atomic_store_explicit(&s->commit, word, memory_order_release);
  s->tail_cache = atomic_load_explicit(&s->consumed, memory_order_acquire);
  uint64_t check_at = s->tail_cache + HT_RING_BYTES / 2;
  if (s->head > check_at) {
    ht__transport_kick();
    check_at = s->head + HT_KICK_AGAIN_BYTES;
  }
  /* The ring's end, where the next event may spill. */
  uint64_t wrap_at = s->head - (s->head & (HT_RING_BYTES - 1)) + HT_RING_BYTES;
  s->publish_limit = check_at < wrap_at ? check_at : wrap_at;
}

void ht__stream_carry(ht_stream_t *s, int64_t dbytes, int64_t dblocks) {
  if (!s->carried) {
    s->cur_bytes = s->enc.cur_bytes;
    s->cur_blocks = s->enc.cur_blocks;
    s->total_bytes = s->enc.total_bytes;
    s->carried = 1;
  }
  s->cur_bytes += dbytes;
  s->cur_blocks += dblocks;
  s->total_bytes += dbytes > 0 ? (uint64_t)dbytes : 0;
}
