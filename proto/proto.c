/* proto.c - encoder and decoder of the heaptrace wire format.
 *
 * Encoders append to a ht_wbuf_t; when a write does not fit, the buffer is
 * marked overflowed and nothing past its end is touched. Decoders read with
 * a ht_cur_t; the first failed read sets a sticky error and every later
 * read returns 0, so a record decoder checks once at the end. Lengths read
 * off the wire are compared with what remains before anything is copied.
 */
#include "ht_event.h"
#include "ht_proto.h"

#include <stdio.h>
#include <string.h>

/* ======================================================================
 * Names
 * ==================================================================== */

const char *ht_record_name(int type) {
  switch (type) {
#define HT__REC_NAME(name, code, str)                                                              \
  case code:                                                                                       \
    return str;
    HT_RECORD_MAP(HT__REC_NAME)
#undef HT__REC_NAME
  }
  return "unknown";
}

const char *ht_op_name(int op) {
  switch (op) {
#define HT__OP_NAME(name, code, str)                                                               \
  case code:                                                                                       \
    return str;
    HT_OP_MAP(HT__OP_NAME)
#undef HT__OP_NAME
  }
  return "unknown";
}

const char *ht_end_name(int reason) {
  switch (reason) {
#define HT__END_NAME(name, code, str)                                                              \
  case code:                                                                                       \
    return str;
    HT_END_MAP(HT__END_NAME)
#undef HT__END_NAME
  }
  return "unknown";
}

char *ht_caps_format(uint32_t caps, char *out, size_t cap) {
  static const char *const names[32] = {
      "EXEC",    "32BIT",     "8BIT",      "DMA",    "PID2",          "PID3",
      "PID4",    "PID5",      "PID6",      "PID7",   "SPIRAM",        "INTERNAL",
      "DEFAULT", "IRAM_8BIT", "RETENTION", "RTCRAM", [31] = "INVALID"};
  size_t len = 0;
  int cut = 0;
  if (cap == 0)
    return out;
  out[0] = '\0';
  /* DEFAULT first: it is what a plain malloc asks for. */
  static const int order[] = {12, 2, 1, 0, 3, 10, 11, 13, 14, 15, 4, 5, 6, 7, 8, 9, 31};
  for (size_t k = 0; k < sizeof order / sizeof *order; k++) {
    int bit = order[k];
    if (!(caps & (1u << bit)))
      continue;
    int n = snprintf(out + len, cap - len, "%s%s", len ? "|" : "", names[bit]);
    if (n < 0 || (size_t)n >= cap - len) {
      out[len] = '\0'; /* a clean prefix, never half a name */
      cut = 1;
      break;
    }
    len += (size_t)n;
  }
  uint32_t unnamed = caps & 0x7fff0000u;
  if (unnamed && !cut && len < cap)
    snprintf(out + len, cap - len, "%s0x%x", len ? "|" : "", unnamed);
  if (!caps)
    snprintf(out, cap, "0");
  return out;
}

