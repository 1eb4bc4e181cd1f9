/* query.c - the answers: sessions, leaks and statistics.
 *
 * A request names a session (default: the latest). Its stored events are
 * replayed in time order (replay.c) through an analysis that keeps the
 * live blocks (livemap.c) and the counters; the reply is built from that.
 * Everything read from the database goes into JSON through cJSON, which
 * escapes it; SQL is always bound parameters.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "query.h"

/* ======================================================================
 * Replies
 * ==================================================================== */

cJSON *htq_ok(cJSON *result) {
  cJSON *r = cJSON_CreateObject();
  cJSON_AddBoolToObject(r, "ok", 1);
  cJSON_AddItemToObject(r, "result", result);
  return r;
}

cJSON *htq_error(int code, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  cJSON *r = cJSON_CreateObject();
  cJSON_AddBoolToObject(r, "ok", 0);
  cJSON_AddNumberToObject(r, "code", code);
  cJSON_AddStringToObject(r, "error", msg);
  return r;
}

/* ======================================================================
 * Opening a database
 * ==================================================================== */

static int64_t scalar(sqlite3 *db, const char *sql, int64_t bind, int *ok) {
  sqlite3_stmt *s;
  int64_t v = 0;
  *ok = 0;
  if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK)
    return 0;
  if (sqlite3_bind_parameter_count(s) > 0)
    sqlite3_bind_int64(s, 1, bind);
  int rc = sqlite3_step(s);
  if (rc == SQLITE_ROW) {
    v = sqlite3_column_int64(s, 0);
    *ok = 1;
  } else if (rc == SQLITE_DONE) {
    *ok = 1;
  }
  sqlite3_finalize(s);
  return v;
}

int htq_open(const char *path, sqlite3 **db, char *err, size_t errlen) {
  struct stat sb;
  *db = NULL;
  if (stat(path, &sb) != 0) {
    snprintf(err, errlen, "database %s does not exist; start heaptraced or give --db FILE",
             path);
    return -1;
  }
  if (sqlite3_open_v2(path, db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
    snprintf(err, errlen, "cannot open database %s: %s", path, sqlite3_errmsg(*db));
    goto fail;
  }
  sqlite3_busy_timeout(*db, 5000);
  int ok;
  int64_t version = scalar(*db, "PRAGMA user_version", 0, &ok);
  if (!ok) {
    snprintf(err, errlen, "%s is not a heaptrace database: %s", path, sqlite3_errmsg(*db));
    goto fail;
  }
  if (version > HTQ_SCHEMA_VERSION) {
    snprintf(err, errlen,
             "database %s has schema version %lld, newer than this heapctl understands (%d); "
             "use a newer heaptrace",
             path, (long long)version, HTQ_SCHEMA_VERSION);
    goto fail;
  }
  scalar(*db, "SELECT COUNT(*) FROM sessions", 0, &ok);
  if (version < 1 || !ok) {
    snprintf(err, errlen, "%s is not a heaptrace database (no sessions table)", path);
    goto fail;
  }
  return 0;
fail:
  sqlite3_close(*db);
  *db = NULL;
  return -1;
}

/* ======================================================================
 * Sessions
 * ==================================================================== */

#define SESSION_COLUMNS                                                          \
  "id, pid, ppid, app, exe, argv, start_ns, end_ns, end_reason, end_detail, events, lost, " \
  "start_mono_ns"

static cJSON *session_json(sqlite3_stmt *s) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddNumberToObject(o, "id", (double)sqlite3_column_int64(s, 0));
  cJSON_AddNumberToObject(o, "pid", (double)sqlite3_column_int64(s, 1));
  cJSON_AddNumberToObject(o, "ppid", (double)sqlite3_column_int64(s, 2));
  cJSON_AddStringToObject(o, "app", (const char *)sqlite3_column_text(s, 3));
  cJSON_AddStringToObject(o, "exe", (const char *)sqlite3_column_text(s, 4));
  cJSON *argv = cJSON_Parse((const char *)sqlite3_column_text(s, 5));
  cJSON_AddItemToObject(o, "argv", argv ? argv : cJSON_CreateArray());
  /* Wall-clock times in ms: exact in a JSON number (ns would not be). */
  cJSON_AddNumberToObject(o, "start_ms", (double)(sqlite3_column_int64(s, 6) / 1000000));
  if (sqlite3_column_type(s, 7) == SQLITE_NULL)
    cJSON_AddNullToObject(o, "end_ms");
  else
    cJSON_AddNumberToObject(o, "end_ms", (double)(sqlite3_column_int64(s, 7) / 1000000));
  cJSON_AddStringToObject(o, "end_reason", (const char *)sqlite3_column_text(s, 8));
  if (sqlite3_column_type(s, 9) != SQLITE_NULL)
    cJSON_AddStringToObject(o, "end_detail", (const char *)sqlite3_column_text(s, 9));
  cJSON_AddNumberToObject(o, "events", (double)sqlite3_column_int64(s, 10));
  cJSON_AddNumberToObject(o, "lost", (double)sqlite3_column_int64(s, 11));
  return o;
}

