/* ht_proto.h - the heaptrace wire format: one codec for client and daemon.
 *
 * A connection carries length-prefixed frames (see PROTOCOL.md). Encoders
 * write into a ht_wbuf_t that flags overflow instead of writing past its
 * end; decoders read through a ht_cur_t that checks bounds before every read
 * and never trusts a length it has not checked against what remains. Every
 * decoder returns 0 or a negative HT_E* code that names what is wrong.
 *
 * Events are delta-encoded against the previous event of the same stream
 * (a client thread), so a decoder keeps one ht_evstate_t per stream.
 */
#ifndef HT_PROTO_H
#define HT_PROTO_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "heaptrace/heaptrace.h"

/* ---- limits: every length on the wire is checked against one of these ---- */
#define HT_PROTO_MAGIC "HTRC"
#define HT_PROTO_MAGIC_LEN 4
/* 4: PREVIOUS counts reports; 3: PREVIOUS; 2: compact events. Clients of
 * every version are served. */
#define HT_PROTO_VERSION 4
#define HT_PROTO_FRAME_PREFIX 4                  /* u32 body length */
#define HT_PROTO_MAX_FRAME (1u << 20)            /* body bytes, record type included */
#define HT_PROTO_MAX_STRING 4096                 /* bytes of one string */
#define HT_PROTO_MAX_ARGS 256                    /* argv entries in a handshake */
#define HT_PROTO_MAX_EVENT_BYTES 128             /* one encoded event, worst case */
#define HT_PROTO_EVENTS_HEAD (4 + 1 + 4 + 8 + 4) /* frame prefix + EVENTS header */
#define HT_PROTO_MAX_FRAME_EVENTS (HT_PROTO_MAX_FRAME / 8)
#define HT_PROTO_CAPS_PRIOS 3         /* caps masks per heap region */
#define HT_CTL_MAX_REPLY (256u << 20) /* body bytes of a control reply */

/* ---- record types ---- */
#define HT_RECORD_MAP(X)                                                                           \
  X(HELLO, 1, "hello")                                                                             \
  X(SITE, 2, "site")                                                                               \
  X(HEAP, 3, "heap")                                                                               \
  X(EVENTS, 4, "events")                                                                           \
  X(LOST, 5, "lost")                                                                               \
  X(END, 6, "end")                                                                                 \
  X(PREVIOUS, 7, "previous")                                                                       \
  X(CTL_REQUEST, 16, "control-request")                                                            \
  X(CTL_REPLY, 17, "control-reply")

typedef enum {
#define HT__REC_ENUM(name, code, str) HT_REC_##name = (code),
  HT_RECORD_MAP(HT__REC_ENUM)
#undef HT__REC_ENUM
} ht_record_t;

const char *ht_record_name(int type);

/* ---- event operations ---- */
#define HT_OP_MAP(X)                                                                               \
  X(MALLOC, 1, "malloc")                                                                           \
  X(CALLOC, 2, "calloc")                                                                           \
  X(REALLOC, 3, "realloc")                                                                         \
  X(ALIGNED, 4, "aligned_alloc")                                                                   \
  X(FREE, 5, "free")                                                                               \
  X(FAILED, 6, "failed")

typedef enum {
#define HT__OP_ENUM(name, code, str) HT_OP_##name = (code),
  HT_OP_MAP(HT__OP_ENUM)
#undef HT__OP_ENUM
} ht_op_t;

#define HT_OP_MAX 6
const char *ht_op_name(int op);

/* ---- session end reasons (END record and the store's session table) ---- */
#define HT_END_MAP(X)                                                                              \
  X(RUNNING, 0, "running")                                                                         \
  X(CLEAN, 1, "clean")                                                                             \
  X(DISCONNECTED, 2, "disconnected")                                                               \
  X(PROTOCOL_ERROR, 3, "protocol-error")                                                           \
  X(DAEMON_STOPPED, 4, "daemon-stopped")                                                           \
  X(KILLED, 5, "killed")

typedef enum {
#define HT__END_ENUM(name, code, str) HT_END_##name = (code),
  HT_END_MAP(HT__END_ENUM)
#undef HT__END_ENUM
} ht_end_t;

const char *ht_end_name(int reason);

