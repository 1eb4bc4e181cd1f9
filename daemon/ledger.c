/* ledger.c - the ledger of received events (ledger.h).
 *
 * The file: a 64-byte header (magic, layout version, entry size, number of
 * entries), then the entries, its blocks reserved (posix_fallocate). It
 * grows by doubling (posix_fallocate, mremap) when every entry is taken, up
 * to LEDGER_MAX_ENTRIES. An entry's session is
 * written last when it is taken and first when it is freed, so that a
 * daemon killed between two stores leaves either a whole entry or a free
 * one.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* mremap */
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "htd.h"
#include "ledger.h"

#define LEDGER_MAGIC "HTLEDGER"
#define LEDGER_LAYOUT 1u
#define LEDGER_FIRST_ENTRIES 1024u
#define LEDGER_MAX_ENTRIES 65536u /* 16 MiB */

_Static_assert(sizeof(htd_ledger_entry_t) == 256, "an entry's layout is the file's");

typedef struct {
  char magic[8];
  uint32_t layout, entry_size, entries, reserved;
  uint8_t pad[40];
} header_t;
_Static_assert(sizeof(header_t) == 64, "the header's layout is the file's");

struct htd_ledger {
  int fd;
  char path[4096];
  header_t *map;
  size_t map_len;
  htd_ledger_entry_t *entries; /* right after the header */
  uint32_t cap;
  uint32_t used;
  uint32_t hint; /* where to look for a free entry first */
  htd_ledger_entry_t *left;
  size_t nleft;
  int full_said;
};

static size_t map_bytes(uint32_t entries) {
  return sizeof(header_t) + (size_t)entries * sizeof(htd_ledger_entry_t);
}

static void set_session(htd_ledger_entry_t *e, int64_t session) {
  __atomic_store_n(&e->session, session, __ATOMIC_RELEASE);
}

/* 1 when the file is a ledger of this layout, whole (a growth that failed
 * may have left it longer). */
static int looks_right(const header_t *h, size_t file_len) {
  return memcmp(h->magic, LEDGER_MAGIC, sizeof h->magic) == 0 && h->layout == LEDGER_LAYOUT &&
         h->entry_size == sizeof(htd_ledger_entry_t) && h->entries >= 1 &&
         h->entries <= LEDGER_MAX_ENTRIES && map_bytes(h->entries) <= file_len;
}

static void start_afresh(htd_ledger_t *l) {
  memset(l->map, 0, l->map_len);
  memcpy(l->map->magic, LEDGER_MAGIC, sizeof l->map->magic);
  l->map->layout = LEDGER_LAYOUT;
  l->map->entry_size = sizeof(htd_ledger_entry_t);
  l->map->entries = l->cap;
}

/* Copies the entries in use aside: htd_ledger_left's. They stay taken in
 * the file until settled, so that a daemon killed before it accounted for
 * them leaves them again. */
static int keep_left(htd_ledger_t *l) {
  for (uint32_t i = 0; i < l->cap; i++)
    if (l->entries[i].session > 0)
      l->nleft++;
    else if (l->entries[i].session != 0)
      set_session(&l->entries[i], 0); /* not a session id: nothing to account for */
  if (!l->nleft)
    return 0;
  l->left = calloc(l->nleft, sizeof *l->left);
  if (!l->left)
    return -1;
  size_t n = 0;
  for (uint32_t i = 0; i < l->cap; i++) {
    if (l->entries[i].session <= 0)
      continue;
    l->left[n] = l->entries[i];
    l->left[n].app[HTD_LEDGER_APP - 1] = '\0';
    l->left[n].exe[HTD_LEDGER_EXE - 1] = '\0';
    n++;
  }
  l->used = (uint32_t)n;
  return 0;
}

htd_ledger_t *htd_ledger_open(const char *path, char *msg, size_t msglen) {
  htd_ledger_t *l = calloc(1, sizeof *l);
  if (!l) {
    snprintf(msg, msglen, "out of memory");
    return NULL;
  }
  snprintf(l->path, sizeof l->path, "%s", path);
  l->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  struct stat sb;
  if (l->fd < 0 || fstat(l->fd, &sb) != 0) {
    snprintf(msg, msglen, "cannot open the ledger %s: %s", path, strerror(errno));
    goto fail;
  }
  if (!S_ISREG(sb.st_mode)) {
    snprintf(msg, msglen, "the ledger %s is not a regular file; remove it", path);
    goto fail;
  }
  header_t h = {0};
  int fresh = 1;
  if ((size_t)sb.st_size >= sizeof h && pread(l->fd, &h, sizeof h, 0) == (ssize_t)sizeof h &&
      looks_right(&h, (size_t)sb.st_size)) {
    l->cap = h.entries;
    fresh = 0;
  } else {
    if (sb.st_size > 0)
      htd_log(HTD_LOG_WARN, "ledger %s is not a ledger this heaptraced wrote; starting it afresh",
              path);
    l->cap = LEDGER_FIRST_ENTRIES;
  }
  l->map_len = map_bytes(l->cap);
  /* Its blocks are reserved, not left sparse: a store into a page of a
   * mapped file that the disk has no room for is SIGBUS. */
  int err = (size_t)sb.st_size > l->map_len && ftruncate(l->fd, (off_t)l->map_len) != 0
                ? errno
                : posix_fallocate(l->fd, 0, (off_t)l->map_len);
  if (err != 0) {
    snprintf(msg, msglen, "cannot reserve %zu bytes for the ledger %s: %s", l->map_len, path,
             strerror(err));
    goto fail;
  }
  void *m = mmap(NULL, l->map_len, PROT_READ | PROT_WRITE, MAP_SHARED, l->fd, 0);
  if (m == MAP_FAILED) {
    snprintf(msg, msglen, "cannot map the ledger %s: %s", path, strerror(errno));
    goto fail;
  }
  l->map = m;
  l->entries = (htd_ledger_entry_t *)(l->map + 1);
  if (fresh)
    start_afresh(l);
  else if (keep_left(l) != 0) {
    snprintf(msg, msglen, "out of memory reading the ledger %s", path);
    goto fail;
  }
  return l;
fail:
  htd_ledger_close(l);
  return NULL;
}