static cJSON *cmd_sessions(sqlite3 *db, const cJSON *req) {
  (void)req;
  sqlite3_stmt *s;
  if (sqlite3_prepare_v2(db, "SELECT " SESSION_COLUMNS " FROM sessions ORDER BY id", -1, &s,
                         NULL) != SQLITE_OK)
    return htq_error(HTQ_FAILED, "reading sessions: %s", sqlite3_errmsg(db));
  cJSON *list = cJSON_CreateArray();
  while (sqlite3_step(s) == SQLITE_ROW)
    cJSON_AddItemToArray(list, session_json(s));
  sqlite3_finalize(s);
  cJSON *r = cJSON_CreateObject();
  cJSON_AddItemToObject(r, "sessions", list);
  return htq_ok(r);
}

/* Resolves the request's "session" (default: the latest) to its row.
 * Returns the session object, or NULL with *fail set to an error reply. */
static cJSON *resolve_session(sqlite3 *db, const cJSON *req, int64_t *id, int64_t *mono0,
                              cJSON **fail) {
  const cJSON *js = cJSON_GetObjectItemCaseSensitive(req, "session");
  sqlite3_stmt *s;
  const char *sql = cJSON_IsNumber(js)
                        ? "SELECT " SESSION_COLUMNS " FROM sessions WHERE id = ?1"
                        : "SELECT " SESSION_COLUMNS " FROM sessions ORDER BY id DESC LIMIT 1";
  if (js && !cJSON_IsNumber(js) && !cJSON_IsNull(js)) {
    *fail = htq_error(HTQ_USAGE, "\"session\" must be a number");
    return NULL;
  }
  if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK) {
    *fail = htq_error(HTQ_FAILED, "reading sessions: %s", sqlite3_errmsg(db));
    return NULL;
  }
  if (cJSON_IsNumber(js))
    sqlite3_bind_int64(s, 1, (int64_t)js->valuedouble);
  cJSON *o = NULL;
  if (sqlite3_step(s) == SQLITE_ROW) {
    o = session_json(s);
    *id = sqlite3_column_int64(s, 0);
    *mono0 = sqlite3_column_int64(s, 12);
  } else if (cJSON_IsNumber(js)) {
    *fail = htq_error(HTQ_USAGE, "no session %lld in this database; 'heapctl sessions' lists them",
                      (long long)js->valuedouble);
  } else {
    *fail = htq_error(HTQ_USAGE, "the database holds no sessions yet; run a traced program first");
  }
  sqlite3_finalize(s);
  return o;
}

/* ======================================================================
 * Analysis: one replay, every counter
 * ==================================================================== */

typedef struct {
  uint32_t id, line;
  char *file, *func, *type;
  uint64_t allocs, bytes;
} site_t;

typedef struct {
  uint32_t id;
  int64_t bytes, blocks;
} stream_total_t;

typedef struct {
  htq_livemap_t live;
  site_t *sites;
  size_t nsites;
  stream_total_t *streams;
  size_t nstreams, streams_cap;
  uint64_t events, allocs, frees, reallocs, failed, unmatched, replaced;
  int64_t cur_bytes, cur_blocks, cur_usable, peak_bytes, peak_blocks;
  uint64_t peak_time, total_bytes, first_time;
  int oom;
} analysis_t;

static int site_cmp(const void *a, const void *b) {
  const site_t *x = a, *y = b;
  return x->id < y->id ? -1 : x->id > y->id;
}

