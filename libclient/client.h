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

/* ---- per-thread stream (stream.c) ---- */
#define HT_RING_BYTES (256u * 1024u) /* power of two, below HT_PROTO_MAX_FRAME */
#define HT_SITE_CACHE 256            /* per-thread direct-mapped site cache */

typedef struct ht_stream {
  /* Owned by the writing thread. */
  uint8_t *ring; /* HT_RING_BYTES + HT_PROTO_MAX_EVENT_BYTES of slack */
  uint64_t head; /* bytes ever written */
  uint64_t seq;  /* next sequence number in this session */
  uint64_t tail_cache;
  uint32_t epoch_seen; /* connection epoch the encoder state belongs to */
  ht_evstate_t enc;
  int64_t cur_bytes, cur_blocks;
  uint64_t total_bytes;
  struct {
    const char *file, *func, *type;
    int line;
    uint32_t id;
  } sites[HT_SITE_CACHE];
  /* Written by the thread, read by the shipping side. */
  _Alignas(64) _Atomic uint64_t commit; /* low 32: head, high 32: seq (both mod 2^32) */
  _Atomic uint64_t lost;                /* events dropped (drop mode), total */
  _Atomic uint64_t restart_head;        /* head where the epoch_ack epoch starts */
  _Atomic uint64_t restart_seq;         /* seq the old epoch had reached then */
  _Atomic uint32_t epoch_ack;           /* epoch the thread has switched to */
  _Atomic int orphaned;                 /* the thread has exited */
  /* Written by the shipping side, read by the thread. */
  _Alignas(64) _Atomic uint64_t consumed; /* bytes shipped or discarded */
  _Atomic uint32_t epoch;                 /* current connection epoch */
  /* Owned by the shipping side. */
  _Alignas(64) uint64_t shipped_bytes, shipped_seq, lost_sent;
  uint64_t undelivered; /* events discarded while disconnected, not yet reported */
  uint32_t shipped_epoch;
  uint32_t id;
  struct ht_stream *next;
} ht_stream_t;

/* The calling thread's stream, created on first use; NULL when tracing is
 * off or memory for a ring cannot be mapped. */
ht_stream_t *ht__stream_get(void);

/* Encodes ev into the thread's stream; waits for room (block mode) or
 * counts a drop (drop mode). */
void ht__stream_append(ht_stream_t *s, ht_event_t *ev);

/* After fork, in the child: forget every stream (they hold the parent's
 * events) without touching the parent's memory mappings' contents. */
void ht__stream_forget_all(void);
void ht__stream_unmap(ht_stream_t *s);

/* ---- transport (transport.c) ---- */
/* 1 once connected and streaming -- or, in a fork child, until its first
 * traced call has reconnected it. Hot paths read it relaxed. */
extern _Atomic int ht__tracing;

/* Connects (once per process) when the library is first used. */
void ht__transport_init(void);

/* Writes one whole non-event record (SITE, HEAP) to the daemon right away.
 * Records must reach the daemon before the events that refer to them; the
 * flusher takes the same lock, so an event committed after this returns is
 * shipped after the record. Returns 0 or HT_ENOTCONN. */
int ht__transport_send_record(const uint8_t *buf, size_t len);

/* Adds a new stream to the list the flusher ships from and gives it the
 * current connection epoch. */
void ht__transport_adopt(ht_stream_t *s);

/* The list of streams (for the fork child to forget); called with no
 * other thread running. Returns the head and empties the list. */
ht_stream_t *ht__transport_take_streams(void);

/* Nudges the flusher: a ring is filling up. */
void ht__transport_kick(void);

/* ---- call sites (sites.c) ---- */
/* Returns the interned id of a call site (1..), sending its SITE record the
 * first time; 0 when the site table is full or tracing is off. */
uint32_t ht__site_id(ht_stream_t *s, const char *file, int line, const char *func,
                     const char *type);

/* ---- clock ---- */
uint64_t ht__now_ns(void);

#endif /* HT_CLIENT_H */