/* ---- one event; every field defined once here ---- */
#define HT_EVENT_FIELDS(X)                                                                         \
  X(uint64_t, seq)         /* per-stream sequence number, from 0 */                                \
  X(uint64_t, time_ns)     /* CLOCK_MONOTONIC */                                                   \
  X(uint32_t, op)          /* ht_op_t */                                                           \
  X(uint32_t, failed_op)   /* for HT_OP_FAILED: the operation that failed */                       \
  X(uint32_t, stream)      /* the client thread's stream id */                                     \
  X(uint32_t, site)        /* interned call site, 0 = unknown */                                   \
  X(uint32_t, heap)        /* heap that served it, 0 = system heap */                              \
  X(uint32_t, caps)        /* capabilities requested */                                            \
  X(uint64_t, ptr)         /* result (free: the block released) */                                 \
  X(uint64_t, old_ptr)     /* realloc: the block passed in */                                      \
  X(uint64_t, size)        /* bytes requested (free: usable bytes released) */                     \
  X(uint64_t, usable)      /* usable bytes of the result */                                        \
  X(uint64_t, old_usable)  /* realloc: usable bytes of the old block */                            \
  X(uint64_t, align)       /* aligned_alloc: the alignment */                                      \
  X(int64_t, cur_bytes)    /* stream's running total: live usable bytes */                         \
  X(int64_t, cur_blocks)   /* stream's running total: live blocks */                               \
  X(uint64_t, total_bytes) /* stream's running total: bytes ever allocated */

typedef struct {
#define HT__EV_FIELD(type, name) type name;
  HT_EVENT_FIELDS(HT__EV_FIELD)
#undef HT__EV_FIELD
} ht_event_t;

/* Delta state of one stream: the previous event's values. Zero at start. */
typedef struct {
  uint64_t time_ns;
  uint64_t ptr;
  int64_t cur_bytes;
  int64_t cur_blocks;
  uint64_t total_bytes;
  uint32_t site, heap, caps;
} ht_evstate_t;

/* The op byte of an encoded event (PROTOCOL.md, "Event encoding"). */
#define HT_EV_OP_MASK 0x07u
#define HT_EV_SAME_SITE 0x08u      /* site as in the previous event: not sent */
#define HT_EV_SAME_HEAP 0x10u      /* heap likewise */
#define HT_EV_SAME_CAPS 0x20u      /* caps likewise */
#define HT_EV_TOTALS_IMPLIED 0x40u /* running totals moved as the op implies: not sent */
#define HT_EV_COMPACT 0x80u        /* the compact form: fixed-width fields */
/* In the compact form (heap and caps as before, totals as implied) bits
 * 4-6 mean instead: */
#define HT_EV_SHORT_TIME 0x10u       /* the time step takes 2 bytes, not 4 */
#define HT_EV_SHORT_SIZES 0x20u      /* size and old_usable take 2 bytes, not 4 */
#define HT_EV_COMPACT_RESERVED 0x40u /* must be 0 */

/* ---- strings on the wire: u16 length + bytes, no terminator, no NUL ---- */
typedef struct {
  const char *s; /* points into the decoded buffer; not NUL-terminated */
  size_t len;
} ht_str_t;

/* ---- bounded writer ---- */
typedef struct {
  uint8_t *p;
  size_t cap;
  size_t len;
  int overflow; /* sticky: set when a put did not fit */
} ht_wbuf_t;

void ht_wbuf_init(ht_wbuf_t *w, void *mem, size_t cap);
void ht_put_u8(ht_wbuf_t *w, uint8_t v);
void ht_put_u16(ht_wbuf_t *w, uint16_t v);
void ht_put_u32(ht_wbuf_t *w, uint32_t v);
void ht_put_u64(ht_wbuf_t *w, uint64_t v);
void ht_put_varint(ht_wbuf_t *w, uint64_t v);
void ht_put_str(ht_wbuf_t *w, const char *s, size_t len);

/* ---- bounds-checked cursor ---- */
typedef struct {
  const uint8_t *p;
  size_t len;
  size_t off;
  int err; /* sticky: first error met, 0 if none */
} ht_cur_t;

void ht_cur_init(ht_cur_t *c, const void *p, size_t len);
uint64_t ht__get_varint_slow(ht_cur_t *c);

/* The next n bytes, or NULL (the cursor's error set) when they are not
 * there. Fixed-width fields are read in line: the decoders take several
 * per event. */
static inline const uint8_t *ht__take(ht_cur_t *c, size_t n) {
  if (c->err || c->len - c->off < n) {
    if (!c->err)
      c->err = HT_ETRUNCATED;
    return NULL;
  }
  const uint8_t *at = c->p + c->off;
  c->off += n;
  return at;
}

/* n bytes at `at`, little-endian: one load for n of 1, 2, 4 or 8 (a
 * constant) on a little-endian machine. */
