/* client.h - what the files of libheaptrace share.
 *
 * Data flow: an allocation entry point (sysheap.c, later the caps heaps)
 * serves the request, then calls ht__record() with a filled ht_event_t.
 * ht__record() appends the encoded event to the calling thread's stream
 * (stream.c), a ring in mmap'd memory. The flusher thread (transport.c)
 * ships committed bytes of every ring to the daemon as EVENTS frames.
 * Call sites are interned once (sites.c) and sent as SITE records before
 * the first event that names them. Nothing here allocates through malloc.
 */
#ifndef HT_CLIENT_H
#define HT_CLIENT_H

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "heaptrace/heaptrace.h"
#include "ht_proto.h"

#if defined(__GNUC__)
#define HT_LIKELY(x) __builtin_expect(!!(x), 1)
#define HT_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define HT_HIDDEN __attribute__((visibility("hidden")))
#else
#define HT_LIKELY(x) (x)
#define HT_UNLIKELY(x) (x)
#define HT_HIDDEN
#endif

/* ---- configuration (config.c): read once, without allocating ---- */
typedef enum { HT_MODE_BLOCK = 0, HT_MODE_DROP = 1 } ht_mode_t;

typedef struct {
  char socket_path[108]; /* sizeof(sun_path) */
  char app[64];
  ht_mode_t mode;
  int disabled;
} ht_config_t;

/* The mode in force (block unless HEAPTRACE_MODE=drop). */
extern ht_mode_t ht__mode;

/* Fills cfg from HEAPTRACE_* variables; bad values warn on stderr once and
 * keep the default. */
void ht__config_load(ht_config_t *cfg);

/* Writes the default socket path for uid into out (heaptraced's default):
 * $XDG_RUNTIME_DIR/heaptrace/heaptraced.sock, else
 * /tmp/heaptrace-$UID/heaptraced.sock. Returns 0 or HT_EINVAL if too long. */
int ht__default_socket_path(char *out, size_t cap);

/* Prints one line "heaptrace: ..." to stderr with write(2), no stdio. */
void ht__warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* pthread_cancel acts at the system calls that are cancellation points -
 * sendmsg, poll, connect, write and the like. A program thread cancelled
 * in one of the library's with one of its locks held would leave the lock
 * held, and every other thread would hang on it. The library's paths that
 * make such calls, or may, run with cancellation disabled
 * (ht__cancel_off), and give the thread its state back after
 * (ht__cancel_restore): a cancellation asked for meanwhile acts at the
 * program's next cancellation point. */
static inline int ht__cancel_off(void) {
  int old;
  pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
  return old;
}
static inline void ht__cancel_restore(int old) {
  pthread_setcancelstate(old, NULL);
}

/* ---- the state blob (state.c) ---- */
/* CRC-32 (IEEE) of a state blob of len bytes with its crc field (bytes
 * 16..19) taken as 0: what its header holds there. */
uint32_t ht__state_crc(const uint8_t *blob, size_t len);

/* ---- fatal signals (fatal.c) ---- */
/* Installs the handler for each fatal signal the program left at its
 * default action. */
void ht__fatal_install(void);
/* Blocks the process-directed fatal signals in the calling thread. */
void ht__fatal_block_async(sigset_t *old);
/* The flusher thread says which it is (it cannot wait for itself). */
void ht__fatal_on_flusher(void);
/* The signal a handler waits to see reported, or 0; the flusher reports
 * it once the session has ended "killed". */
int ht__fatal_pending(void);
void ht__fatal_reported(void);
/* A fork child starts with nothing pending. */
void ht__fatal_forget(void);

/* ---- per-thread stream (stream.c) ---- */
#define HT_RING_BYTES (256u * 1024u) /* power of two, below HT_PROTO_MAX_FRAME */
#define HT_SITE_CACHE 64             /* per-thread cache of sites past the accounting table */
#define HT_PEND_SITES 16             /* sites a stream holds for the flusher to announce */

