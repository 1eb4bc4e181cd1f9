/* model.h - everything heapctl reports about a session, computed from its
 * events replayed in time order.
 *
 * One pass over the events maintains: the live blocks, totals and the
 * peak; per call site, per requested caps and per heap counters; for each
 * bounded heap (a registered region) its exact free space at every
 * instant (heapmodel.h), hence its lifetime low-water mark and worst
 * fragmentation; for caps masks, the minimum over time of the free bytes
 * summed over the heaps that can serve the mask; and a timeline sampled
 * per heap. The daemon stores the result as a session summary; queries on
 * a session without one build the model on the spot.
 */
#ifndef HTQ_MODEL_H
#define HTQ_MODEL_H

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

#include "heapmodel.h"
#include "query.h"

/* A summary written by another version of the model is not used: the
 * session is analysed again. Bump when what the model computes changes. */
#define HTQ_MODEL_VERSION 2
#define HTQ_SAMPLE_NS 1000000ull /* timeline: at most one sample per heap per ms */
#define HTQ_MAX_SAMPLES 20000    /* per heap; the interval doubles past this */
#define HTQ_MAX_HEAPS 64
#define HTQ_MAX_MASKS 96

typedef struct {
  uint32_t id, line;
  char *file, *func, *type;
  uint64_t allocs, frees, bytes, temporary, live_blocks, live_bytes;
  uint64_t live_now, peak_live; /* requested bytes live from this site, and their peak */
} htq_site_t;

/* One timeline point: the state at time t (the last event of its
 * interval), plus the extremes reached within the interval, so that no
 * peak or low-water mark falls between points. */
typedef struct {
  uint64_t t;
  int64_t used, peak_used;
  uint64_t free, min_free, largest, nfree;
} htq_sample_t;

typedef struct {
  uint32_t id;
  char *name;
  uint32_t caps[HT_PROTO_CAPS_PRIOS];
  uint64_t start, size;
  int bounded; /* a region: its free space is modelled */
  htq_heapmodel_t hm;
  uint64_t allocs;
  int64_t used, peak_used; /* requested bytes live */
  uint64_t peak_time;
  /* bounded heaps only */
  uint64_t capacity; /* payload bytes of the empty heap */
  htq_heapview_t now;
  uint64_t min_free, min_free_time, min_free_largest;
  double worst_frag;
  uint64_t worst_frag_time, worst_free, worst_largest, worst_nfree;
  htq_sample_t *samples;
  size_t nsamples, samples_cap;
  uint64_t sample_ns;
  htq_sample_t pending; /* the interval being gathered */
  uint64_t pending_start;
  int has_pending, touched;
} htq_heap_t;

/* The minimum over time of the free bytes summed over the heaps whose caps
 * (at some priority level) contain every bit of mask. */
typedef struct {
  uint32_t mask;
  uint64_t heaps; /* bit i: heaps[i] qualifies */
  uint64_t sum, total, min_sum, min_time;
  int seen;
} htq_mask_t;

typedef struct {
  uint32_t caps;
  uint64_t allocs, bytes, live_blocks, live_bytes;
} htq_capstat_t;

/* The live blocks of one (site, heap, caps), the key every one of them
 * and so its oldest has: the finest grouping of the leaks, so that each
 * grouping heapctl offers (by site, type, caps or heap) is a sum of these. */
typedef struct {
  uint64_t blocks, bytes; /* requested bytes */
  htq_block_t oldest;     /* the group's sample; its site, heap and caps are the key */
} htq_leak_t;

typedef struct {
  uint32_t id;
  int64_t bytes, blocks; /* the client's running totals, last seen */
  uint64_t last_alloc;   /* ptr of the stream's previous event if it allocated */
} htq_stream_t;

typedef struct {
  htq_livemap_t live; /* empty in a model loaded from a summary */
  htq_leak_t *leaks;  /* by (site, heap, caps); NULL until htq_model_leaks */
  size_t nleaks;
  htq_site_t *sites;
  size_t nsites;
  htq_heap_t heaps[HTQ_MAX_HEAPS]; /* heaps[0] is the system heap */
  size_t nheaps;
  htq_mask_t masks[HTQ_MAX_MASKS];
  size_t nmasks;
  htq_capstat_t *caps;
  size_t ncaps, caps_cap;
  htq_stream_t *streams;
  size_t nstreams, streams_cap, stream_hint;
  uint64_t events, allocs, frees, reallocs, failed, unmatched, replaced, temporary;
  int64_t cur_bytes, cur_blocks, cur_usable, peak_bytes, peak_blocks;
  uint64_t peak_time, total_bytes, first_time, last_time;
  uint64_t since, until; /* window for minima (0 = whole session) */
  int oom;
} htq_model_t;

/* Loads the session's sites and heaps; the model is then fed events. */
int htq_model_init(htq_model_t *m, sqlite3 *db, int64_t session, char *err, size_t errlen);
/* Adds a caps mask to track (before feeding events). */
void htq_model_track_mask(htq_model_t *m, uint32_t mask);
int htq_model_event(const ht_event_t *ev, void *model); /* an htq_event_fn */
/* Replays the session's events into an initialised model. */
int htq_model_build(htq_model_t *m, sqlite3 *db, int64_t session, char *err, size_t errlen);
void htq_model_free(htq_model_t *m);

/* Groups the live blocks of a model built from events by (site, heap,
 * caps) into m->leaks, in that order; a model loaded from a summary has
 * them already. Returns 0, or -1 out of memory. */
int htq_model_leaks(htq_model_t *m);

htq_site_t *htq_model_site(htq_model_t *m, uint32_t id);
htq_heap_t *htq_model_heap(htq_model_t *m, uint32_t id);
/* Appends a point to h's time series. Returns 0, or -1 out of memory. */
int htq_heap_add_sample(htq_heap_t *h, const htq_sample_t *p);

#endif