static inline uint64_t ht__load_le(const uint8_t *at, size_t n) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  if (n == 1)
    return at[0];
  if (n == 2) {
    uint16_t v;
    memcpy(&v, at, 2);
    return v;
  }
  if (n == 4) {
    uint32_t v;
    memcpy(&v, at, 4);
    return v;
  }
  if (n == 8) {
    uint64_t v;
    memcpy(&v, at, 8);
    return v;
  }
#endif
  uint64_t v = 0;
  for (size_t i = 0; i < n; i++)
    v |= (uint64_t)at[i] << (8 * i);
  return v;
}

/* The next n bytes as a little-endian number; 0 past the cursor's end. */
static inline uint64_t ht__get_le(ht_cur_t *c, size_t n) {
  const uint8_t *at = ht__take(c, n);
  return at ? ht__load_le(at, n) : 0;
}

static inline uint8_t ht_get_u8(ht_cur_t *c) {
  return (uint8_t)ht__get_le(c, 1);
}

static inline uint16_t ht_get_u16(ht_cur_t *c) {
  return (uint16_t)ht__get_le(c, 2);
}

static inline uint32_t ht_get_u32(ht_cur_t *c) {
  return (uint32_t)ht__get_le(c, 4);
}

static inline uint64_t ht_get_u64(ht_cur_t *c) {
  return ht__get_le(c, 8);
}
ht_str_t ht_get_str(ht_cur_t *c);

/* Every event field is a varint and most take one or two bytes: those
 * are inline, the rest (and every error) out of line. */
static inline uint64_t ht_get_varint(ht_cur_t *c) {
  if (c->len - c->off >= 2 && !c->err) {
    const uint8_t *p = c->p + c->off;
    if (p[0] < 0x80) {
      c->off += 1;
      return p[0];
    }
    if (p[1] < 0x80) {
      c->off += 2;
      return (uint64_t)(p[0] & 0x7f) | (uint64_t)p[1] << 7;
    }
  }
  return ht__get_varint_slow(c);
}