typedef struct ht_stream {
  /* Owned by the writing thread. */
  uint8_t *ring; /* HT_RING_BYTES + HT_PROTO_MAX_EVENT_BYTES of slack */
  uint64_t head; /* bytes ever written */
  uint64_t seq;  /* events ever published (epochs number theirs from restart_seq) */
  uint64_t tail_cache;
  uint64_t publish_limit; /* head past which a publish takes the slow path */
  uint32_t epoch_seen;    /* connection epoch the encoder state belongs to */
  ht_evstate_t enc;       /* the delta state; its totals are the stream's, unless carried */
  /* The stream's running totals while they are carried: after a restart
   * (the delta state starts again at zero) or an event dropped unsent,
   * until an event has sent them. */
  int carried;
  int64_t cur_bytes, cur_blocks;
  uint64_t total_bytes;
  /* The next event is dropped (drop mode: its SITE record could neither
   * be sent without waiting nor held by the stream); tail_cache is then
   * set so that ht__stream_room looks. */
  int drop_next;
  struct {
    const char *file, *func, *type;
    int line;
    void *entry; /* sites.c's table entry */
  } sites[HT_SITE_CACHE];
  /* Written by the thread, read by the shipping side. */
  _Alignas(64) _Atomic uint64_t commit; /* low 32: head, high 32: seq (both mod 2^32) */
  _Atomic uint64_t lost;                /* events dropped (drop mode), total */
  _Atomic uint64_t restart_head;        /* head where the epoch_ack epoch starts */
  _Atomic uint64_t restart_seq;         /* seq there: the epoch's events count from it */
  _Atomic uint32_t epoch_ack;           /* epoch the thread has switched to */
  _Atomic int orphaned;                 /* the thread has exited */
  _Atomic uint32_t waiting;             /* the thread sleeps until the ring drains */
  /* Drop mode: sites whose SITE record the thread could not send without
   * waiting; the shipping side sends them before the stream's next bytes
   * (a single-producer ring of accounting indices, like the event ring). */
  uint32_t pend_sites[HT_PEND_SITES];
  _Atomic uint32_t pend_head;
  /* Written by the shipping side, read by the thread. */
  _Alignas(64) _Atomic uint64_t consumed; /* bytes shipped or discarded */
  _Atomic uint32_t epoch;                 /* current connection epoch */
  _Atomic uint32_t drained;               /* futex word: bumped after each shipment */
  _Atomic uint32_t pend_tail;             /* pend_sites taken */
  /* Owned by the shipping side. */
  _Alignas(64) uint64_t shipped_bytes, shipped_seq, lost_sent;
  uint64_t epoch_seq;   /* seq where the shipped epoch began: its events' 0 */
  uint64_t undelivered; /* events discarded while disconnected, not yet reported */
  uint32_t shipped_epoch;
  uint32_t id;
  struct ht_stream *next;
} ht_stream_t;

/* The calling thread's stream, created on first use; NULL when tracing is
 * off or memory for a ring cannot be mapped. */
extern __thread ht_stream_t *ht__tls_stream HT_HIDDEN;
ht_stream_t *ht__stream_get_slow(void);
static inline ht_stream_t *ht__stream_get(void) {
  ht_stream_t *s = ht__tls_stream;
  return HT_LIKELY(s != NULL) ? s : ht__stream_get_slow();
}

/* Where the next event is encoded: room for HT_PROTO_MAX_EVENT_BYTES at
 * the ring's head, after waiting for it (block mode); NULL when the event
 * is dropped (drop mode, counted). */
uint8_t *ht__stream_room_slow(ht_stream_t *s);
static inline uint8_t *ht__stream_room(ht_stream_t *s) {
  if (HT_UNLIKELY(HT_RING_BYTES - (s->head - s->tail_cache) < HT_PROTO_MAX_EVENT_BYTES))
    return ht__stream_room_slow(s);
  return s->ring + (s->head & (HT_RING_BYTES - 1));
}

/* Commits the n bytes just encoded at the room: one release store of
 * (head, seq) for the shipping side. The slow path, taken when the head
 * passes publish_limit, copies what spilled past the ring's end to its
 * start, and wakes the flusher past half full; while the ring stays past
 * half it looks again every HT_KICK_AGAIN_BYTES, not at every event (the
 * shipping side's counter is another core's cache line). */
#define HT_KICK_AGAIN_BYTES (16u * 1024u)
void ht__stream_publish_slow(ht_stream_t *s, size_t n);
static inline void ht__stream_publish(ht_stream_t *s, size_t n) {
  if (HT_UNLIKELY(s->head + n > s->publish_limit)) {
    ht__stream_publish_slow(s, n);
    return;
  }
  s->head += n;
  s->seq++;
  atomic_store_explicit(&s->commit, (s->head & 0xffffffffu) | (s->seq << 32), memory_order_release);
}