size_t ht_utf8_char(const uint8_t *p, size_t n) {
  if (n == 0)
    return 0;
  if (p[0] < 0x80)
    return 1;
  size_t len = p[0] >= 0xf0 ? 4 : p[0] >= 0xe0 ? 3 : p[0] >= 0xc0 ? 2 : 0;
  if (len == 0 || p[0] > 0xf4 || len > n)
    return 0;
  uint32_t cp = p[0] & (0x7f >> len);
  for (size_t i = 1; i < len; i++) {
    if ((p[i] & 0xc0) != 0x80)
      return 0;
    cp = (cp << 6) | (p[i] & 0x3f);
  }
  static const uint32_t least[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < least[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
    return 0;
  return len;
}

char *ht_str_printable(const char *s, size_t n, char *out, size_t cap) {
  const uint8_t *p = (const uint8_t *)s;
  size_t o = 0;
  if (cap < 4) {
    if (cap)
      out[0] = '\0';
    return out;
  }
  for (size_t i = 0; i < n;) {
    size_t len = ht_utf8_char(p + i, n - i);
    int control =
        len == 1 ? (p[i] < 0x20 || p[i] == 0x7f) : len == 2 && p[i] == 0xc2 && p[i + 1] < 0xa0;
    size_t need = len == 0 || control ? 4 * (len ? len : 1) : len;
    if (o + need + 4 > cap) {
      memcpy(out + o, "...", 4);
      return out;
    }
    if (len == 0 || control) {
      for (size_t k = 0; k < (len ? len : 1); k++)
        o += (size_t)snprintf(out + o, cap - o, "\\x%02x", p[i + k]);
      i += len ? len : 1;
    } else {
      memcpy(out + o, p + i, len);
      o += len;
      i += len;
    }
  }
  out[o] = '\0';
  return out;
}

ht_str_t ht_str(const char *s) {
  ht_str_t r = {s ? s : "", s ? strlen(s) : 0};
  return r;
}

/* ======================================================================
 * Writer
 * ==================================================================== */

void ht_wbuf_init(ht_wbuf_t *w, void *mem, size_t cap) {
  w->p = mem;
  w->cap = cap;
  w->len = 0;
  w->overflow = 0;
}

static uint8_t *reserve(ht_wbuf_t *w, size_t n) {
  if (w->overflow || w->cap - w->len < n) {
    w->overflow = 1;
    return NULL;
  }
  uint8_t *at = w->p + w->len;
  w->len += n;
  return at;
}

void ht_put_u8(ht_wbuf_t *w, uint8_t v) {
  uint8_t *at = reserve(w, 1);
  if (at)
    *at = v;
}

void ht_put_u16(ht_wbuf_t *w, uint16_t v) {
  uint8_t *at = reserve(w, 2);
  if (at)
    ht__store_le(at, v, 2);
}

void ht_put_u32(ht_wbuf_t *w, uint32_t v) {
  uint8_t *at = reserve(w, 4);
  if (at)
    ht__store_le(at, v, 4);
}

void ht_put_u64(ht_wbuf_t *w, uint64_t v) {
  uint8_t *at = reserve(w, 8);
  if (at)
    ht__store_le(at, v, 8);
}

void ht_put_varint(ht_wbuf_t *w, uint64_t v) {
  uint8_t tmp[10];
  size_t n = ht__varint_put(tmp, v);
  uint8_t *at = reserve(w, n);
  if (at)
    memcpy(at, tmp, n);
}

/* Strings longer than the protocol allows are cut, never sent oversize:
 * the receiver would reject the whole record. */
void ht_put_str(ht_wbuf_t *w, const char *s, size_t len) {
  if (len > HT_PROTO_MAX_STRING)
    len = HT_PROTO_MAX_STRING;
  ht_put_u16(w, (uint16_t)len);
  uint8_t *at = reserve(w, len);
  if (at && len)
    memcpy(at, s, len);
}

/* ======================================================================
 * Cursor
 * ==================================================================== */

void ht_cur_init(ht_cur_t *c, const void *p, size_t len) {
  c->p = p;
  c->len = len;
  c->off = 0;
  c->err = 0;
}

/* Varints of more than one byte (ht_proto.h has the one-byte case). */
uint64_t ht__get_varint_slow(ht_cur_t *c) {
  if (c->err)
    return 0;
  const uint8_t *p = c->p + c->off;
  size_t left = c->len - c->off;
  uint64_t v = 0;
  size_t max = left < 10 ? left : 10;
  for (size_t i = 0; i < max; i++) {
    v |= (uint64_t)(p[i] & 0x7f) << (7 * i);
    if (!(p[i] & 0x80)) {
      c->off += i + 1;
      return v;
    }
  }
  c->err = left < 10 ? HT_ETRUNCATED : HT_EVARINT;
  return 0;
}

ht_str_t ht_get_str(ht_cur_t *c) {
  ht_str_t s = {"", 0};
  uint16_t len = ht_get_u16(c);
  if (c->err)
    return s;
  if (len > HT_PROTO_MAX_STRING) {
    c->err = HT_ESTRLEN;
    return s;
  }
  if (c->len - c->off < len) {
    c->err = HT_ESTRING;
    return s;
  }
  const uint8_t *at = ht__take(c, len);
  if (memchr(at, 0, len)) {
    c->err = HT_ESTRNUL;
    return s;
  }
  s.s = (const char *)at;
  s.len = len;
  return s;
}

/* A record decoder's verdict: the first read error, else leftover bytes. */
static int finish(const ht_cur_t *c) {
  if (c->err)
    return c->err;
  return c->off == c->len ? 0 : HT_ETRAILING;
}

/* ======================================================================
 * Frames
 * ==================================================================== */

int ht_proto_frame(const uint8_t *buf, size_t len, ht_frame_t *f) {
  if (len < HT_PROTO_FRAME_PREFIX)
    return HT_EAGAIN;
  uint32_t body = (uint32_t)ht__load_le(buf, 4);
  if (body == 0 || body > HT_PROTO_MAX_FRAME)
    return HT_EFRAMESIZE;
  if (len - HT_PROTO_FRAME_PREFIX < body)
    return HT_EAGAIN;
  f->type = buf[HT_PROTO_FRAME_PREFIX];
  f->payload = buf + HT_PROTO_FRAME_PREFIX + 1;
  f->payload_len = body - 1;
  f->total = HT_PROTO_FRAME_PREFIX + (size_t)body;
  return 0;
}

/* Opens a frame: a length placeholder and the type byte. Returns the offset
 * of the placeholder for close_frame. */
static size_t open_frame(ht_wbuf_t *w, uint8_t type) {
  size_t at = w->len;
  ht_put_u32(w, 0);
  ht_put_u8(w, type);
  return at;
}

static void close_frame(ht_wbuf_t *w, size_t at) {
  if (w->overflow)
    return;
  size_t body = w->len - at - HT_PROTO_FRAME_PREFIX;
  if (body > HT_PROTO_MAX_FRAME) {
    w->overflow = 1;
    return;
  }
  ht__store_le(w->p + at, body, 4);
}

/* ======================================================================
 * Records
 * ==================================================================== */

void ht_proto_put_hello(ht_wbuf_t *w, const ht_hello_t *h) {
  size_t at = open_frame(w, HT_REC_HELLO);
  uint8_t *m = reserve(w, HT_PROTO_MAGIC_LEN);
  if (m)
    memcpy(m, HT_PROTO_MAGIC, HT_PROTO_MAGIC_LEN);
  ht_put_u16(w, h->version);
  ht_put_u8(w, h->ptr_size);
  ht_put_u8(w, h->clock);
  ht_put_u16(w, h->flags);
  ht_put_u32(w, h->pid);
  ht_put_u32(w, h->ppid);
  ht_put_u64(w, h->start_realtime_ns);
  ht_put_u64(w, h->start_mono_ns);
  ht_put_str(w, h->app.s, h->app.len);
  ht_put_str(w, h->exe.s, h->exe.len);
  uint16_t argc = h->argc > HT_PROTO_MAX_ARGS ? HT_PROTO_MAX_ARGS : h->argc;
  ht_put_u16(w, argc);
  for (uint16_t i = 0; i < argc; i++)
    ht_put_str(w, h->argv[i].s, h->argv[i].len);
  close_frame(w, at);
}

int ht_proto_decode_hello(const uint8_t *p, size_t n, ht_hello_t *out) {
  ht_cur_t c;
  ht_cur_init(&c, p, n);
  memset(out, 0, sizeof *out);
  const uint8_t *magic = ht__take(&c, HT_PROTO_MAGIC_LEN);
  if (!magic)
    return c.err;
  if (memcmp(magic, HT_PROTO_MAGIC, HT_PROTO_MAGIC_LEN) != 0)
    return HT_EMAGIC;
  out->version = ht_get_u16(&c);
  if (!c.err && out->version > HT_PROTO_VERSION)
    return HT_EVERSION;
  out->ptr_size = ht_get_u8(&c);
  out->clock = ht_get_u8(&c);
  out->flags = ht_get_u16(&c);
  out->pid = ht_get_u32(&c);
  out->ppid = ht_get_u32(&c);
  out->start_realtime_ns = ht_get_u64(&c);
  out->start_mono_ns = ht_get_u64(&c);
  out->app = ht_get_str(&c);
  out->exe = ht_get_str(&c);
  out->argc = ht_get_u16(&c);
  if (!c.err && out->argc > HT_PROTO_MAX_ARGS)
    return HT_ELIMIT;
  for (uint16_t i = 0; i < out->argc && !c.err; i++)
    out->argv[i] = ht_get_str(&c);
  return finish(&c);
}

void ht_proto_put_site(ht_wbuf_t *w, const ht_site_rec_t *s) {
  size_t at = open_frame(w, HT_REC_SITE);
  ht_put_varint(w, s->id);
  ht_put_varint(w, s->line);
  ht_put_str(w, s->file.s, s->file.len);
  ht_put_str(w, s->func.s, s->func.len);
  ht_put_str(w, s->type.s, s->type.len);
  close_frame(w, at);
}

/* A varint that must fit in 32 bits; a larger value is a limit error. */
static inline uint32_t get_varint32(ht_cur_t *c) {
  uint64_t v = ht_get_varint(c);
  if (!c->err && v > UINT32_MAX) {
    c->err = HT_ELIMIT;
    return 0;
  }
  return (uint32_t)v;
}

int ht_proto_decode_site(const uint8_t *p, size_t n, ht_site_rec_t *out) {
  ht_cur_t c;
  ht_cur_init(&c, p, n);
  out->id = get_varint32(&c);
  out->line = get_varint32(&c);
  out->file = ht_get_str(&c);
  out->func = ht_get_str(&c);
  out->type = ht_get_str(&c);
  return finish(&c);
}

void ht_proto_put_heap(ht_wbuf_t *w, const ht_heap_rec_t *h) {
  size_t at = open_frame(w, HT_REC_HEAP);
  ht_put_varint(w, h->id);
  for (int i = 0; i < HT_PROTO_CAPS_PRIOS; i++)
    ht_put_varint(w, h->caps[i]);
  ht_put_u64(w, h->start);
  ht_put_u64(w, h->size);
  ht_put_str(w, h->name.s, h->name.len);
  close_frame(w, at);
}

int ht_proto_decode_heap(const uint8_t *p, size_t n, ht_heap_rec_t *out) {
  ht_cur_t c;
  ht_cur_init(&c, p, n);
  out->id = get_varint32(&c);
  for (int i = 0; i < HT_PROTO_CAPS_PRIOS; i++)
    out->caps[i] = get_varint32(&c);
  out->start = ht_get_u64(&c);
  out->size = ht_get_u64(&c);
  out->name = ht_get_str(&c);
  return finish(&c);
}

void ht_proto_put_lost(ht_wbuf_t *w, const ht_lost_rec_t *l) {
  size_t at = open_frame(w, HT_REC_LOST);
  ht_put_varint(w, l->stream);
  ht_put_varint(w, l->first_seq);
  ht_put_varint(w, l->count);
  ht_put_u8(w, l->why);
  close_frame(w, at);
}

int ht_proto_decode_lost(const uint8_t *p, size_t n, ht_lost_rec_t *out) {
  ht_cur_t c;
  ht_cur_init(&c, p, n);
  out->stream = get_varint32(&c);
  out->first_seq = ht_get_varint(&c);
  out->count = ht_get_varint(&c);
  out->why = ht_get_u8(&c);
  if (!c.err && out->why != HT_LOST_DROPPED && out->why != HT_LOST_UNDELIVERED)
    return HT_ELIMIT;
  return finish(&c);
}

void ht_proto_put_end(ht_wbuf_t *w, const ht_end_rec_t *e) {
  size_t at = open_frame(w, HT_REC_END);
  ht_put_u8(w, e->reason);
  ht_put_varint(w, e->undelivered);
  if (e->reason == HT_END_KILLED)
    ht_put_u8(w, e->signal);
  close_frame(w, at);
}

int ht_proto_decode_end(const uint8_t *p, size_t n, ht_end_rec_t *out) {
  ht_cur_t c;
  ht_cur_init(&c, p, n);
  out->reason = ht_get_u8(&c);
  out->undelivered = ht_get_varint(&c);
  out->signal = out->reason == HT_END_KILLED ? ht_get_u8(&c) : 0;
  if (!c.err && (out->reason == HT_END_RUNNING || out->reason > HT_END_KILLED))
    return HT_ELIMIT;
  if (!c.err && out->reason == HT_END_KILLED && (out->signal < 1 || out->signal > HT_MAX_SIGNAL))
    return HT_ELIMIT;
  return finish(&c);
}

void ht_proto_put_previous(ht_wbuf_t *w, const ht_previous_rec_t *p, uint16_t version) {
  size_t at = open_frame(w, HT_REC_PREVIOUS);
  ht_put_u64(w, p->start_ns);
  ht_put_varint(w, p->events);
  if (version >= 4)
    ht_put_varint(w, p->reported);
  close_frame(w, at);
}

int ht_proto_decode_previous(const uint8_t *p, size_t n, uint16_t version, ht_previous_rec_t *out) {
  ht_cur_t c;
  ht_cur_init(&c, p, n);
  out->start_ns = ht_get_u64(&c);
  out->events = ht_get_varint(&c);
  out->reported = version >= 4 ? ht_get_varint(&c) : 0;
  return finish(&c);
}

/* ======================================================================
 * Events
 * ==================================================================== */

void ht_proto_events_head(uint8_t out[HT_PROTO_EVENTS_HEAD], uint32_t stream, uint64_t first_seq,
                          uint32_t count, size_t data_len) {
  ht__store_le(out, HT_PROTO_EVENTS_HEAD - HT_PROTO_FRAME_PREFIX + data_len, 4);
  out[4] = HT_REC_EVENTS;
  ht__store_le(out + 5, stream, 4);
  ht__store_le(out + 9, first_seq, 8);
  ht__store_le(out + 17, count, 4);
}

int ht_proto_events_begin(ht_evreader_t *r, const uint8_t *p, size_t n) {
  ht_cur_init(&r->cur, p, n);
  r->hdr.stream = ht_get_u32(&r->cur);
  r->hdr.first_seq = ht_get_u64(&r->cur);
  r->hdr.count = ht_get_u32(&r->cur);
  r->done = 0;
  if (r->cur.err)
    return r->cur.err;
  if (r->hdr.count > HT_PROTO_MAX_FRAME_EVENTS)
    return HT_ELIMIT;
  return 0;
}

void ht_proto_events_init(ht_evreader_t *r, const ht_events_hdr_t *hdr, const uint8_t *p,
                          size_t n) {
  ht_cur_init(&r->cur, p, n);
  r->hdr = *hdr;
  r->done = 0;
}

/* The encoder lives in ht_event.h, inline, for the client's hot path. */
size_t ht_proto_event_encode(uint8_t *out, ht_evstate_t *st, const ht_event_t *ev) {
  return ht_event_encode(out, st, ev);
}

static int valid_op(uint32_t op, uint32_t failed_op) {
  if (op < 1 || op > HT_OP_MAX)
    return 0;
  if (op == HT_OP_FAILED)
    return failed_op >= HT_OP_MALLOC && failed_op <= HT_OP_FREE;
  return failed_op == 0;
}

/* The event's running totals go to ev and st from registers (st read back
 * from ev just after these stores would cost a failed store forward: a
 * fifth of the decoder's time when it did), and the state moves on. */
static int event_done(ht_evreader_t *r, ht_evstate_t *st, ht_event_t *ev, int64_t bytes,
                      int64_t blocks, uint64_t total) {
  ev->cur_bytes = bytes;
  ev->cur_blocks = blocks;
  ev->total_bytes = total;
  ht__evstate_set(st, ev->time_ns, ev->ptr, bytes, blocks, total, ev->site, ev->heap, ev->caps);
  r->done++;
  return 1;
}

/* A signed 32-bit step read as u32, widened (no implementation-defined
 * conversion on the way). */
static uint64_t step32(uint32_t u) {
  return (uint64_t)((int64_t)(u ^ 0x80000000u) - 0x80000000);
}

/* The longest compact event after its op byte: time, site, ptr, old_ptr,
 * old_usable, size (4 bytes each but the site's 2) and usable's byte. */
#define COMPACT_BODY_MAX (4 + 2 + 4 + 4 + 4 + 4 + 1)

/* The fields of a compact event (opb) from the cursor. fast (a constant):
 * the cursor holds at least COMPACT_BODY_MAX bytes, so that no read is
 * checked; else each is, and the caller looks at c->err. */
static inline __attribute__((always_inline)) void
compact_fields(ht_cur_t *c, const int fast, uint8_t opb, const ht_evstate_t *st, ht_event_t *ev) {
  const uint8_t *at = c->p + c->off;
  size_t n = 0;
#define COMPACT_GET(w)                                                                             \
  (fast ? (n += (w), (uint32_t)ht__load_le(at + n - (w), w)) : (uint32_t)ht__get_le(c, w))
  uint32_t op = opb & HT_EV_OP_MASK;
  int short_sizes = (opb & HT_EV_SHORT_SIZES) != 0;
  ev->time_ns = st->time_ns + (opb & HT_EV_SHORT_TIME ? COMPACT_GET(2) : COMPACT_GET(4));
  ev->site = opb & HT_EV_SAME_SITE ? st->site : COMPACT_GET(2);
  ev->ptr = st->ptr + step32(COMPACT_GET(4));
  ev->old_ptr = ev->old_usable = 0;
  if (op == HT_OP_REALLOC) {
    ev->old_ptr = ev->ptr + step32(COMPACT_GET(4));
    ev->old_usable = short_sizes ? COMPACT_GET(2) : COMPACT_GET(4);
  }
  ev->size = short_sizes ? COMPACT_GET(2) : COMPACT_GET(4);
  ev->usable = op == HT_OP_FREE ? ev->size : ev->size + COMPACT_GET(1);
#undef COMPACT_GET
  if (fast)
    c->off += n;
}

/* An event in the compact form (PROTOCOL.md, "Compact events"), its op
 * byte read. */
static int compact_next(ht_evreader_t *r, ht_evstate_t *st, ht_event_t *ev, uint8_t opb) {
  ht_cur_t *c = &r->cur;
  uint32_t op = opb & HT_EV_OP_MASK;
  if ((opb & HT_EV_COMPACT_RESERVED) || !ht__compact_op(op))
    return HT_EOP;
  ev->op = op;
  ev->failed_op = 0;
  ev->seq = r->hdr.first_seq + r->done;
  ev->stream = r->hdr.stream;
  ev->heap = st->heap;
  ev->caps = st->caps;
  ev->align = 0;
  /* One bounds check for the whole event where the frame has room for
   * the longest; each field checked near the frame's end. */
  if (!c->err && c->len - c->off >= COMPACT_BODY_MAX)
    compact_fields(c, 1, opb, st, ev);
  else
    compact_fields(c, 0, opb, st, ev);
  if (c->err)
    return c->err;
  int64_t bytes, blocks;
  uint64_t total;
  ht__implied_totals(st, ev, &bytes, &blocks, &total);
  return event_done(r, st, ev, bytes, blocks, total);
}

int ht_proto_events_next(ht_evreader_t *r, ht_evstate_t *st, ht_event_t *ev) {
  ht_cur_t *c = &r->cur;
  if (r->done == r->hdr.count)
    return finish(c);
  uint8_t opb = ht_get_u8(c);
  if (c->err)
    return c->err;
  if (opb & HT_EV_COMPACT)
    return compact_next(r, st, ev, opb);
  ev->op = opb & HT_EV_OP_MASK;
  ev->failed_op = ev->op == HT_OP_FAILED ? ht_get_u8(c) : 0;
  if (c->err)
    return c->err;
  if (!valid_op(ev->op, ev->failed_op))
    return HT_EOP;
  ev->seq = r->hdr.first_seq + r->done;
  ev->stream = r->hdr.stream;
  ev->time_ns = st->time_ns + (uint64_t)ht_unzigzag(ht_get_varint(c));
  ev->site = opb & HT_EV_SAME_SITE ? st->site : get_varint32(c);
  ev->heap = opb & HT_EV_SAME_HEAP ? st->heap : get_varint32(c);
  ev->caps = opb & HT_EV_SAME_CAPS ? st->caps : get_varint32(c);
  ev->ptr = st->ptr + (uint64_t)ht_unzigzag(ht_get_varint(c));
  /* Every field is set on every path: no memset of the whole event. */
  ev->old_ptr = ev->old_usable = ev->align = 0;
  if (ht__has_old_ptr(ev->op, ev->failed_op)) {
    ev->old_ptr = ev->ptr + (uint64_t)ht_unzigzag(ht_get_varint(c));
    ev->old_usable = ht_get_varint(c);
  }
  if (ht__has_align(ev->op, ev->failed_op))
    ev->align = ht_get_varint(c);
  ev->size = ht_get_varint(c);
  ev->usable = ev->op == HT_OP_FREE ? ev->size : ev->size + (uint64_t)ht_unzigzag(ht_get_varint(c));
  int64_t bytes, blocks;
  uint64_t total;
  if (opb & HT_EV_TOTALS_IMPLIED) {
    ht__implied_totals(st, ev, &bytes, &blocks, &total);
  } else {
    bytes = (int64_t)((uint64_t)st->cur_bytes + (uint64_t)ht_unzigzag(ht_get_varint(c)));
    blocks = (int64_t)((uint64_t)st->cur_blocks + (uint64_t)ht_unzigzag(ht_get_varint(c)));
    total = st->total_bytes + ht_get_varint(c);
  }
  if (c->err)
    return c->err;
  return event_done(r, st, ev, bytes, blocks, total);
}

/* ======================================================================
 * Errors
 * ==================================================================== */

const char *ht_strerror(int err) {
  switch (err) {
  case HT_OK:
    return "success";
#define HT__ERR_MSG(name, code, msg)                                                               \
  case code:                                                                                       \
    return msg;
    HT_ERRNO_MAP(HT__ERR_MSG)
#undef HT__ERR_MSG
  }
  return "unknown error";
}

const char *ht_err_name(int err) {
  switch (err) {
  case HT_OK:
    return "HT_OK";
#define HT__ERR_NAME(name, code, msg)                                                              \
  case code:                                                                                       \
    return "HT_" #name;
    HT_ERRNO_MAP(HT__ERR_NAME)
#undef HT__ERR_NAME
  }
  return "HT_E?";
}
