/* sites.c - interning of call sites.
 *
 * A call site (file, line, function, type name) gets a small id the first
 * time it is seen; its SITE record is sent to the daemon right then, before
 * the event that names it is committed, so the daemon always knows a site
 * before it meets it. Each thread keeps a direct-mapped cache keyed by the
 * string pointers the macros pass (stable per call site), so the common
 * case is a few compares and no lock. A miss looks the site up by content
 * in a global open-addressing table in mmap'd memory, under a mutex.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>

#include "client.h"

#define HT_SITE_TABLE (1u << 16) /* power of two; at most 3/4 used */
#define HT_SITE_MAX (HT_SITE_TABLE / 4 * 3)

typedef struct {
  const char *file, *func, *type;
  int line;
  uint32_t id;
  uint64_t hash;
} site_slot_t;

static pthread_mutex_t site_lock = PTHREAD_MUTEX_INITIALIZER;
static site_slot_t *table;
static uint32_t site_count;

static uint64_t hash_str(uint64_t h, const char *s) {
  for (; s && *s; s++)
    h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
  return (h ^ 0xff) * 0x100000001b3ull;
}

static int same_str(const char *a, const char *b) {
  if (a == b)
    return 1;
  return a && b && strcmp(a, b) == 0;
}

static void send_site(uint32_t id, const char *file, int line, const char *func,
                      const char *type) {
  /* Three strings of at most HT_PROTO_MAX_STRING plus small fields. */
  static uint8_t buf[3 * (HT_PROTO_MAX_STRING + 2) + 64];
  ht_wbuf_t w;
  ht_wbuf_init(&w, buf, sizeof buf);
  ht_site_rec_t rec = {id, line > 0 ? (uint32_t)line : 0, ht_str(file), ht_str(func),
                       ht_str(type)};
  ht_proto_put_site(&w, &rec);
  ht__transport_send_record(buf, w.len);
}

/* Global lookup by content; interns on miss. Called with site_lock. */
static uint32_t intern_locked(const char *file, int line, const char *func,
                              const char *type) {
  if (!table) {
    void *m = mmap(NULL, HT_SITE_TABLE * sizeof(site_slot_t), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
      return 0;
    table = m;
  }
  uint64_t h = hash_str(hash_str(hash_str(0xcbf29ce484222325ull ^ (uint64_t)line, file), func), type);
  for (uint32_t i = (uint32_t)h & (HT_SITE_TABLE - 1);; i = (i + 1) & (HT_SITE_TABLE - 1)) {
    site_slot_t *e = &table[i];
    if (e->id == 0) {
      if (site_count >= HT_SITE_MAX)
        return 0;
      *e = (site_slot_t){file, func, type, line, ++site_count, h};
      send_site(e->id, file, line, func, type);
      return e->id;
    }
    if (e->hash == h && e->line == line && same_str(e->file, file) &&
        same_str(e->func, func) && same_str(e->type, type))
      return e->id;
  }
}

uint32_t ht__site_id(ht_stream_t *s, const char *file, int line, const char *func,
                     const char *type) {
  uintptr_t k = (uintptr_t)file ^ ((uintptr_t)func >> 4) ^ ((uintptr_t)type >> 8) ^
                ((uintptr_t)line * 0x9e3779b1u);
  unsigned slot = (unsigned)((k ^ (k >> 11)) & (HT_SITE_CACHE - 1));
  if (HT_LIKELY(s->sites[slot].id != 0 && s->sites[slot].file == file &&
                s->sites[slot].line == line && s->sites[slot].func == func &&
                s->sites[slot].type == type))
    return s->sites[slot].id;
  pthread_mutex_lock(&site_lock);
  uint32_t id = intern_locked(file, line, func, type);
  pthread_mutex_unlock(&site_lock);
  if (id) {
    s->sites[slot].file = file;
    s->sites[slot].func = func;
    s->sites[slot].type = type;
    s->sites[slot].line = line;
    s->sites[slot].id = id;
  }
  return id;
}
