/* ingest.c - the state machine of one ingest connection.
 *
 * HELLO must come first and only once; SITE, HEAP, EVENTS and LOST follow
 * in any order; END closes the session. An EVENTS frame is decoded with
 * the stream's delta state, and each event packed (pack.h) into the
 * stream's current chunk as it is decoded; a frame with a bad event is
 * taken back out whole. A chunk is queued to the store, which compresses
 * it, when it is full or when the daemon flushes (timer, END, disconnect).
 *
 * Memory is bounded per session: at most HTD_MAX_STREAMS streams and at
 * most HTD_SESSION_BUFFER bytes held by unflushed chunks.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "chunk.h"
#include "pack.h"
#include "ingest.h"

#define HTD_CHUNK_BYTES (128u * 1024u) /* a chunk is queued past this size */
#define HTD_MAX_STREAMS 65536
#define HTD_SESSION_BUFFER (8u << 20)
/* More events than any process sends in its life: a gap or loss report
 * above this is hostile or corrupt, not a count. */
#define HTD_MAX_LOST (1ull << 40)

typedef struct {
  uint32_t id;
  int used;
  uint64_t next_seq;   /* expected first_seq of the next EVENTS frame */
  ht_evstate_t dec;    /* wire delta state */
  htd_packer_t *chunk; /* the chunk being packed, or NULL */
  size_t chunk_bytes;  /* what it counts for in the session's buffer */
  uint64_t t0, t1;     /* time of its first and last event */
} stream_t;

struct htd_session {
  htd_store_t *st;
  int64_t id;
  uint32_t pid;   /* the handshake's */
  uint16_t flags; /* HT_HELLO_F_* */
  uint16_t version;
  int ended;
  uint64_t events, lost;
  uint64_t reported_events, reported_lost; /* last progress queued */
  stream_t *streams;                       /* open addressing on id, capacity a power of two */
  size_t cap, nstreams;
  size_t buffered; /* bytes held in unflushed chunks */
  int holding;     /* jobs are held, not queued (htd_session_hold) */
  htd_job_t *held, **held_tail;
};

static uint64_t now_realtime_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

htd_session_t *htd_session_new(htd_store_t *st, int64_t id) {
  htd_session_t *s = calloc(1, sizeof *s);
  if (!s)
    return NULL;
  s->st = st;
  s->id = id;
  return s;
}

int64_t htd_session_id(const htd_session_t *s) {
  return s->id;
}
int htd_session_ended(const htd_session_t *s) {
  return s->ended;
}
uint64_t htd_session_events(const htd_session_t *s) {
  return s->events;
}

void htd_session_hold(htd_session_t *s) {
  s->holding = 1;
  s->held = NULL;
  s->held_tail = &s->held;
}

void htd_session_submit_held(htd_session_t *s) {
  s->holding = 0;
  htd_store_submit_all(s->st, s->held);
  s->held = NULL;
}

/* Queues job j of session s, or holds it. */
static void submit(htd_session_t *s, htd_job_t *j) {
  if (!s->holding) {
    htd_store_submit(s->st, j);
    return;
  }
  j->next = NULL;
  *s->held_tail = j;
  s->held_tail = &j->next;
}

void htd_session_free(htd_session_t *s) {
  if (!s)
    return;
  htd_job_free_all(s->held);
  for (size_t i = 0; i < s->cap; i++)
    htd_packer_free(s->streams[i].chunk);
  free(s->streams);
  free(s);
}

/* ======================================================================
 * Streams and chunks
 * ==================================================================== */

static stream_t *stream_find(htd_session_t *s, uint32_t id, int create) {
  if (s->cap) {
    for (size_t i = id & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
      if (!s->streams[i].used)
        break;
      if (s->streams[i].id == id)
        return &s->streams[i];
    }
  }
  if (!create || s->nstreams >= HTD_MAX_STREAMS)
    return NULL;
  if ((s->nstreams + 1) * 2 > s->cap) {
    size_t ncap = s->cap ? s->cap * 2 : 16;
    stream_t *n = calloc(ncap, sizeof *n);
    if (!n)
      return NULL;
    for (size_t i = 0; i < s->cap; i++) {
      if (!s->streams[i].used)
        continue;
      size_t j = s->streams[i].id & (ncap - 1);
      while (n[j].used)
        j = (j + 1) & (ncap - 1);
      n[j] = s->streams[i];
    }
    free(s->streams);
    s->streams = n;
    s->cap = ncap;
  }
  size_t i = id & (s->cap - 1);
  while (s->streams[i].used)
    i = (i + 1) & (s->cap - 1);
  stream_t *t = &s->streams[i];
  memset(t, 0, sizeof *t);
  t->used = 1;
  t->id = id;
  s->nstreams++;
  return t;
}

