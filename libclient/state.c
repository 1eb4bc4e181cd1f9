/* state.c - ht_get_state / ht_set_state (glibc's malloc_get_state).
 *
 * The blob is the library's bookkeeping, little-endian, in mmap'd memory:
 *
 *   header  "HTST" | u16 version | u16 flags (0) | u32 length | u32 ~length
 *           | u32 crc32 (IEEE, over the whole blob with this field 0) | u32 0
 *   totals  7 x u64: allocs frees reallocs failures cur_bytes cur_blocks
 *           total_bytes
 *   types   u32 n, then n x { str name | 6 x u64: allocs bytes cur_blocks
 *           cur_bytes peak_blocks peak_bytes }
 *   sites   u32 n, then n x { str file | u32 line | str func | str type
 *           | u64 calls | u64 bytes }
 *   heaps   u32 n, then n x { u32 id | u64 total | u64 min_free | str name }
 *
 * where str is u16 length + bytes. ht_set_state() checks, in this order,
 * the magic, that length and ~length agree (so a damaged length is never
 * used to read), the length bounds, the checksum, then the version (-2 only
 * for an intact blob from a newer version), then parses everything with a
 * bounds-checked cursor and checks the content for consistency - all
 * before changing anything. Any single damaged byte fails the checksum.
 *
 * Restored names must outlive the blob: new ones are copied into an
 * append-only arena; names already interned are reused, so restoring the
 * same blob again does not grow it.
 */
#define _GNU_SOURCE
#include <string.h>
#include <sys/mman.h>

#include "caps.h"

#define STATE_MAGIC "HTST"
#define STATE_HEADER 24
#define STATE_MIN (STATE_HEADER + 7 * 8 + 3 * 4)
#define STATE_MAX ((size_t)64 << 20)
#define STATE_STR_MAX 4096
#define ARENA_BYTES ((size_t)16 << 20)

static pthread_mutex_t state_lock = PTHREAD_MUTEX_INITIALIZER;
static char *arena;
static size_t arena_used;

/* ======================================================================
 * Helpers
 * ==================================================================== */

static uint32_t crc_update(uint32_t c, const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    c ^= p[i];
    for (int k = 0; k < 8; k++)
      c = (c >> 1) ^ (0xedb88320u & -(c & 1u));
  }
  return c;
}

uint32_t ht__state_crc(const uint8_t *b, size_t len) {
  static const uint8_t zero[4];
  uint32_t c = crc_update(0xffffffffu, b, 16);
  c = crc_update(c, zero, sizeof zero);
  return ~crc_update(c, b + 20, len - 20);
}

static uint32_t le32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void *map(size_t bytes) {
  void *m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  return m == MAP_FAILED ? NULL : m;
}

/* ======================================================================
 * ht_get_state
 * ==================================================================== */

/* Everything a blob holds, gathered before it is sized and written. */
typedef struct {
  ht_totals_t totals;
  ht_type_stats_t types[HT_TYPE_MAX];
  uint32_t ntypes;
  uint64_t calls[HT_ACCT_SITES], bytes[HT_ACCT_SITES];
  uint32_t nsites;
  struct {
    uint32_t id;
    uint64_t total, min_free;
    const char *name;
  } heaps[HT_HEAP_MAX];
  uint32_t nheaps;
} gather_t;

static void gather(gather_t *g) {
  ht_get_totals(&g->totals);
  g->ntypes = ht__type_snapshot(g->types, HT_TYPE_MAX);
  g->nsites = ht__acct_site_count();
  ht__acct_site_totals(g->calls, g->bytes, g->nsites);
  g->nheaps = ht__nheaps();
  for (uint32_t i = 0; i < g->nheaps; i++) {
    ht_heap_t *h = &ht__heaps[i];
    pthread_mutex_lock(&h->lock);
    g->heaps[i].min_free = h->min_free;
    pthread_mutex_unlock(&h->lock);
    g->heaps[i].id = h->id;
    g->heaps[i].total = h->total;
    g->heaps[i].name = h->name;
  }
}

/* A writer whose first pass, with no buffer, only counts. */
typedef struct {
  uint8_t *p;
  size_t len;
} wr_t;

static void put_le(wr_t *w, uint64_t v, int n) {
  for (int i = 0; i < n; i++, w->len++)
    if (w->p)
      w->p[w->len] = (uint8_t)(v >> (8 * i));
}