const htd_ledger_entry_t *htd_ledger_left(const htd_ledger_t *l, size_t *n) {
  *n = l ? l->nleft : 0;
  return l ? l->left : NULL;
}

void htd_ledger_settle(htd_ledger_t *l) {
  if (!l)
    return;
  for (size_t i = 0; i < l->nleft; i++)
    htd_ledger_finish(l, l->left[i].session);
  free(l->left);
  l->left = NULL;
  l->nleft = 0;
}

/* Doubles the file and its mapping. Returns 0, or -1 (logged once). */
static int grow(htd_ledger_t *l) {
  uint32_t ncap = l->cap * 2;
  int err = ncap > LEDGER_MAX_ENTRIES
                ? -1
                : posix_fallocate(l->fd, (off_t)l->map_len, (off_t)(map_bytes(ncap) - l->map_len));
  /* A file left longer than its header says is read as the header says. */
  if (err > 0 && ftruncate(l->fd, (off_t)l->map_len) != 0)
    err = errno;
  const char *why = err < 0 ? "it holds as many sessions as it may" : err ? strerror(err) : NULL;
  void *m = why ? MAP_FAILED : mremap(l->map, l->map_len, map_bytes(ncap), MREMAP_MAYMOVE);
  if (!why && m == MAP_FAILED)
    why = strerror(errno);
  if (why) {
    if (!l->full_said)
      htd_log(HTD_LOG_WARN,
              "ledger %s cannot grow (%s): a daemon killed now would leave more sessions' "
              "unstored events uncounted",
              l->path, why);
    l->full_said = 1;
    return -1;
  }
  l->map = m;
  l->entries = (htd_ledger_entry_t *)(l->map + 1);
  l->map_len = map_bytes(ncap);
  l->hint = l->cap;
  l->cap = ncap;
  l->map->entries = ncap; /* the new entries are zero: free */
  return 0;
}

/* Copies what a client sent as well-formed UTF-8 (as htd_strndup does: a
 * byte that is not becomes U+FFFD), as many whole characters as fit. */
static void copy_str(char *dst, size_t cap, ht_str_t s) {
  size_t o = 0;
  for (size_t i = 0; i < s.len;) {
    size_t len = ht_utf8_char((const uint8_t *)s.s + i, s.len - i);
    const char *from = len ? s.s + i : "\xef\xbf\xbd";
    size_t n = len ? len : 3;
    if (o + n > cap - 1)
      break;
    memcpy(dst + o, from, n);
    o += n;
    i += len ? len : 1;
  }
  dst[o] = '\0';
}

int htd_ledger_begin(htd_ledger_t *l, int64_t session, const ht_hello_t *h) {
  if (!l || session <= 0 || (l->used == l->cap && grow(l) != 0))
    return -1;
  uint32_t i = l->hint;
  while (l->entries[i % l->cap].session != 0)
    i++;
  i %= l->cap;
  htd_ledger_entry_t *e = &l->entries[i];
  htd_ledger_entry_t v = {0};
  v.start_ns = (int64_t)h->start_realtime_ns;
  v.start_mono_ns = (int64_t)h->start_mono_ns;
  v.pid = h->pid;
  v.ppid = h->ppid;
  v.flags = h->flags;
  copy_str(v.app, sizeof v.app, h->app);
  copy_str(v.exe, sizeof v.exe, h->exe);
  *e = v; /* session 0 still: free until the store below */
  set_session(e, session);
  l->used++;
  l->hint = (i + 1) % l->cap;
  return (int)i;
}

void htd_ledger_add(htd_ledger_t *l, int idx, uint64_t events, uint64_t dropped,
                    uint64_t undelivered) {
  if (!l || idx < 0 || (uint32_t)idx >= l->cap)
    return;
  htd_ledger_entry_t *e = &l->entries[idx];
  e->events += events;
  e->dropped += dropped;
  e->undelivered += undelivered;
}

void htd_ledger_finish(htd_ledger_t *l, int64_t session) {
  if (!l || session <= 0)
    return;
  for (uint32_t i = 0; i < l->cap; i++) {
    if (l->entries[i].session != session)
      continue;
    set_session(&l->entries[i], 0);
    l->used--;
    return;
  }
}

size_t htd_ledger_sessions(const htd_ledger_t *l) {
  return l ? l->used : 0;
}

void htd_ledger_close(htd_ledger_t *l) {
  if (!l)
    return;
  if (l->map)
    munmap(l->map, l->map_len);
  if (l->fd >= 0)
    close(l->fd);
  free(l->left);
  free(l);
}