/* Queues the stream's chunk; the store owns its bytes from here on. */
static void chunk_flush(htd_session_t *s, stream_t *t) {
  if (!t->chunk)
    return;
  uint64_t count = htd_packer_count(t->chunk);
  size_t len = 0;
  uint8_t *blob = count ? htd_packer_finish(t->chunk, &len) : NULL;
  htd_job_t *j = blob ? htd_job_new(HTD_JOB_CHUNK, s->id) : NULL;
  if (j) {
    j->a = t->id;
    j->b = (int64_t)(t->next_seq - count);
    j->c = (int64_t)count;
    j->d = (int64_t)t->t0;
    j->e = (int64_t)t->t1;
    j->blob = blob;
    j->blob_len = len;
    submit(s, j);
  } else if (count) {
    htd_log(HTD_LOG_ERROR, "session %lld: out of memory, %llu events not stored", (long long)s->id,
            (unsigned long long)count);
    free(blob);
  }
  htd_packer_free(t->chunk);
  s->buffered -= t->chunk_bytes;
  t->chunk = NULL;
  t->chunk_bytes = 0;
}

void htd_session_flush(htd_session_t *s) {
  for (size_t i = 0; i < s->cap; i++)
    if (s->streams[i].used)
      chunk_flush(s, &s->streams[i]);
}

/* Starts the stream's chunk, with the state before its first event, when
 * there is none. Returns 0 or ENOMEM. */
static int chunk_start(htd_session_t *s, stream_t *t, uint64_t first_seq) {
  if (t->chunk)
    return 0;
  if (s->buffered + HTD_CHUNK_BYTES > HTD_SESSION_BUFFER)
    htd_session_flush(s);
  t->chunk = htd_packer_new(t->id, first_seq, &t->dec);
  if (!t->chunk)
    return HT_ENOMEM;
  t->chunk_bytes = htd_packer_bytes(t->chunk);
  s->buffered += t->chunk_bytes;
  return 0;
}

/* ======================================================================
 * Records
 * ==================================================================== */

static void record_lost(htd_session_t *s, uint32_t stream, uint64_t first, uint64_t count,
                        const char *why) {
  s->lost += count;
  htd_job_t *j = htd_job_new(HTD_JOB_LOST, s->id);
  if (!j)
    return;
  j->a = stream;
  j->b = (int64_t)first;
  j->c = (int64_t)count;
  j->text[0] = htd_strndup(why, strlen(why));
  submit(s, j);
}

static int on_events(htd_session_t *s, const ht_frame_t *f, char *why, size_t whylen) {
  ht_evreader_t r;
  int rc = ht_proto_events_begin(&r, f->payload, f->payload_len);
  if (rc != 0)
    return rc;
  stream_t *t = stream_find(s, r.hdr.stream, 1);
  if (!t) {
    snprintf(why, whylen, "more than %d streams", HTD_MAX_STREAMS);
    return HT_ELIMIT;
  }
  if (r.hdr.first_seq < t->next_seq) {
    snprintf(why, whylen, "stream %u: sequence went back from %llu to %llu", t->id,
             (unsigned long long)t->next_seq, (unsigned long long)r.hdr.first_seq);
    return HT_EORDER;
  }
  if (r.hdr.first_seq - t->next_seq > HTD_MAX_LOST) {
    snprintf(why, whylen, "stream %u: sequence jumps from %llu to %llu", t->id,
             (unsigned long long)t->next_seq, (unsigned long long)r.hdr.first_seq);
    return HT_ELIMIT;
  }
  if (r.hdr.first_seq > t->next_seq) {
    /* Never hidden: a gap is recorded as lost, and a chunk holds only
     * consecutive events. */
    chunk_flush(s, t);
    record_lost(s, t->id, t->next_seq, r.hdr.first_seq - t->next_seq, "gap");
  }
  if (r.hdr.count == 0)
    return 0;
  if (chunk_start(s, t, r.hdr.first_seq) != 0)
    return HT_ENOMEM;
  /* Events are packed as they are decoded; a frame found bad halfway is
   * taken back out: nothing of it is kept. */
  htd_pack_mark_t mark = htd_packer_mark(t->chunk);
  int first_in_chunk = htd_packer_count(t->chunk) == 0;
  ht_evstate_t st = t->dec;
  ht_event_t ev;
  uint64_t t0 = 0;
  while ((rc = ht_proto_events_next(&r, &st, &ev)) == 1) {
    if (r.done == 1)
      t0 = ev.time_ns;
    if (htd_pack_event(t->chunk, &ev) != 0) {
      rc = HT_ENOMEM;
      break;
    }
  }
  if (rc != 0) {
    htd_packer_cut(t->chunk, &mark);
    chunk_flush(s, t);
    snprintf(why, whylen, "stream %u, event %llu: %s", t->id,
             (unsigned long long)(r.hdr.first_seq + r.done), ht_strerror(rc));
    return rc;
  }
  if (first_in_chunk)
    t->t0 = t0;
  t->t1 = st.time_ns;
  t->dec = st;
  t->next_seq = r.hdr.first_seq + r.hdr.count;
  s->events += r.hdr.count;
  size_t bytes = htd_packer_bytes(t->chunk);
  s->buffered += bytes - t->chunk_bytes;
  t->chunk_bytes = bytes;
  if (bytes >= HTD_CHUNK_BYTES)
    chunk_flush(s, t);
  return 0;
}