/* Adds a transaction's deltas to the stream's running totals, which from
 * then on are carried (the next event sends them). */
void ht__stream_carry(ht_stream_t *s, int64_t dbytes, int64_t dblocks);

/* Drop mode: the event being built is dropped and counted when it asks
 * for room (ht__stream_room). No cost on the hot path. */
void ht__stream_drop_next(ht_stream_t *s);

/* Drop mode: holds accounting site idx for the shipping side to announce
 * before the stream's next bytes, so that the event that needs it neither
 * waits nor is dropped. Returns 0 when the stream holds too many already. */
int ht__stream_pend_site(ht_stream_t *s, uint32_t idx);

/* After fork, in the child: forget every stream (they hold the parent's
 * events) without touching the parent's memory mappings' contents. */
void ht__stream_forget_all(void);
void ht__stream_unmap(ht_stream_t *s);

/* Events made with tracing on that no stream took: a thread's events in
 * TLS destructors that run after its stream was handed over, or while
 * its stream could not be mapped. END counts them as undelivered. */
extern _Atomic uint64_t ht__unstreamed HT_HIDDEN;

/* ---- transport (transport.c) ---- */
/* 1 once connected and streaming -- or, in a fork child, until its first
 * traced call has reconnected it. Hot paths read it relaxed. */
extern _Atomic int ht__tracing;

/* Connects (once per process) when the library is first used. */
void ht__transport_init(void);

/* Registers (once) fork handlers that take every allocator lock in the
 * lock order before fork() and release them after, in parent and child,
 * so that a child never inherits a lock some other thread held
 * (registry.c). ht__transport_init() registers them, after its own:
 * prepare handlers run in reverse order of registration, and these must
 * take the heap locks before the transport's take its io lock. */
void ht__fork_guard(void);

/* Writes one whole non-event record (SITE, HEAP) to the daemon right away.
 * Records must reach the daemon before the events that refer to them; the
 * flusher takes the same lock, so an event committed after this returns is
 * shipped after the record. Returns 0 or HT_ENOTCONN. */
int ht__transport_send_record(const uint8_t *buf, size_t len);

/* Adds a new stream to the list the flusher ships from and gives it the
 * current connection epoch. Takes no lock. */
void ht__transport_adopt(ht_stream_t *s);

/* The list of streams (for the fork child to forget); called with no
 * other thread running. Returns the head and empties the list. */
ht_stream_t *ht__transport_take_streams(void);

/* Nudges the flusher: a ring is filling up. */
void ht__transport_kick(void);
/* A thread has waited since since_ns (ht__clock_real_ns) for room in its
 * ring: past HT_STALL_WARN_MS, one warning says why the program waits,
 * and one more when the daemon reads again. */
#define HT_STALL_WARN_MS 5000
void ht__transport_stalled(uint64_t since_ns);
/* Whether the flusher thread runs (read from a signal handler). */
int ht__transport_flusher_alive(void);

/* exec (exec.c): the process image is about to be replaced, and the
 * flusher and every ring with it. Everything recorded is shipped and the
 * session ends clean, as at exit, once the daemon has read it; returns 1
 * then, with the transport's locks held and the thread's cancellation
 * off, so that nothing is written on a new connection until the exec is
 * over: a successful one takes them with the image, a failed one gives
 * them back in ht__transport_exec_failed. Returns 0, doing nothing, when not tracing,
 * in a process that does not own the connection (a vfork child shares
 * its parent's memory), or when the locks are not had within a bound (an
 * exec from a signal handler that interrupted their holder). */
int ht__transport_exec(void);
/* The exec after ht__transport_exec() returned 1 failed: tracing goes on
 * in a new session (a reconnection; what other threads recorded meanwhile
 * is counted there as undelivered). errno is kept. */
void ht__transport_exec_failed(void);

/* Writes one whole record (a SITE record, for a program thread's event)
 * on the current connection; *epoch gets the connection epoch it went to
 * (0 if it went nowhere). Returns 0, HT_ENOTCONN, or, in drop mode only,
 * HT_EAGAIN: the flusher holds the socket, or the socket is full, and
 * nothing was written - a drop-mode thread never waits for the flusher
 * (the record is left to it: ht__stream_pend_site). */
int ht__transport_send_record_epoch(const uint8_t *buf, size_t len, uint32_t *epoch);