static site_t *site_find(analysis_t *a, uint32_t id) {
  site_t key = {.id = id};
  return bsearch(&key, a->sites, a->nsites, sizeof *a->sites, site_cmp);
}

static char *col_dup(sqlite3_stmt *s, int i) {
  const char *t = (const char *)sqlite3_column_text(s, i);
  return strdup(t ? t : "");
}

static int load_sites(sqlite3 *db, int64_t session, analysis_t *a) {
  sqlite3_stmt *s;
  if (sqlite3_prepare_v2(db,
                         "SELECT id, line, file, func, type FROM sites WHERE session = ?1 "
                         "ORDER BY id",
                         -1, &s, NULL) != SQLITE_OK)
    return -1;
  sqlite3_bind_int64(s, 1, session);
  size_t cap = 0;
  while (sqlite3_step(s) == SQLITE_ROW) {
    if (a->nsites == cap) {
      cap = cap ? cap * 2 : 64;
      site_t *g = realloc(a->sites, cap * sizeof *g);
      if (!g)
        break;
      a->sites = g;
    }
    site_t *t = &a->sites[a->nsites++];
    memset(t, 0, sizeof *t);
    t->id = (uint32_t)sqlite3_column_int64(s, 0);
    t->line = (uint32_t)sqlite3_column_int64(s, 1);
    t->file = col_dup(s, 2);
    t->func = col_dup(s, 3);
    t->type = col_dup(s, 4);
  }
  sqlite3_finalize(s);
  return 0;
}

static void analysis_free(analysis_t *a) {
  for (size_t i = 0; i < a->nsites; i++) {
    free(a->sites[i].file);
    free(a->sites[i].func);
    free(a->sites[i].type);
  }
  free(a->sites);
  free(a->streams);
  htq_livemap_free(&a->live);
}

static void note_stream(analysis_t *a, const ht_event_t *ev) {
  for (size_t i = 0; i < a->nstreams; i++) {
    if (a->streams[i].id == ev->stream) {
      a->streams[i].bytes = ev->cur_bytes;
      a->streams[i].blocks = ev->cur_blocks;
      return;
    }
  }
  if (a->nstreams == a->streams_cap) {
    size_t cap = a->streams_cap ? a->streams_cap * 2 : 16;
    stream_total_t *g = realloc(a->streams, cap * sizeof *g);
    if (!g) {
      a->oom = 1;
      return;
    }
    a->streams = g;
    a->streams_cap = cap;
  }
  a->streams[a->nstreams++] = (stream_total_t){ev->stream, ev->cur_bytes, ev->cur_blocks};
}

static void block_gone(analysis_t *a, const htq_block_t *b) {
  a->cur_bytes -= (int64_t)b->size;
  a->cur_usable -= (int64_t)b->usable;
  a->cur_blocks--;
}

static void block_new(analysis_t *a, const ht_event_t *ev) {
  htq_block_t b = {ev->ptr, ev->size, ev->usable, ev->time_ns, ev->seq,
                   ev->site, ev->heap, ev->caps, ev->stream};
  htq_block_t old;
  if (htq_livemap_take(&a->live, ev->ptr, &old)) {
    a->replaced++; /* allocated twice without a free: count, keep the new one */
    block_gone(a, &old);
  }
  if (htq_livemap_put(&a->live, &b) < 0)
    a->oom = 1;
  a->cur_bytes += (int64_t)ev->size;
  a->cur_usable += (int64_t)ev->usable;
  a->cur_blocks++;
  a->total_bytes += ev->size;
  site_t *s = site_find(a, ev->site);
  if (s) {
    s->allocs++;
    s->bytes += ev->size;
  }
  if (a->cur_bytes > a->peak_bytes) {
    a->peak_bytes = a->cur_bytes;
    a->peak_blocks = a->cur_blocks;
    a->peak_time = ev->time_ns;
  }
}

