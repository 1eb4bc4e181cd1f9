/* test_caps_trace.c - what the caps heaps send to heaptraced.
 *
 * The test plays the daemon: it listens on a Unix socket of its own, points
 * HEAPTRACE_SOCKET at it, and decodes everything the library sends with the
 * project's codec. It checks the contract of docs/allocator.md: one HEAP
 * record per region (block area, caps, name) before any event; exactly one
 * event per call, with the heap that served it, the caps asked for and the
 * right operation (a moving realloc is one REALLOC with both pointers, a
 * failure one FAILED); typed sites carry the type's name; and, replaying
 * the events the way the daemon does (block start = ptr - L - 16,
 * footprint = usable + L + 20, free = size - sum(footprint) - 16 x gaps),
 * the free bytes of every heap after every event equal what the allocator
 * itself reported at that moment.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <heaptrace/heaptrace.h>

#include "ht_proto.h"

#define MAX_EVENTS 64
#define MAX_LIVE 32

static _Alignas(64) unsigned char dram[64 * 1024];
static _Alignas(64) unsigned char iram[32 * 1024];
static _Alignas(64) unsigned char spiram[128 * 1024];

/* ---- the fake daemon --------------------------------------------------------- */

static char dir[48], path[96];
static int listen_fd;
static pthread_t reader;
static uint8_t wire[1 << 20];
static _Atomic size_t wire_len;

static void *read_all(void *arg) {
  (void)arg;
  int fd = accept(listen_fd, NULL, NULL);
  size_t len = 0;
  ssize_t n;
  while (fd >= 0 && len < sizeof wire && (n = read(fd, wire + len, sizeof wire - len)) > 0) {
    len += (size_t)n;
    atomic_store(&wire_len, len);
  }
  if (fd >= 0)
    close(fd);
  return NULL;
}

static void setup(void) {
  snprintf(dir, sizeof dir, "/tmp/ht-trace-XXXXXX");
  cr_assert(ne(ptr, mkdtemp(dir), NULL));
  snprintf(path, sizeof path, "%s/d.sock", dir);
  listen_fd = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
  cr_assert(eq(int, bind(listen_fd, (struct sockaddr *)&sa, sizeof sa), 0));
  cr_assert(eq(int, listen(listen_fd, 1), 0));
  pthread_create(&reader, NULL, read_all, NULL);
  unsetenv("HEAPTRACE_DISABLE");
  setenv("HEAPTRACE_SOCKET", path, 1);
}

static void teardown(void) {
  unlink(path);
  rmdir(dir);
}

TestSuite(caps_trace, .init = setup, .fini = teardown, .timeout = 30);

/* ---- decoding ------------------------------------------------------------------ */

typedef struct {
  ht_heap_rec_t heaps[8];
  char names[8][32];
  int nheaps;
  int heap_before_event; /* every HEAP record came before the first event */
  ht_event_t ev[MAX_EVENTS];
  int nev;
  char site_type[64][32];
} seen_t;

static void decode(seen_t *s) {
  size_t len = atomic_load(&wire_len), off = 0;
  ht_evstate_t st[8];
  memset(st, 0, sizeof st);
  memset(s, 0, sizeof *s);
  s->heap_before_event = 1;
  ht_frame_t f;
  while (ht_proto_frame(wire + off, len - off, &f) == 0) {
    if (f.type == HT_REC_HEAP) {
      ht_heap_rec_t *h = &s->heaps[s->nheaps];
      cr_assert(eq(int, ht_proto_decode_heap(f.payload, f.payload_len, h), 0));
      snprintf(s->names[s->nheaps], 32, "%.*s", (int)h->name.len, h->name.s);
      s->heap_before_event &= s->nev == 0;
      s->nheaps++;
    } else if (f.type == HT_REC_SITE) {
      ht_site_rec_t r;
      cr_assert(eq(int, ht_proto_decode_site(f.payload, f.payload_len, &r), 0));
      if (r.id < 64)
        snprintf(s->site_type[r.id], 32, "%.*s", (int)r.type.len, r.type.s);
    } else if (f.type == HT_REC_EVENTS) {
      ht_evreader_t r;
      cr_assert(eq(int, ht_proto_events_begin(&r, f.payload, f.payload_len), 0));
      cr_assert(lt(u32, r.hdr.stream, 8));
      int rc;
      while ((rc = ht_proto_events_next(&r, &st[r.hdr.stream], &s->ev[s->nev])) == 1)
        s->nev++;
      cr_assert(eq(int, rc, 0));
    }
    off += f.total;
  }
}