static void put_u32(wr_t *w, uint32_t v) {
  put_le(w, v, 4);
}
static void put_u64(wr_t *w, uint64_t v) {
  put_le(w, v, 8);
}

static void put_s(wr_t *w, const char *s) {
  size_t n = s ? strnlen(s, STATE_STR_MAX) : 0;
  put_le(w, n, 2);
  if (w->p && n)
    memcpy(w->p + w->len, s, n);
  w->len += n;
}

/* Writes the body after the header; with a NULL buffer only sizes it. */
static void write_body(wr_t *w, const gather_t *g) {
  const ht_totals_t *t = &g->totals;
  uint64_t tv[7] = {t->allocs,
                    t->frees,
                    t->reallocs,
                    t->failures,
                    (uint64_t)t->cur_bytes,
                    (uint64_t)t->cur_blocks,
                    t->total_bytes};
  for (int i = 0; i < 7; i++)
    put_u64(w, tv[i]);
  put_u32(w, g->ntypes);
  for (uint32_t i = 0; i < g->ntypes; i++) {
    const ht_type_stats_t *s = &g->types[i];
    put_s(w, s->name);
    uint64_t v[6] = {s->allocs,
                     s->bytes,
                     (uint64_t)s->cur_blocks,
                     (uint64_t)s->cur_bytes,
                     (uint64_t)s->peak_blocks,
                     (uint64_t)s->peak_bytes};
    for (int k = 0; k < 6; k++)
      put_u64(w, v[k]);
  }
  put_u32(w, g->nsites ? g->nsites - 1 : 0);
  for (uint32_t i = 1; i < g->nsites; i++) {
    ht_site_info_t si = {NULL, NULL, NULL, 0, 0};
    ht__acct_site_info(i, &si);
    put_s(w, si.file);
    put_u32(w, (uint32_t)si.line);
    put_s(w, si.func);
    put_s(w, si.type);
    put_u64(w, g->calls[i]);
    put_u64(w, g->bytes[i]);
  }
  put_u32(w, g->nheaps);
  for (uint32_t i = 0; i < g->nheaps; i++) {
    put_u32(w, g->heaps[i].id);
    put_u64(w, g->heaps[i].total);
    put_u64(w, g->heaps[i].min_free);
    put_s(w, g->heaps[i].name);
  }
}

void *ht_get_state(void) {
  gather_t *g = map(sizeof *g);
  if (!g)
    return NULL;
  gather(g);
  wr_t w = {NULL, STATE_HEADER};
  write_body(&w, g);
  size_t len = w.len;
  uint8_t *blob = len <= STATE_MAX ? map(len) : NULL;
  if (blob) {
    w = (wr_t){blob, 0};
    memcpy(blob, STATE_MAGIC, 4);
    w.len = 4;
    put_le(&w, HT_STATE_VERSION, 2);
    put_le(&w, 0, 2); /* flags */
    put_u32(&w, (uint32_t)len);
    put_u32(&w, ~(uint32_t)len);
    put_u32(&w, 0); /* crc, below */
    put_u32(&w, 0); /* reserved */
    write_body(&w, g);
    put_u32(&(wr_t){blob, 16}, ht__state_crc(blob, len));
  }
  munmap(g, sizeof *g);
  return blob;
}

size_t ht_state_size(const void *state) {
  const uint8_t *b = state;
  if (!b || memcmp(b, STATE_MAGIC, 4) != 0 || le32(b + 8) != ~le32(b + 12))
    return 0;
  return le32(b + 8);
}

void ht_free_state(void *state) {
  size_t len = ht_state_size(state);
  if (len)
    munmap(state, len);
}

/* ======================================================================
 * ht_set_state
 * ==================================================================== */

typedef struct {
  ht_str_t file, func, type;
  uint32_t line;
  uint64_t calls, bytes;
} site_in_t;

/* A parsed blob, checked but not applied. */
typedef struct {
  ht_totals_t totals;
  ht_type_stats_t types[HT_TYPE_MAX];
  ht_str_t type_names[HT_TYPE_MAX];
  uint32_t ntypes;
  site_in_t sites[HT_ACCT_SITES];
  uint32_t nsites;
  struct {
    uint32_t id;
    uint64_t total, min_free;
  } heaps[HT_HEAP_MAX];
  uint32_t nheaps;
  size_t string_bytes; /* arena bytes the new names could need */
} parsed_t;