static int analyse_event(const ht_event_t *ev, void *user) {
  analysis_t *a = user;
  htq_block_t old;
  if (a->events++ == 0)
    a->first_time = ev->time_ns;
  note_stream(a, ev);
  switch (ev->op) {
  case HT_OP_MALLOC:
  case HT_OP_CALLOC:
  case HT_OP_ALIGNED:
    a->allocs++;
    block_new(a, ev);
    break;
  case HT_OP_REALLOC:
    a->reallocs++;
    if (htq_livemap_take(&a->live, ev->old_ptr, &old))
      block_gone(a, &old);
    else
      a->unmatched++;
    block_new(a, ev);
    break;
  case HT_OP_FREE:
    a->frees++;
    if (htq_livemap_take(&a->live, ev->ptr, &old))
      block_gone(a, &old);
    else
      a->unmatched++;
    break;
  case HT_OP_FAILED:
    a->failed++;
    break;
  }
  return a->oom ? -1 : 0;
}

static cJSON *analyse(sqlite3 *db, int64_t session, analysis_t *a) {
  char err[512];
  memset(a, 0, sizeof *a);
  htq_livemap_init(&a->live);
  if (load_sites(db, session, a) != 0)
    return htq_error(HTQ_FAILED, "reading sites: %s", sqlite3_errmsg(db));
  int rc = htq_replay(db, session, analyse_event, a, err, sizeof err);
  if (a->oom)
    return htq_error(HTQ_FAILED, "out of memory analysing session %lld", (long long)session);
  if (rc != 0)
    return htq_error(HTQ_FAILED, "%s", err);
  return NULL;
}

/* ======================================================================
 * leaks
 * ==================================================================== */

typedef enum { BY_SITE, BY_TYPE, BY_CAPS, BY_HEAP } group_by_t;
static const char *const by_names[] = {"site", "type", "caps", "heap"};

typedef struct {
  analysis_t *a;
  group_by_t by;
} group_ctx_t;

static group_ctx_t sort_ctx; /* qsort has no context argument in C11 */

static const char *site_type(analysis_t *a, uint32_t site) {
  site_t *s = site_find(a, site);
  return s ? s->type : "";
}

static int block_group_cmp(const void *x, const void *y) {
  const htq_block_t *p = x, *q = y;
  switch (sort_ctx.by) {
  case BY_SITE:
    return p->site < q->site ? -1 : p->site > q->site;
  case BY_TYPE:
    return strcmp(site_type(sort_ctx.a, p->site), site_type(sort_ctx.a, q->site));
  case BY_CAPS:
    return p->caps < q->caps ? -1 : p->caps > q->caps;
  case BY_HEAP:
    return p->heap < q->heap ? -1 : p->heap > q->heap;
  }
  return 0;
}

static int group_bytes_cmp(const void *x, const void *y) {
  const cJSON *const *p = x, *const *q = y;
  double a = cJSON_GetObjectItem(*p, "bytes")->valuedouble;
  double b = cJSON_GetObjectItem(*q, "bytes")->valuedouble;
  return a < b ? 1 : a > b ? -1 : 0;
}

static cJSON *group_json(analysis_t *a, group_by_t by, const htq_block_t *first, size_t n) {
  cJSON *g = cJSON_CreateObject();
  char key[512], caps[160], addr[32];
  uint64_t bytes = 0;
  for (size_t i = 0; i < n; i++)
    bytes += first[i].size;
  site_t *s = site_find(a, first->site);
  ht_caps_format(first->caps, caps, sizeof caps);
  switch (by) {
  case BY_SITE:
    if (s)
      snprintf(key, sizeof key, "%s:%u", s->file, s->line);
    else
      snprintf(key, sizeof key, "site %u", first->site);
    break;
  case BY_TYPE:
    snprintf(key, sizeof key, "%s", s && s->type[0] ? s->type : "(untyped)");
    break;
  case BY_CAPS:
    snprintf(key, sizeof key, "%s", caps);
    break;
  case BY_HEAP:
    snprintf(key, sizeof key, "heap %u", first->heap);
    break;
  }
  cJSON_AddStringToObject(g, "key", key);
  if (by == BY_SITE && s) {
    cJSON_AddStringToObject(g, "file", s->file);
    cJSON_AddNumberToObject(g, "line", s->line);
    cJSON_AddStringToObject(g, "function", s->func);
    cJSON_AddStringToObject(g, "type", s->type);
  }
  if (by == BY_SITE || by == BY_CAPS) {
    cJSON_AddNumberToObject(g, "caps", first->caps);
    cJSON_AddStringToObject(g, "caps_names", caps);
  }
  if (by == BY_SITE || by == BY_HEAP)
    cJSON_AddNumberToObject(g, "heap", first->heap);
  cJSON_AddNumberToObject(g, "blocks", (double)n);
  cJSON_AddNumberToObject(g, "bytes", (double)bytes);
  snprintf(addr, sizeof addr, "0x%llx", (unsigned long long)first->ptr);
  cJSON_AddStringToObject(g, "sample_address", addr);
  cJSON_AddNumberToObject(g, "sample_size", (double)first->size);
  return g;
}