static int on_site(htd_session_t *s, const ht_frame_t *f) {
  ht_site_rec_t rec;
  int rc = ht_proto_decode_site(f->payload, f->payload_len, &rec);
  if (rc != 0)
    return rc;
  htd_job_t *j = htd_job_new(HTD_JOB_SITE, s->id);
  if (!j)
    return HT_ENOMEM;
  j->a = rec.id;
  j->b = rec.line;
  j->text[0] = htd_strndup(rec.file.s, rec.file.len);
  j->text[1] = htd_strndup(rec.func.s, rec.func.len);
  j->text[2] = htd_strndup(rec.type.s, rec.type.len);
  submit(s, j);
  return 0;
}

static int on_heap(htd_session_t *s, const ht_frame_t *f) {
  ht_heap_rec_t rec;
  int rc = ht_proto_decode_heap(f->payload, f->payload_len, &rec);
  if (rc != 0)
    return rc;
  htd_job_t *j = htd_job_new(HTD_JOB_HEAP, s->id);
  if (!j)
    return HT_ENOMEM;
  j->a = rec.id;
  j->b = rec.caps[0];
  j->c = rec.caps[1];
  j->d = rec.caps[2];
  j->e = (int64_t)rec.start;
  j->f = (int64_t)rec.size;
  j->text[0] = htd_strndup(rec.name.s, rec.name.len);
  submit(s, j);
  return 0;
}

static int on_lost(htd_session_t *s, const ht_frame_t *f) {
  ht_lost_rec_t rec;
  int rc = ht_proto_decode_lost(f->payload, f->payload_len, &rec);
  if (rc != 0)
    return rc;
  if (rec.count > HTD_MAX_LOST || s->lost + rec.count > HTD_MAX_LOST)
    return HT_ELIMIT;
  record_lost(s, rec.stream, rec.first_seq, rec.count,
              rec.why == HT_LOST_DROPPED ? "dropped" : "undelivered");
  return 0;
}

/* A reconnected client's account of the connection it lost: the store
 * counts as lost, in that connection's session, what was written on it and
 * never read (store.c, once that session has ended). */
static int on_previous(htd_session_t *s, const ht_frame_t *f, char *why, size_t whylen) {
  ht_previous_rec_t rec;
  int rc = ht_proto_decode_previous(f->payload, f->payload_len, s->version, &rec);
  if (rc != 0)
    return rc;
  if (s->version < 3 || !(s->flags & HT_HELLO_F_RECONNECT)) {
    snprintf(why, whylen, "a previous record in a session that continues none");
    return HT_EORDER;
  }
  if (rec.events > HTD_MAX_LOST || rec.reported > HTD_MAX_LOST)
    return HT_ELIMIT;
  htd_job_t *j = htd_job_new(HTD_JOB_UNREAD, s->id);
  if (!j)
    return HT_ENOMEM;
  j->a = s->pid;
  j->b = (int64_t)rec.start_ns;
  j->c = (int64_t)rec.events;
  j->d = (int64_t)rec.reported;
  j->e = s->version >= 4; /* the record counts the connection's reports */
  submit(s, j);
  return 0;
}

static void queue_end(htd_session_t *s, const char *reason, const char *detail) {
  htd_session_flush(s);
  s->ended = 1;
  htd_job_t *j = htd_job_new(HTD_JOB_SESSION_END, s->id);
  if (!j)
    return;
  j->a = (int64_t)s->events;
  j->b = (int64_t)s->lost;
  j->c = (int64_t)now_realtime_ns();
  j->text[0] = htd_strndup(reason, strlen(reason));
  if (detail)
    j->text[1] = htd_strndup(detail, strlen(detail));
  submit(s, j);
}