/* Reads a string: bounded, no NUL inside. */
static ht_str_t get_s(ht_cur_t *c, parsed_t *p) {
  ht_str_t s = ht_get_str(c);
  if (!c->err && (s.len > STATE_STR_MAX || memchr(s.s, '\0', s.len)))
    c->err = HT_ESTATE;
  p->string_bytes += s.len + 1;
  return s;
}

static int parse_types(ht_cur_t *c, parsed_t *p) {
  p->ntypes = ht_get_u32(c);
  if (c->err || p->ntypes >= HT_TYPE_MAX)
    return -1;
  for (uint32_t i = 0; i < p->ntypes && !c->err; i++) {
    ht_type_stats_t *s = &p->types[i];
    p->type_names[i] = get_s(c, p);
    s->allocs = ht_get_u64(c);
    s->bytes = ht_get_u64(c);
    s->cur_blocks = (int64_t)ht_get_u64(c);
    s->cur_bytes = (int64_t)ht_get_u64(c);
    s->peak_blocks = (int64_t)ht_get_u64(c);
    s->peak_bytes = (int64_t)ht_get_u64(c);
    if (p->type_names[i].len == 0 || s->cur_blocks < 0 || s->cur_bytes < 0 ||
        s->cur_blocks > s->peak_blocks || s->cur_bytes > s->peak_bytes ||
        (uint64_t)s->peak_blocks > s->allocs || (uint64_t)s->peak_bytes > s->bytes)
      return -1;
  }
  return c->err ? -1 : 0;
}

static int parse_sites(ht_cur_t *c, parsed_t *p) {
  p->nsites = ht_get_u32(c);
  if (c->err || p->nsites >= HT_ACCT_SITES)
    return -1;
  for (uint32_t i = 0; i < p->nsites && !c->err; i++) {
    site_in_t *s = &p->sites[i];
    s->file = get_s(c, p);
    s->line = ht_get_u32(c);
    s->func = get_s(c, p);
    s->type = get_s(c, p);
    s->calls = ht_get_u64(c);
    s->bytes = ht_get_u64(c);
    if (s->line > INT32_MAX)
      return -1;
  }
  return c->err ? -1 : 0;
}

static int parse_heaps(ht_cur_t *c, parsed_t *p) {
  p->nheaps = ht_get_u32(c);
  if (c->err || p->nheaps > HT_HEAP_MAX)
    return -1;
  for (uint32_t i = 0; i < p->nheaps && !c->err; i++) {
    p->heaps[i].id = ht_get_u32(c);
    p->heaps[i].total = ht_get_u64(c);
    p->heaps[i].min_free = ht_get_u64(c);
    ht_str_t name = get_s(c, p);
    if (p->heaps[i].id == 0 || p->heaps[i].id > HT_HEAP_MAX ||
        p->heaps[i].min_free > p->heaps[i].total || name.len > HT_HEAP_NAME_MAX)
      return -1;
  }
  return c->err ? -1 : 0;
}

/* Parses and checks the body. Returns 0 or -1. */
static int parse(const uint8_t *b, size_t len, parsed_t *p) {
  ht_cur_t c;
  ht_cur_init(&c, b + STATE_HEADER, len - STATE_HEADER);
  ht_totals_t *t = &p->totals;
  t->allocs = ht_get_u64(&c);
  t->frees = ht_get_u64(&c);
  t->reallocs = ht_get_u64(&c);
  t->failures = ht_get_u64(&c);
  t->cur_bytes = (int64_t)ht_get_u64(&c);
  t->cur_blocks = (int64_t)ht_get_u64(&c);
  t->total_bytes = ht_get_u64(&c);
  if (c.err || t->cur_blocks != (int64_t)(t->allocs - t->frees) || t->cur_bytes < 0 ||
      (uint64_t)t->cur_bytes > t->total_bytes)
    return -1;
  if (parse_types(&c, p) || parse_sites(&c, p) || parse_heaps(&c, p))
    return -1;
  return c.off == c.len ? 0 : -1;
}

/* Checks the header of a blob of at most size bytes. Returns the blob's
 * length, or -1 / -2. */