static int parse_by(const cJSON *req, group_by_t *by) {
  const cJSON *j = cJSON_GetObjectItemCaseSensitive(req, "by");
  *by = BY_SITE;
  if (!j || cJSON_IsNull(j))
    return 0;
  for (int i = 0; cJSON_IsString(j) && i < 4; i++) {
    if (strcmp(j->valuestring, by_names[i]) == 0) {
      *by = (group_by_t)i;
      return 0;
    }
  }
  return -1;
}

static double num_opt(const cJSON *req, const char *name, double def) {
  const cJSON *j = cJSON_GetObjectItemCaseSensitive(req, name);
  return cJSON_IsNumber(j) ? j->valuedouble : def;
}

static cJSON *cmd_leaks(sqlite3 *db, const cJSON *req) {
  group_by_t by;
  if (parse_by(req, &by) != 0)
    return htq_error(HTQ_USAGE, "--by takes site, type, caps or heap");
  double min_bytes = num_opt(req, "min_bytes", 0), top = num_opt(req, "top", 0);
  int64_t id = 0, mono0 = 0;
  cJSON *fail = NULL;
  cJSON *session = resolve_session(db, req, &id, &mono0, &fail);
  if (!session)
    return fail;
  analysis_t a;
  if ((fail = analyse(db, id, &a)) != NULL) {
    analysis_free(&a);
    cJSON_Delete(session);
    return fail;
  }
  size_t n = 0;
  htq_block_t *blocks = malloc((a.live.count ? a.live.count : 1) * sizeof *blocks);
  for (size_t i = 0; blocks && i < a.live.cap; i++)
    if (a.live.slots[i].ptr)
      blocks[n++] = a.live.slots[i];
  sort_ctx = (group_ctx_t){&a, by};
  if (blocks)
    qsort(blocks, n, sizeof *blocks, block_group_cmp);
  size_t ngroups = 0;
  cJSON **groups = malloc((n ? n : 1) * sizeof *groups);
  uint64_t total_bytes = 0;
  for (size_t i = 0; groups && i < n;) {
    size_t j = i + 1;
    while (j < n && block_group_cmp(&blocks[i], &blocks[j]) == 0)
      j++;
    groups[ngroups++] = group_json(&a, by, &blocks[i], j - i);
    for (size_t k = i; k < j; k++)
      total_bytes += blocks[k].size;
    i = j;
  }
  if (groups)
    qsort(groups, ngroups, sizeof *groups, group_bytes_cmp);
  cJSON *list = cJSON_CreateArray();
  size_t shown = 0;
  for (size_t i = 0; groups && i < ngroups; i++) {
    double bytes = cJSON_GetObjectItem(groups[i], "bytes")->valuedouble;
    if (bytes < min_bytes || (top > 0 && (double)shown >= top)) {
      cJSON_Delete(groups[i]);
      continue;
    }
    cJSON_AddItemToArray(list, groups[i]);
    shown++;
  }
  cJSON *r = cJSON_CreateObject();
  cJSON_AddItemToObject(r, "session", session);
  cJSON_AddStringToObject(r, "by", by_names[by]);
  cJSON_AddItemToObject(r, "groups", list);
  cJSON *total = cJSON_AddObjectToObject(r, "total");
  cJSON_AddNumberToObject(total, "blocks", (double)n);
  cJSON_AddNumberToObject(total, "bytes", (double)total_bytes);
  free(groups);
  free(blocks);
  analysis_free(&a);
  if (!blocks || !groups) {
    cJSON_Delete(r);
    return htq_error(HTQ_FAILED, "out of memory listing leaks");
  }
  return htq_ok(r);
}