static inline uint64_t ht_zigzag(int64_t v) {
  return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
}
static inline int64_t ht_unzigzag(uint64_t v) {
  return (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
}

/* ---- records ---- */
typedef struct {
  uint16_t version;
  uint8_t ptr_size;
  uint8_t clock;  /* 1 = CLOCK_MONOTONIC */
  uint16_t flags; /* HT_HELLO_F_* */
  uint32_t pid;
  uint32_t ppid;
  uint64_t start_realtime_ns;
  uint64_t start_mono_ns;
  ht_str_t app;
  ht_str_t exe;
  uint16_t argc;
  ht_str_t argv[HT_PROTO_MAX_ARGS];
} ht_hello_t;

#define HT_HELLO_F_DROP 0x1u      /* client drops events instead of waiting */
#define HT_HELLO_F_RECONNECT 0x2u /* session continues an earlier, broken one */
#define HT_HELLO_F_FORKED 0x4u    /* process is a fork child of ppid's session */

typedef struct {
  uint32_t id;
  uint32_t line;
  ht_str_t file;
  ht_str_t func;
  ht_str_t type; /* empty unless allocated through HT_NEW */
} ht_site_rec_t;

typedef struct {
  uint32_t id;
  uint32_t caps[HT_PROTO_CAPS_PRIOS];
  uint64_t start;
  uint64_t size;
  ht_str_t name;
} ht_heap_rec_t;

typedef struct {
  uint32_t stream;
  uint64_t first_seq;
  uint32_t count;
} ht_events_hdr_t;

#define HT_LOST_DROPPED 1     /* drop mode: the ring was full */
#define HT_LOST_UNDELIVERED 2 /* written while the daemon was away */

typedef struct {
  uint32_t stream;
  uint64_t first_seq;
  uint64_t count;
  uint8_t why; /* HT_LOST_* */
} ht_lost_rec_t;

/* A reconnected client's account of a connection it lost: the one whose
 * HELLO said start_ns, on which it wrote `events` events in whole EVENTS
 * frames and LOST records counting `reported` events (version 4). The
 * daemon counts as lost what of them it never read. */
typedef struct {
  uint64_t start_ns; /* that HELLO's start_realtime_ns */
  uint64_t events;
  uint64_t reported; /* 0 below version 4, which does not send it */
} ht_previous_rec_t;

typedef struct {
  uint8_t reason;       /* ht_end_t */
  uint64_t undelivered; /* events the client knows it did not deliver */
  uint8_t signal;       /* HT_END_KILLED: the fatal signal, 1..HT_MAX_SIGNAL */
} ht_end_rec_t;

#define HT_MAX_SIGNAL 64

/* One frame split off a byte stream. */
typedef struct {
  uint8_t type;
  const uint8_t *payload; /* after the type byte */
  size_t payload_len;
  size_t total; /* bytes the frame occupies, prefix included */
} ht_frame_t;

/* Splits the next frame off buf. Returns 0 and fills f; HT_EAGAIN when buf
 * does not yet hold a whole frame; HT_EFRAMESIZE when the announced length is
 * zero or above HT_PROTO_MAX_FRAME (the stream cannot be resynchronised). */
int ht_proto_frame(const uint8_t *buf, size_t len, ht_frame_t *f);

/* Record decoders: payload is the frame's payload (type byte excluded).
 * Strings in the output point into payload. Each returns 0 or an HT_E*. */
int ht_proto_decode_hello(const uint8_t *p, size_t n, ht_hello_t *out);
int ht_proto_decode_site(const uint8_t *p, size_t n, ht_site_rec_t *out);
int ht_proto_decode_heap(const uint8_t *p, size_t n, ht_heap_rec_t *out);
int ht_proto_decode_lost(const uint8_t *p, size_t n, ht_lost_rec_t *out);
int ht_proto_decode_end(const uint8_t *p, size_t n, ht_end_rec_t *out);
/* PREVIOUS as a client of `version` writes it: `reported` from version 4. */
int ht_proto_decode_previous(const uint8_t *p, size_t n, uint16_t version, ht_previous_rec_t *out);

/* Events: begin reads the header, next yields one event at a time.
 * next returns 1 with an event, 0 when the frame is exhausted (and exactly
 * count events were read), or an HT_E* code. st is the stream's state. */
typedef struct {
  ht_cur_t cur;
  ht_events_hdr_t hdr;
  uint32_t done;
} ht_evreader_t;

int ht_proto_events_begin(ht_evreader_t *r, const uint8_t *p, size_t n);
/* Starts a reader on bare event bytes whose header is known already. */
void ht_proto_events_init(ht_evreader_t *r, const ht_events_hdr_t *hdr, const uint8_t *p, size_t n);
#define HT_PROTO_EVENTS_HDR 16 /* stream u32, first_seq u64, count u32 */
int ht_proto_events_next(ht_evreader_t *r, ht_evstate_t *st, ht_event_t *ev);

/* Record encoders: each appends one whole frame, prefix included. */
void ht_proto_put_hello(ht_wbuf_t *w, const ht_hello_t *h);
void ht_proto_put_site(ht_wbuf_t *w, const ht_site_rec_t *s);
void ht_proto_put_heap(ht_wbuf_t *w, const ht_heap_rec_t *h);
void ht_proto_put_lost(ht_wbuf_t *w, const ht_lost_rec_t *l);
void ht_proto_put_end(ht_wbuf_t *w, const ht_end_rec_t *e);
void ht_proto_put_previous(ht_wbuf_t *w, const ht_previous_rec_t *p, uint16_t version);

/* Writes the prefix and header of an EVENTS frame whose event bytes
 * (data_len of them, already encoded) follow separately, as with writev. */
void ht_proto_events_head(uint8_t out[HT_PROTO_EVENTS_HEAD], uint32_t stream, uint64_t first_seq,
                          uint32_t count, size_t data_len);

/* Encodes one event (seq and stream are implicit in the frame) at out,
 * which must have HT_PROTO_MAX_EVENT_BYTES free. Returns bytes written. */
size_t ht_proto_event_encode(uint8_t *out, ht_evstate_t *st, const ht_event_t *ev);

/* Writes caps as names joined by '|' ("DEFAULT|8BIT|32BIT"; "0" when
 * empty), truncated to fit out. Returns out. */
char *ht_caps_format(uint32_t caps, char *out, size_t cap);

/* Length (1..4) of the well-formed UTF-8 character at p, or 0 when the
 * bytes there are not one (bad lead, bad continuation, overlong, surrogate,
 * above U+10FFFF, cut short). */
size_t ht_utf8_char(const uint8_t *p, size_t n);

/* Copies n bytes of s into out (cap bytes, NUL-terminated) for a person's
 * terminal: control characters (C0, DEL and C1) and bytes that are not
 * UTF-8 become \xNN; a string that does not fit ends in "...". Returns out. */
char *ht_str_printable(const char *s, size_t n, char *out, size_t cap);

/* Makes a ht_str_t from a C string (NULL gives the empty string). */
ht_str_t ht_str(const char *s);

#endif /* HT_PROTO_H */