/* ---- replay, the daemon's way ------------------------------------------------- */

typedef struct {
  uint64_t start, len;
} span_t;

typedef struct {
  uint64_t area, size;
  span_t live[MAX_LIVE];
  int n;
} model_t;

static uint64_t lead_of(const ht_event_t *e) {
  return e->op == HT_OP_ALIGNED && e->align > 32 ? e->align : 32;
}

static void model_add(model_t *m, const ht_event_t *e) {
  uint64_t lead = lead_of(e);
  m->live[m->n++] = (span_t){e->ptr - lead - 16, e->usable + lead + 20};
}

static int model_remove(model_t *m, uint64_t ptr) {
  for (int i = 0; i < m->n; i++)
    if (ptr > m->live[i].start && ptr < m->live[i].start + m->live[i].len) {
      m->live[i] = m->live[--m->n];
      return 1;
    }
  return 0;
}

static int by_start(const void *a, const void *b) {
  const span_t *x = a, *y = b;
  return x->start < y->start ? -1 : x->start > y->start;
}

/* Free bytes of the modelled heap: every gap is one free TLSF block. */
static uint64_t model_free(model_t *m) {
  span_t sorted[MAX_LIVE];
  memcpy(sorted, m->live, sizeof(span_t) * (size_t)m->n);
  qsort(sorted, (size_t)m->n, sizeof *sorted, by_start);
  uint64_t at = m->area, free_bytes = 0;
  for (int i = 0; i <= m->n; i++) {
    uint64_t next = i < m->n ? sorted[i].start : m->area + m->size;
    cr_assert(ge(u64, next, at), "blocks overlap in the model");
    if (next > at)
      free_bytes += next - at - 16;
    if (i < m->n)
      at = sorted[i].start + sorted[i].len;
  }
  return free_bytes;
}

/* ---- the test ------------------------------------------------------------------- */

typedef struct {
  int id;
  double d;
} thing_t;

static size_t free_of(uint32_t heap) {
  return heap ? ht_heap_free_size(ht_heap_by_id(heap)) : 0;
}