/* ======================================================================
 * stats
 * ==================================================================== */

static cJSON *cmd_stats(sqlite3 *db, const cJSON *req) {
  int64_t id = 0, mono0 = 0;
  cJSON *fail = NULL;
  cJSON *session = resolve_session(db, req, &id, &mono0, &fail);
  if (!session)
    return fail;
  analysis_t a;
  if ((fail = analyse(db, id, &a)) != NULL) {
    analysis_free(&a);
    cJSON_Delete(session);
    return fail;
  }
  cJSON *r = cJSON_CreateObject();
  cJSON_AddItemToObject(r, "session", session);
  cJSON_AddNumberToObject(r, "events", (double)a.events);
  cJSON_AddNumberToObject(r, "allocations", (double)a.allocs);
  cJSON_AddNumberToObject(r, "frees", (double)a.frees);
  cJSON_AddNumberToObject(r, "reallocs", (double)a.reallocs);
  cJSON_AddNumberToObject(r, "failed", (double)a.failed);
  cJSON_AddNumberToObject(r, "current_bytes", (double)a.cur_bytes);
  cJSON_AddNumberToObject(r, "current_blocks", (double)a.cur_blocks);
  cJSON_AddNumberToObject(r, "peak_bytes", (double)a.peak_bytes);
  cJSON_AddNumberToObject(r, "peak_blocks", (double)a.peak_blocks);
  /* Time of the peak, in ns since the session started (client clock). */
  cJSON_AddNumberToObject(r, "peak_at_ns",
                          a.peak_time > (uint64_t)mono0 ? (double)(a.peak_time - (uint64_t)mono0)
                                                        : 0);
  cJSON_AddNumberToObject(r, "total_bytes", (double)a.total_bytes);
  cJSON_AddNumberToObject(r, "unmatched_frees", (double)a.unmatched);
  cJSON_AddNumberToObject(r, "double_allocations", (double)a.replaced);
  int64_t cb = 0, cn = 0;
  for (size_t i = 0; i < a.nstreams; i++) {
    cb += a.streams[i].bytes;
    cn += a.streams[i].blocks;
  }
  cJSON *agree = cJSON_AddObjectToObject(r, "totals");
  cJSON_AddNumberToObject(agree, "client_usable_bytes", (double)cb);
  cJSON_AddNumberToObject(agree, "client_blocks", (double)cn);
  cJSON_AddNumberToObject(agree, "daemon_usable_bytes", (double)a.cur_usable);
  cJSON_AddNumberToObject(agree, "daemon_blocks", (double)a.cur_blocks);
  cJSON_AddBoolToObject(agree, "agree", cb == a.cur_usable && cn == a.cur_blocks);
  cJSON *sites = cJSON_AddArrayToObject(r, "sites");
  for (size_t i = 0; i < a.nsites; i++) {
    site_t *s = &a.sites[i];
    if (!s->allocs)
      continue;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "file", s->file);
    cJSON_AddNumberToObject(o, "line", s->line);
    cJSON_AddStringToObject(o, "function", s->func);
    cJSON_AddStringToObject(o, "type", s->type);
    cJSON_AddNumberToObject(o, "allocations", (double)s->allocs);
    cJSON_AddNumberToObject(o, "bytes", (double)s->bytes);
    cJSON_AddItemToArray(sites, o);
  }
  analysis_free(&a);
  return htq_ok(r);
}

/* ======================================================================
 * Dispatch
 * ==================================================================== */

typedef struct {
  const char *name;
  cJSON *(*run)(sqlite3 *db, const cJSON *req);
} command_t;

static const command_t commands[] = {
    {"sessions", cmd_sessions},
    {"leaks", cmd_leaks},
    {"stats", cmd_stats},
};

cJSON *htq_execute(sqlite3 *db, const cJSON *request) {
  const cJSON *cmd = cJSON_GetObjectItemCaseSensitive(request, "cmd");
  if (!cJSON_IsString(cmd))
    return htq_error(HTQ_USAGE, "the request has no \"cmd\" string");
  for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
    if (strcmp(cmd->valuestring, commands[i].name) == 0)
      return commands[i].run(db, request);
  return htq_error(HTQ_USAGE, "unknown command '%s'", cmd->valuestring);
}