int htd_session_frame(htd_session_t *s, const ht_frame_t *f, char *why, size_t whylen) {
  why[0] = '\0';
  if (s->ended) {
    snprintf(why, whylen, "%s record after END", ht_record_name(f->type));
    return HT_EORDER;
  }
  int rc;
  switch (f->type) {
  case HT_REC_EVENTS:
    rc = on_events(s, f, why, whylen);
    break;
  case HT_REC_SITE:
    rc = on_site(s, f);
    break;
  case HT_REC_HEAP:
    rc = on_heap(s, f);
    break;
  case HT_REC_LOST:
    rc = on_lost(s, f);
    break;
  case HT_REC_PREVIOUS:
    rc = on_previous(s, f, why, whylen);
    break;
  case HT_REC_HELLO:
    snprintf(why, whylen, "a second handshake");
    return HT_EORDER;
  case HT_REC_END: {
    ht_end_rec_t rec;
    rc = ht_proto_decode_end(f->payload, f->payload_len, &rec);
    if (rc == 0 && (rec.undelivered > HTD_MAX_LOST || s->lost + rec.undelivered > HTD_MAX_LOST))
      rc = HT_ELIMIT;
    if (rc == 0) {
      if (rec.undelivered)
        record_lost(s, 0, 0, rec.undelivered, "undelivered");
      char detail[64] = "";
      if (rec.reason == HT_END_KILLED) {
        const char *abbrev = sigabbrev_np(rec.signal);
        snprintf(detail, sizeof detail, "killed by signal %u (SIG%s)", rec.signal,
                 abbrev ? abbrev : "?");
      }
      queue_end(s, ht_end_name(rec.reason), detail[0] ? detail : NULL);
      return 1;
    }
    break;
  }
  default:
    snprintf(why, whylen, "unknown record type %u", f->type);
    return HT_ERECORD;
  }
  if (rc != 0 && !why[0])
    snprintf(why, whylen, "%s record: %s", ht_record_name(f->type), ht_strerror(rc));
  return rc;
}

int htd_session_hello(htd_session_t *s, const ht_frame_t *f, ht_hello_t *h, char *why,
                      size_t whylen) {
  why[0] = '\0';
  if (f->type != HT_REC_HELLO) {
    snprintf(why, whylen, "first record is %s, not hello", ht_record_name(f->type));
    return HT_EORDER;
  }
  int rc = ht_proto_decode_hello(f->payload, f->payload_len, h);
  if (rc == HT_EVERSION) {
    snprintf(why, whylen,
             "the client speaks protocol version %u, this heaptraced version %u: upgrade "
             "heaptraced",
             h->version, HT_PROTO_VERSION);
    return rc;
  }
  if (rc != 0) {
    snprintf(why, whylen, "hello record: %s", ht_strerror(rc));
    return rc;
  }
  cJSON *argv = cJSON_CreateArray();
  for (uint16_t i = 0; argv && i < h->argc; i++) {
    char *a = htd_strndup(h->argv[i].s, h->argv[i].len);
    if (a)
      cJSON_AddItemToArray(argv, cJSON_CreateString(a));
    free(a);
  }
  s->pid = h->pid;
  s->flags = h->flags;
  s->version = h->version;
  htd_job_t *j = htd_job_new(HTD_JOB_SESSION_BEGIN, s->id);
  if (!j || !argv) {
    cJSON_Delete(argv);
    free(j);
    return HT_ENOMEM;
  }
  j->a = h->pid;
  j->b = h->ppid;
  j->c = h->flags;
  j->d = (int64_t)h->start_realtime_ns;
  j->e = (int64_t)h->start_mono_ns;
  j->text[0] = htd_strndup(h->app.s, h->app.len);
  j->text[1] = htd_strndup(h->exe.s, h->exe.len);
  j->text[2] = cJSON_PrintUnformatted(argv);
  cJSON_Delete(argv);
  submit(s, j);
  htd_log(HTD_LOG_INFO, "session %lld: pid %u (%.*s) connected", (long long)s->id, h->pid,
          (int)h->app.len, h->app.s);
  return 0;
}

void htd_session_progress(htd_session_t *s) {
  if (s->ended || (s->events == s->reported_events && s->lost == s->reported_lost))
    return;
  htd_job_t *j = htd_job_new(HTD_JOB_PROGRESS, s->id);
  if (!j)
    return;
  j->a = (int64_t)s->events;
  j->b = (int64_t)s->lost;
  s->reported_events = s->events;
  s->reported_lost = s->lost;
  submit(s, j);
}

void htd_session_end(htd_session_t *s, ht_end_t reason, const char *detail) {
  if (s->ended)
    return;
  queue_end(s, ht_end_name(reason), detail);
}