/* ---- heap regions (registry.c), announced on every new connection ---- */
unsigned ht__heap_regions(void);
/* Encodes the HEAP record of region i; returns its length or 0. */
size_t ht__heap_record(unsigned i, uint8_t *buf, size_t cap);

/* ---- call sites on the wire (sites.c) ----
 * The wire id of a site is its accounting index (account.c), 1 to
 * HT_WIRE_ACCT_SITES - 1; sites past the accounting table get ids from a
 * table of their own, above. A SITE record is sent once per connection,
 * before the first event of that connection that names the site. */
#define HT_WIRE_ACCT_SITES 4096 /* = HT_ACCT_SITES */

/* Makes sure accounting site idx is known on the stream's connection
 * (sent, or held for the flusher in drop mode). */
void ht__site_send_slow(ht_stream_t *s, uint32_t idx);
/* Encodes the SITE record of accounting site idx (the flusher's, for the
 * sites streams hold) into cap >= HT_SITE_RECORD_MAX bytes; returns its
 * length, 0 for a bad index. */
#define HT_SITE_RECORD_MAX (3 * (HT_PROTO_MAX_STRING + 2) + 64)
size_t ht__site_record(uint32_t idx, uint8_t *buf, size_t cap);
extern _Atomic uint32_t ht__site_sent[HT_WIRE_ACCT_SITES];

static inline uint32_t ht__wire_site(ht_stream_t *s, uint32_t idx) {
  if (HT_UNLIKELY(idx >= HT_WIRE_ACCT_SITES))
    return 0;
  if (HT_UNLIKELY(atomic_load_explicit(&ht__site_sent[idx], memory_order_relaxed) != s->epoch_seen))
    ht__site_send_slow(s, idx);
  return idx;
}

/* For sites the accounting table could not hold: a wire id above
 * HT_WIRE_ACCT_SITES, interned by content; 0 when this table is full too. */
uint32_t ht__site_id(ht_stream_t *s, const char *file, int line, const char *func,
                     const char *type);

/* Brings the stream into the current connection epoch before an event is
 * built (site records and the event must belong to the same connection). */
void ht__stream_restart(ht_stream_t *s, uint32_t epoch);
static inline void ht__stream_begin(ht_stream_t *s) {
  uint32_t epoch = atomic_load_explicit(&s->epoch, memory_order_relaxed);
  if (HT_UNLIKELY(epoch != s->epoch_seen))
    ht__stream_restart(s, epoch);
}

/* ---- usable sizes of glibc blocks (sysheap.c) ---- */
/* malloc_usable_size() of a glibc block the program holds: read from its
 * chunk header once ht__sys_usable_setup() has turned that on. */
size_t ht__sys_usable(void *p);

/* Turns on usable sizes from glibc's chunk headers (fast = 1) when glibc
 * allocates and ht__sys_usable_agrees() with the chunk header's formula;
 * else, and with fast = 0 (tests), malloc_usable_size() is called. Once at
 * start-up, before the process is traced; also safe later, as the two
 * agree. */
void ht__sys_usable_setup(int fast);

/* 1 when usable sizes come from chunk headers. */
int ht__sys_usable_fast(void);

/* 1 when usable(p) equals malloc_usable_size(p) for blocks of every kind
 * glibc makes (malloc, calloc, posix_memalign, realloc; heap and mmap'd),
 * each allocated and freed here. 0 where the fast path does not exist. */
int ht__sys_usable_agrees(size_t (*usable)(const void *));

/* ---- clock (clock.c): CLOCK_MONOTONIC nanoseconds for events ---- */
#if defined(__x86_64__) && defined(__GNUC__)
#define HT_CLOCK_TSC 1
#include <x86intrin.h>
#else
#define HT_CLOCK_TSC 0
#endif

__extension__ typedef unsigned __int128 ht_u128;

/* The TSC-to-nanoseconds mapping: the segment in force and the one before
 * it, under a sequence number (odd while the flusher writes). Every field
 * is atomic, read with acquire loads (plain moves on x86). */
typedef struct {
  _Alignas(64) _Atomic uint32_t seq;
  _Atomic int on;     /* 0: use clock_gettime() */
  _Atomic int rdtscp; /* ordered reads with rdtscp (set before `on`) */
  _Atomic uint64_t tsc0, ns0, mult;
  _Atomic uint64_t span; /* counter ticks the segment is trusted for */
  _Atomic uint64_t prev_tsc0, prev_ns0, prev_mult;
} ht_clock_t;

