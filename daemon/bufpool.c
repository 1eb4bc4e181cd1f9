/* bufpool.c - buffers cut from slabs kept for reuse (bufpool.h).
 *
 * A slab starts with its header; buffers are cut one after the other past
 * it, each behind a header naming its slab (none, for a plain allocation).
 * Both headers keep malloc's alignment. A slab counts the buffers out of it:
 * once the last is given back, the slab is cut again from its start if it
 * is the current one, else kept or freed.
 */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS, MAP_POPULATE */
#include <stdalign.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "bufpool.h"

struct htd_slab {
  alignas(max_align_t) htd_slab_t *next; /* in the kept list */
  size_t used;                           /* bytes cut, this header included */
  size_t live;                           /* buffers out */
};

typedef struct {
  alignas(max_align_t) htd_slab_t *slab; /* NULL: a plain allocation */
} buf_hdr_t;

/* The most a slab can give one buffer, its header included (a multiple of
 * the alignment, as both headers are). */
#define MAX_CUT (HTD_BUFPOOL_SLAB - sizeof(htd_slab_t))

/* A new slab, its pages there at once: one call instead of a fault per
 * page while the loop cuts it. NULL when out of memory. */
static htd_slab_t *slab_map(void) {
  void *s = mmap(NULL, HTD_BUFPOOL_SLAB, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  return s == MAP_FAILED ? NULL : s;
}

static void slab_unmap(htd_slab_t *s) {
  munmap(s, HTD_BUFPOOL_SLAB);
}

static size_t aligned(size_t n) {
  return (n + alignof(max_align_t) - 1) & ~(alignof(max_align_t) - 1);
}

void htd_bufpool_init(htd_bufpool_t *p, size_t keep_max, unsigned idle_max) {
  *p = (htd_bufpool_t){.keep_max = keep_max, .idle_max = idle_max};
}

/* An empty slab to cut from: a kept one, else a new one; NULL when out of
 * memory. */
static htd_slab_t *slab_take(htd_bufpool_t *p) {
  htd_slab_t *s = p->kept;
  if (s) {
    p->kept = s->next;
    p->kept_bytes -= HTD_BUFPOOL_SLAB;
  } else if (!(s = slab_map())) {
    return NULL;
  }
  *s = (htd_slab_t){.used = sizeof *s};
  return s;
}

/* s has no buffer out and is not the current slab: kept, if there is room. */
static void slab_done(htd_bufpool_t *p, htd_slab_t *s) {
  if (p->kept_bytes + HTD_BUFPOOL_SLAB > p->keep_max) {
    slab_unmap(s);
    return;
  }
  s->next = p->kept;
  p->kept = s;
  p->kept_bytes += HTD_BUFPOOL_SLAB;
}

void *htd_bufpool_get(htd_bufpool_t *p, size_t len) {
  p->idle = 0;
  if (len > MAX_CUT - sizeof(buf_hdr_t)) {
    buf_hdr_t *h = malloc(sizeof *h + len);
    if (!h)
      return NULL;
    h->slab = NULL;
    return h + 1;
  }
  size_t need = aligned(sizeof(buf_hdr_t) + len);
  htd_slab_t *s = p->cur;
  if (s && s->live == 0)
    s->used = sizeof *s; /* all given back: cut from the start again */
  if (!s || s->used + need > HTD_BUFPOOL_SLAB) {
    /* s has buffers out: the last one given back lets it go */
    if (!(s = slab_take(p)))
      return NULL;
    p->cur = s;
  }
  buf_hdr_t *h = (buf_hdr_t *)((char *)s + s->used);
  s->used += need;
  s->live++;
  h->slab = s;
  return h + 1;
}

void htd_bufpool_put(htd_bufpool_t *p, void *buf) {
  if (!buf)
    return;
  buf_hdr_t *h = (buf_hdr_t *)buf - 1;
  htd_slab_t *s = h->slab;
  if (!s) {
    free(h);
    return;
  }
  if (--s->live == 0 && s != p->cur)
    slab_done(p, s);
}

void htd_bufpool_tick(htd_bufpool_t *p) {
  int holds = p->kept || (p->cur && p->cur->live == 0);
  if (holds && ++p->idle >= p->idle_max)
    htd_bufpool_release(p);
}

void htd_bufpool_release(htd_bufpool_t *p) {
  while (p->kept) {
    htd_slab_t *s = p->kept;
    p->kept = s->next;
    slab_unmap(s);
  }
  p->kept_bytes = 0;
  if (p->cur && p->cur->live == 0) {
    slab_unmap(p->cur);
    p->cur = NULL;
  }
  p->idle = 0;
}
