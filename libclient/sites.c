/* sites.c - call sites on the wire.
 *
 * A site's wire id is its accounting index (account.c interns every call
 * site by content): the event carries it, and the SITE record with the
 * site's strings goes to the daemon once per connection, before the first
 * event of that connection naming it -- ht__site_sent[idx] holds the
 * connection epoch it was last sent in, so the common case is one load.
 * A new connection (reconnect, fork child) is a new epoch: every site is
 * sent again as it is used.
 *
 * Sites past the accounting table's capacity get ids from a table here,
 * above HT_WIRE_ACCT_SITES, interned by content under a mutex, with a
 * per-thread cache keyed by the string pointers the macros pass.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>

#include "caps.h"
#include "client.h"

_Atomic uint32_t ht__site_sent[HT_WIRE_ACCT_SITES];

static size_t site_record(uint8_t *buf, size_t cap, uint32_t id, const char *file, int line,
                          const char *func, const char *type) {
  ht_wbuf_t w;
  ht_wbuf_init(&w, buf, cap);
  ht_site_rec_t rec = {id, line > 0 ? (uint32_t)line : 0, ht_str(file), ht_str(func), ht_str(type)};
  ht_proto_put_site(&w, &rec);
  return w.len;
}

/* Sends one SITE record; returns the epoch it went to (0 when it went
 * nowhere). *rc: ht__transport_send_record_epoch's answer. */
static uint32_t send_site(uint32_t id, const char *file, int line, const char *func,
                          const char *type, int *rc) {
  uint8_t buf[HT_SITE_RECORD_MAX]; /* three strings and small fields */
  size_t len = site_record(buf, sizeof buf, id, file, line, func, type);
  uint32_t epoch = 0;
  *rc = ht__transport_send_record_epoch(buf, len, &epoch);
  return epoch;
}

size_t ht__site_record(uint32_t idx, uint8_t *buf, size_t cap) {
  ht_site_info_t si;
  if (cap < HT_SITE_RECORD_MAX || ht__acct_site_info(idx, &si) != 0)
    return 0;
  return site_record(buf, cap, idx, si.file, si.line, si.func, si.type);
}

void ht__site_send_slow(ht_stream_t *s, uint32_t idx) {
  ht_site_info_t si;
  if (ht__acct_site_info(idx, &si) != 0)
    return;
  int rc;
  uint32_t epoch = send_site(idx, si.file, si.line, si.func, si.type, &rc);
  if (epoch)
    atomic_store_explicit(&ht__site_sent[idx], epoch, memory_order_relaxed);
  else if (rc == HT_EAGAIN && !ht__stream_pend_site(s, idx))
    ht__stream_drop_next(s); /* its stream has no room to hold it either */
}

/* ======================================================================
 * Sites past the accounting table
 * ==================================================================== */

#define HT_SITE_TABLE (1u << 16) /* power of two; at most 3/4 used */
#define HT_SITE_MAX (HT_SITE_TABLE / 4 * 3)

typedef struct {
  const char *file, *func, *type;
  int line;
  uint32_t id;
  uint64_t hash;
  _Atomic uint32_t sent; /* epoch the SITE record last went to */
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

/* Global lookup by content; interns on miss. Called with site_lock. */
static site_slot_t *intern_locked(const char *file, int line, const char *func, const char *type) {
  if (!table) {
    void *m = mmap(NULL, HT_SITE_TABLE * sizeof(site_slot_t), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
      return NULL;
    table = m;
  }
  uint64_t h =
      hash_str(hash_str(hash_str(0xcbf29ce484222325ull ^ (uint64_t)line, file), func), type);
  for (uint32_t i = (uint32_t)h & (HT_SITE_TABLE - 1);; i = (i + 1) & (HT_SITE_TABLE - 1)) {
    site_slot_t *e = &table[i];
    if (e->id == 0) {
      if (site_count >= HT_SITE_MAX)
        return NULL;
      e->file = file;
      e->func = func;
      e->type = type;
      e->line = line;
      e->hash = h;
      e->id = HT_WIRE_ACCT_SITES + ++site_count;
      return e;
    }
    if (e->hash == h && e->line == line && same_str(e->file, file) && same_str(e->func, func) &&
        same_str(e->type, type))
      return e;
  }
}

uint32_t ht__site_id(ht_stream_t *s, const char *file, int line, const char *func,
                     const char *type) {
  uintptr_t k = (uintptr_t)file ^ ((uintptr_t)func >> 4) ^ ((uintptr_t)type >> 8) ^
                ((uintptr_t)line * 0x9e3779b1u);
  unsigned slot = (unsigned)((k ^ (k >> 11)) & (HT_SITE_CACHE - 1));
  site_slot_t *e = (site_slot_t *)s->sites[slot].entry;
  if (!e || s->sites[slot].file != file || s->sites[slot].line != line ||
      s->sites[slot].func != func || s->sites[slot].type != type) {
    pthread_mutex_lock(&site_lock);
    e = intern_locked(file, line, func, type);
    pthread_mutex_unlock(&site_lock);
    if (!e)
      return 0;
    s->sites[slot].file = file;
    s->sites[slot].func = func;
    s->sites[slot].type = type;
    s->sites[slot].line = line;
    s->sites[slot].entry = e;
  }
  if (atomic_load_explicit(&e->sent, memory_order_relaxed) != s->epoch_seen) {
    int rc;
    uint32_t epoch = send_site(e->id, file, line, func, type, &rc);
    if (epoch)
      atomic_store_explicit(&e->sent, epoch, memory_order_relaxed);
    else if (rc == HT_EAGAIN)
      ht__stream_drop_next(s); /* rare: past the accounting table; not held */
  }
  return e->id;
}