extern ht_clock_t ht__clock HT_HIDDEN;

/* clock_gettime(CLOCK_MONOTONIC) in nanoseconds. */
uint64_t ht__clock_real_ns(void);

/* Checks whether the TSC may be used (use_tsc < 0: it is the kernel's
 * clocksource; 0: never; 1: always, for tests) and takes the first sample;
 * readers use clock_gettime() until the first anchor. A no-op once a
 * mapping is in force. */
void ht__clock_init(int use_tsc);

/* Re-anchors the mapping to clock_gettime() when an anchor is due (see
 * ht__clock_anchor_due_ns), or at once with force. The flusher calls it on
 * every wake. Returns 1 when a new segment was published. */
int ht__clock_anchor(int force);

/* Nanoseconds until ht__clock_anchor(0) will re-anchor: 0 when it is due
 * now, UINT64_MAX when the TSC is not used. Within milliseconds of
 * ht__clock_init, every HT_CLOCK_ANCHOR_NS (50 ms) later on; the flusher
 * sleeps no longer than this. */
uint64_t ht__clock_anchor_due_ns(void);

/* Takes (1) or releases (0) the anchor lock: fork handlers. */
void ht__clock_hold(int hold);

/* f(t) on segment {tsc0, ns0, mult}; also before tsc0, where readers of a
 * first segment are while it is published ahead of time. */
static inline uint64_t ht__clock_eval(uint64_t t, uint64_t tsc0, uint64_t ns0, uint64_t mult) {
  if (HT_LIKELY(t >= tsc0))
    return ns0 + (uint64_t)(((ht_u128)(t - tsc0) * mult) >> 32);
  return ns0 - (uint64_t)(((ht_u128)(tsc0 - t) * mult) >> 32);
}

#if HT_CLOCK_TSC
static inline uint64_t ht__tsc(void) {
  return __rdtsc();
}
#define HT__CLOCK_LOAD(f) atomic_load_explicit(&ht__clock.f, memory_order_acquire)
/* Not before the instructions ahead of it have executed and their loads
 * are visible (the kernel's rdtsc_ordered, which prefers rdtscp too): an
 * allocation's time is taken after the allocator handed the block out.
 * rdtscp, unlike lfence, lets the instructions after it go on. */
static inline uint64_t ht__tsc_ordered(void) {
  if (HT_LIKELY(HT__CLOCK_LOAD(rdtscp))) {
    unsigned aux;
    return __rdtscp(&aux);
  }
  _mm_lfence();
  return __rdtsc();
}

/* The reader's rare cases (clock.c): no mapping yet, a counter value
 * before the segment (published ahead of time) or far past it (not
 * re-anchored: a suspend?). Reads the counter again, ordered. */
uint64_t ht__clock_now_slow(void);

/* The event clock; `ordered` (a constant) picks the counter read. Without
 * a mapping span is 0, so one compare sends every case but the common one
 * out of line. A reader retries only when the flusher published while it
 * read. */
static inline __attribute__((always_inline)) uint64_t ht__clock_now(const int ordered) {
  for (;;) {
    uint32_t seq = HT__CLOCK_LOAD(seq);
    uint64_t t = ordered ? ht__tsc_ordered() : ht__tsc();
    uint64_t d = t - HT__CLOCK_LOAD(tsc0);
    if (HT_UNLIKELY(d >= HT__CLOCK_LOAD(span)))
      return ht__clock_now_slow();
    uint64_t v = HT__CLOCK_LOAD(ns0) + (uint64_t)(((ht_u128)d * HT__CLOCK_LOAD(mult)) >> 32);
    if (HT_LIKELY((seq & 1) == 0 && HT__CLOCK_LOAD(seq) == seq))
      return v;
  }
}

/* Event time of a free (any moment before the block goes back will do),
 * and of the allocations ht__trace_op records: malloc, calloc and realloc
 * of the system heap and of the caps heaps. */
static inline uint64_t ht__now_ns(void) {
  return ht__clock_now(0);
}
/* Event time of an allocation: after the allocator's work. */
static inline uint64_t ht__now_ns_ordered(void) {
  return ht__clock_now(1);
}
#else
static inline uint64_t ht__now_ns(void) {
  return ht__clock_real_ns();
}
static inline uint64_t ht__now_ns_ordered(void) {
  return ht__clock_real_ns();
}
#endif

#endif /* HT_CLIENT_H */