Test(caps_trace, every_call_is_one_event_and_the_events_rebuild_each_heap_exactly) {
  const uint32_t d[3] = {HT_CAP_8BIT | HT_CAP_DEFAULT, HT_CAP_INTERNAL | HT_CAP_DMA, 0};
  const uint32_t i[3] = {HT_CAP_EXEC | HT_CAP_32BIT, 0, 0};
  const uint32_t s[3] = {HT_CAP_SPIRAM, 0, HT_CAP_DEFAULT | HT_CAP_8BIT};
  /* Registered before the first allocation: still announced. */
  ht_heap_add_region_with_caps_named("DRAM", d, (intptr_t)dram, (intptr_t)dram + sizeof dram);
  ht_heap_add_region_with_caps_named("IRAM", i, (intptr_t)iram, (intptr_t)iram + sizeof iram);
  ht_heap_add_region_with_caps_named("SPIRAM", s, (intptr_t)spiram,
                                     (intptr_t)spiram + sizeof spiram);
  cr_assert(ht_tracing_enabled(), "the fake daemon is there");

  /* Each call, and the free bytes of the heap it touched right after. */
  struct {
    uint32_t op, heap, caps;
    size_t free_after;
  } want[16];
  int n = 0;
#define STEP(op_, heap_, caps_)                                                                    \
  (want[n++] = (__typeof__(want[0])){op_, heap_, caps_, free_of(heap_)})
  char *p = ht_caps_malloc(100, HT_CAP_DMA);
  STEP(HT_OP_MALLOC, 1, HT_CAP_DMA);
  char *q = ht_caps_realloc(p, 5000, HT_CAP_SPIRAM);
  STEP(HT_OP_REALLOC, 3, HT_CAP_SPIRAM);
  void *a = ht_caps_aligned_alloc(256, 100, HT_CAP_EXEC);
  STEP(HT_OP_ALIGNED, 2, HT_CAP_EXEC);
  void *b = ht_caps_realloc(a, 120, HT_CAP_EXEC); /* lead 256: moves */
  STEP(HT_OP_REALLOC, 2, HT_CAP_EXEC);
  void *c = ht_caps_calloc(3, 100, HT_CAP_DEFAULT);
  STEP(HT_OP_CALLOC, 1, HT_CAP_DEFAULT);
  q = ht_caps_realloc(q, 6000, HT_CAP_SPIRAM); /* grows in place */
  STEP(HT_OP_REALLOC, 3, HT_CAP_SPIRAM);
  cr_assert(eq(ptr, ht_caps_malloc(10, HT_CAP_RTCRAM), NULL));
  STEP(HT_OP_FAILED, 0, HT_CAP_RTCRAM);
  thing_t *t = HT_NEW(thing_t, 2);
  STEP(HT_OP_CALLOC, 0, HT_SYSTEM_HEAP_CAPS);
  ht_free(t);
  STEP(HT_OP_FREE, 0, HT_SYSTEM_HEAP_CAPS);
  ht_caps_free(q);
  STEP(HT_OP_FREE, 3, HT_CAP_SPIRAM);
  ht_free(b);
  STEP(HT_OP_FREE, 2, HT_CAP_EXEC);
  ht_free(c);
  STEP(HT_OP_FREE, 1, HT_CAP_DEFAULT);
  cr_assert(eq(int, ht_flush(), 0));
  for (int tries = 0; tries < 200; tries++) {
    seen_t probe;
    decode(&probe);
    if (probe.nev >= n)
      break;
    usleep(10000);
  }

  static seen_t seen;
  decode(&seen);
  cr_assert(eq(int, seen.nheaps, 3));
  cr_assert(seen.heap_before_event);
  cr_assert(eq(str, seen.names[2], "SPIRAM"));
  cr_assert(eq(u32, seen.heaps[0].caps[1], HT_CAP_INTERNAL | HT_CAP_DMA));
  model_t m[4] = {{0}};
  static const uint32_t only[3] = {HT_CAP_DMA, HT_CAP_EXEC, HT_CAP_SPIRAM};
  for (int h = 0; h < 3; h++) {
    cr_assert(eq(u32, seen.heaps[h].id, (uint32_t)h + 1));
    cr_assert(eq(u64, seen.heaps[h].size - 16, (uint64_t)ht_caps_get_total_size(only[h])),
              "the HEAP record describes the block area");
    m[h + 1].area = seen.heaps[h].start;
    m[h + 1].size = seen.heaps[h].size;
  }
  cr_assert(eq(int, seen.nev, n), "one event per call");
  for (int k = 0; k < n; k++) {
    const ht_event_t *e = &seen.ev[k];
    cr_assert(eq(u32, e->op, want[k].op), "event %d", k);
    cr_assert(eq(u32, e->heap, want[k].heap), "event %d", k);
    cr_assert(eq(u32, e->caps, want[k].caps), "event %d", k);
    if (e->op == HT_OP_FAILED || e->heap == 0)
      continue;
    model_t *hm = &m[e->heap];
    if (e->op == HT_OP_FREE || e->op == HT_OP_REALLOC) {
      uint64_t gone = e->op == HT_OP_FREE ? e->ptr : e->old_ptr;
      int found = 0;
      for (int h = 1; h <= 3; h++)
        found |= model_remove(&m[h], gone);
      cr_assert(found, "event %d frees a block the model knows", k);
    }
    if (e->op != HT_OP_FREE)
      model_add(hm, e);
    cr_assert(eq(u64, model_free(hm), want[k].free_after), "event %d: heap %u", k, e->heap);
  }
  cr_assert(eq(u64, seen.ev[1].old_ptr, (uintptr_t)p), "the moving realloc has both pointers");
  cr_assert(eq(u64, seen.ev[2].align, 256));
  cr_assert(eq(u32, seen.ev[6].failed_op, HT_OP_MALLOC));
  cr_assert(eq(str, seen.site_type[seen.ev[7].site], "thing_t"), "HT_NEW's site has the type");
  cr_assert(eq(i64, seen.ev[n - 1].cur_blocks, 0));
  cr_assert(eq(i64, seen.ev[n - 1].cur_bytes, 0));
}