static long check_header(const uint8_t *b, size_t size) {
  if (size < STATE_HEADER || memcmp(b, STATE_MAGIC, 4) != 0)
    return -1;
  uint32_t len = le32(b + 8);
  if (len != ~le32(b + 12) || len < STATE_MIN || len > STATE_MAX || len > size)
    return -1;
  if (le32(b + 16) != ht__state_crc(b, len) || le32(b + 20) != 0)
    return -1;
  uint16_t version = (uint16_t)(b[4] | b[5] << 8);
  if (version > HT_STATE_VERSION)
    return -2;
  if (version == 0 || b[6] || b[7])
    return -1;
  return (long)len;
}

/* A NUL-terminated copy of s in the arena. state_lock held. */
static const char *arena_dup(ht_str_t s) {
  char *d = arena + arena_used;
  memcpy(d, s.s, s.len);
  d[s.len] = '\0';
  arena_used += s.len + 1;
  return d;
}

/* A stable copy of s: the interned type name if there is one. */
static const char *stable_type(ht_str_t s) {
  char tmp[STATE_STR_MAX + 1];
  memcpy(tmp, s.s, s.len);
  tmp[s.len] = '\0';
  ht_type_stats_t st;
  return ht_get_type_stats(tmp, &st) == 0 ? st.name : arena_dup(s);
}

/* Interns the blob's site i, reusing an interned one with equal strings. */
static uint32_t intern_site(const site_in_t *s) {
  char file[STATE_STR_MAX + 1], func[STATE_STR_MAX + 1], type[STATE_STR_MAX + 1];
  memcpy(file, s->file.s, s->file.len);
  file[s->file.len] = '\0';
  memcpy(func, s->func.s, s->func.len);
  func[s->func.len] = '\0';
  memcpy(type, s->type.s, s->type.len);
  type[s->type.len] = '\0';
  const char *ty = s->type.len ? type : NULL;
  uint32_t k = ht__acct_site_find(file, (int)s->line, func, ty);
  if (k)
    return k;
  const char *sty = ty ? stable_type(s->type) : NULL;
  return ht__acct_site(arena_dup(s->file), (int)s->line, arena_dup(s->func), sty);
}

/* Restores the heaps' minima: a heap with the same id and size gets the
 * blob's minimum, clamped to its free bytes now (a minimum above the
 * current free size would be a lie). */
static void apply_heaps(const parsed_t *p) {
  for (uint32_t i = 0; i < p->nheaps; i++) {
    ht_heap_t *h = ht_heap_by_id(p->heaps[i].id);
    if (!h || h->total != p->heaps[i].total)
      continue;
    pthread_mutex_lock(&h->lock);
    size_t f = ht__heap_free_locked(h);
    h->min_free = p->heaps[i].min_free < f ? p->heaps[i].min_free : f;
    pthread_mutex_unlock(&h->lock);
  }
}

/* Applies a checked blob. state_lock held; scratch is HT_ACCT_SITES x 2
 * u64 of zeroed memory. */
static void apply(parsed_t *p, uint64_t *calls, uint64_t *bytes) {
  for (uint32_t i = 0; i < p->ntypes; i++)
    p->types[i].name = stable_type(p->type_names[i]);
  ht__type_restore(p->types, p->ntypes);
  for (uint32_t i = 0; i < p->nsites; i++) {
    uint32_t k = intern_site(&p->sites[i]);
    if (k) {
      calls[k] += p->sites[i].calls;
      bytes[k] += p->sites[i].bytes;
    }
  }
  ht__acct_restore(&p->totals, calls, bytes, ht__acct_site_count());
  apply_heaps(p);
}

int ht_set_state(const void *state) {
  return ht_set_state_sized(state, SIZE_MAX);
}

int ht_set_state_sized(const void *state, size_t size) {
  if (!state)
    return -1;
  long len = check_header(state, size);
  if (len < 0)
    return (int)len;
  size_t scratch = sizeof(parsed_t) + 2 * HT_ACCT_SITES * sizeof(uint64_t);
  parsed_t *p = map(scratch);
  if (!p)
    return -1;
  uint64_t *calls = (uint64_t *)(p + 1), *bytes = calls + HT_ACCT_SITES;
  int rc = parse(state, (size_t)len, p);
  pthread_mutex_lock(&state_lock);
  if (rc == 0 && !arena && !(arena = map(ARENA_BYTES)))
    rc = -1;
  if (rc == 0 && p->string_bytes > ARENA_BYTES - arena_used)
    rc = -1; /* more new names than this process can keep */
  if (rc == 0)
    apply(p, calls, bytes);
  pthread_mutex_unlock(&state_lock);
  munmap(p, scratch);
  return rc;
}
