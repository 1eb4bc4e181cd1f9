/* query.c - the answers: sessions, leaks, stats, low-water marks,
 * fragmentation, top sites, timeline, diff, raw events and the report.
 *
 * A request names a session (default: the latest). Its model (model.h) is
 * read from the stored summary, or built from the events when there is
 * none; every command is a view of that model. Everything read from the
 * database goes into JSON through cJSON, which escapes it; SQL is always
 * bound parameters. Times in replies are ms since the session started.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "query.h"
#include "summary.h"

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

int htq_refuse_directory(const char *path, const struct stat *sb, char *err, size_t errlen) {
  if (!S_ISDIR(sb->st_mode))
    return 0;
  snprintf(err, errlen, "%s is a directory, not a database (give the database file's path)", path);
  return -1;
}

int htq_open(const char *path, sqlite3 **db, char *err, size_t errlen) {
  struct stat sb;
  *db = NULL;
  if (stat(path, &sb) != 0) {
    snprintf(err, errlen,
             "database %s does not exist (heaptraced creates it when it starts; check the path)",
             path);
    return -1;
  }
  if (htq_refuse_directory(path, &sb, err, errlen) != 0)
    return -1;
  /* Each connection serves one query on one thread (heapctl, or a
   * worker of the daemon's pool): no need for SQLite's locking of every
   * call on it, which was a tenth of reading 100 k live blocks. */
  if (sqlite3_open_v2(path, db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
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

/* The last column: the lost events by why, a JSON object. */
#define SESSION_COLUMNS                                                                            \
  "id, pid, ppid, app, exe, argv, start_ns, end_ns, end_reason, end_detail, events, lost, "        \
  "start_mono_ns, (SELECT json_group_object(why, n) FROM (SELECT why, SUM(count) AS n FROM lost"   \
  " WHERE session = sessions.id GROUP BY why HAVING n > 0 ORDER BY why))"

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
  cJSON *why = cJSON_Parse((const char *)sqlite3_column_text(s, 13));
  cJSON_AddItemToObject(o, "lost_by_reason", cJSON_IsObject(why) ? why : cJSON_CreateObject());
  if (why && !cJSON_IsObject(why))
    cJSON_Delete(why);
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
  const char *sql = cJSON_IsNumber(js) ? "SELECT " SESSION_COLUMNS " FROM sessions WHERE id = ?1"
                                       : "SELECT " SESSION_COLUMNS
                                         " FROM sessions ORDER BY id DESC LIMIT 1";
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
 * Helpers
 * ==================================================================== */

typedef struct {
  sqlite3 *db;
  const cJSON *req;
  int64_t id, mono0;
  cJSON *session; /* owned until handed to a result */
  htq_model_t m;
  int have_model;
} ctx_t;

static double num_opt(const cJSON *req, const char *name, double def) {
  const cJSON *j = cJSON_GetObjectItemCaseSensitive(req, name);
  return cJSON_IsNumber(j) ? j->valuedouble : def;
}

static const char *str_opt(const cJSON *req, const char *name) {
  const cJSON *j = cJSON_GetObjectItemCaseSensitive(req, name);
  return cJSON_IsString(j) ? j->valuestring : NULL;
}

/* ms since the session started, for a client monotonic time. */
static double at_ms(const ctx_t *c, uint64_t t) {
  return t > (uint64_t)c->mono0 ? (double)(t - (uint64_t)c->mono0) / 1e6 : 0;
}

static uint64_t to_mono(const ctx_t *c, double ms) {
  return (uint64_t)c->mono0 + (uint64_t)(ms * 1e6);
}

static void ctx_free(ctx_t *c) {
  cJSON_Delete(c->session);
  if (c->have_model)
    htq_model_free(&c->m);
}

/* Resolves the session and, when need_model is 1, loads or builds its
 * model (2: with the leaks too). Returns NULL, or an error reply. */
static cJSON *ctx_open(ctx_t *c, sqlite3 *db, const cJSON *req, int need_model) {
  memset(c, 0, sizeof *c);
  c->db = db;
  c->req = req;
  cJSON *fail = NULL;
  c->session = resolve_session(db, req, &c->id, &c->mono0, &fail);
  if (!c->session)
    return fail;
  if (!need_model)
    return NULL;
  char err[512];
  c->have_model = 1;
  if (htq_model_get(&c->m, db, c->id, need_model > 1, err, sizeof err) != 0)
    return htq_error(HTQ_FAILED, "%s", err);
  return NULL;
}

/* Builds the model from the events with a window and extra caps masks:
 * used when the stored summary cannot answer (--since/--until, a caps
 * mask it did not track). */
static cJSON *ctx_rebuild(ctx_t *c, uint64_t since, uint64_t until, uint32_t mask) {
  char err[512];
  if (c->have_model)
    htq_model_free(&c->m);
  c->have_model = 1;
  if (htq_model_init(&c->m, c->db, c->id, err, sizeof err) != 0)
    return htq_error(HTQ_FAILED, "%s", err);
  c->m.since = since;
  c->m.until = until;
  htq_model_track_mask(&c->m, mask);
  if (htq_model_build(&c->m, c->db, c->id, err, sizeof err) != 0)
    return htq_error(HTQ_FAILED, "%s", err);
  return NULL;
}

/* Moves every member of object src into dst and deletes src. */
static void move_members(cJSON *dst, cJSON *src) {
  while (src->child) {
    cJSON *item = cJSON_DetachItemViaPointer(src, src->child);
    cJSON_AddItemToObject(dst, item->string, item);
  }
  cJSON_Delete(src);
}

static cJSON *result_with_session(ctx_t *c) {
  cJSON *r = cJSON_CreateObject();
  cJSON_AddItemToObject(r, "session", c->session);
  c->session = NULL;
  return r;
}

/* The reply of a command that built body from c: the session, then the
 * body's members. Frees c. A NULL body means memory ran out. */
static cJSON *finish_view(ctx_t *c, cJSON *body) {
  if (!body) {
    ctx_free(c);
    return htq_error(HTQ_FAILED, "out of memory building the reply");
  }
  cJSON *r = result_with_session(c);
  move_members(r, body);
  ctx_free(c);
  return htq_ok(r);
}

static void add_site(cJSON *o, const htq_site_t *s, uint32_t id) {
  char key[512];
  if (s)
    snprintf(key, sizeof key, "%s:%u", s->file, s->line);
  else
    snprintf(key, sizeof key, "site %u", id);
  cJSON_AddStringToObject(o, "key", key);
  cJSON_AddStringToObject(o, "file", s ? s->file : "");
  cJSON_AddNumberToObject(o, "line", s ? s->line : 0);
  cJSON_AddStringToObject(o, "function", s ? s->func : "");
  cJSON_AddStringToObject(o, "type", s ? s->type : "");
}

static void add_caps(cJSON *o, const char *name, uint32_t caps) {
  char buf[160], key[64];
  cJSON_AddNumberToObject(o, name, caps);
  snprintf(key, sizeof key, "%s_names", name);
  cJSON_AddStringToObject(o, key, ht_caps_format(caps, buf, sizeof buf));
}

/* Whether heap h is listed: the system heap is left out of sessions that
 * only used caps heaps. */
static int heap_shown(const htq_model_t *m, const htq_heap_t *h) {
  return h->id != 0 || h->allocs != 0 || m->nheaps == 1;
}

/* A heap filter (--heap) matches an id or a name. */
static int heap_matches(const htq_heap_t *h, const char *filter) {
  if (!filter)
    return 1;
  char id[16];
  snprintf(id, sizeof id, "%u", h->id);
  return strcmp(filter, id) == 0 || strcmp(filter, h->name) == 0;
}

static cJSON *check_heap_filter(ctx_t *c, const char *filter) {
  for (size_t i = 0; filter && i < c->m.nheaps; i++)
    if (heap_matches(&c->m.heaps[i], filter))
      return NULL;
  return filter ? htq_error(HTQ_USAGE,
                            "session %lld has no heap '%s'; 'heapctl stats' lists its heaps",
                            (long long)c->id, filter)
                : NULL;
}

static void heap_head(cJSON *o, const htq_heap_t *h) {
  cJSON_AddNumberToObject(o, "heap", h->id);
  cJSON_AddStringToObject(o, "name", h->name);
  cJSON *caps = cJSON_AddArrayToObject(o, "caps");
  for (int i = 0; i < HT_PROTO_CAPS_PRIOS; i++)
    cJSON_AddItemToArray(caps, cJSON_CreateNumber(h->caps[i]));
  char buf[160];
  cJSON_AddStringToObject(o, "caps_names", ht_caps_format(h->caps[0], buf, sizeof buf));
  cJSON_AddBoolToObject(o, "bounded", h->bounded);
}

/* ======================================================================
 * leaks
 * ==================================================================== */

typedef enum { BY_SITE, BY_TYPE, BY_CAPS, BY_HEAP } group_by_t;
static const char *const by_names[] = {"site", "type", "caps", "heap"};

static const char *site_type(htq_model_t *m, uint32_t site) {
  htq_site_t *s = htq_model_site(m, site);
  return s ? s->type : "";
}

#define CMP(a, b) ((a) < (b) ? -1 : (a) > (b))

/* A (site, heap, caps) part of the leaks with its group's key, worked
 * out once: by site, caps or heap a number; by type the site's type name. */
typedef struct {
  uint64_t key;
  const char *type; /* by type only, else NULL */
  const htq_leak_t *g;
} keyed_t;

static keyed_t keyed(htq_model_t *m, group_by_t by, const htq_leak_t *g) {
  switch (by) {
  case BY_SITE:
    return (keyed_t){g->oldest.site, NULL, g};
  case BY_TYPE:
    return (keyed_t){0, site_type(m, g->oldest.site), g};
  case BY_CAPS:
    return (keyed_t){g->oldest.caps, NULL, g};
  case BY_HEAP:
    return (keyed_t){g->oldest.heap, NULL, g};
  }
  return (keyed_t){0, NULL, g};
}

/* The order of leak groups: parts of one group compare equal. */
static int group_key_cmp(const void *x, const void *y) {
  const keyed_t *p = x, *q = y;
  return p->type ? strcmp(p->type, q->type) : CMP(p->key, q->key);
}

typedef struct {
  cJSON *json;
  uint64_t bytes;
  size_t index; /* in key order: ties keep it */
} group_t;

static int group_bytes_cmp(const void *x, const void *y) {
  const group_t *p = x, *q = y;
  return p->bytes != q->bytes ? CMP(q->bytes, p->bytes) : CMP(p->index, q->index);
}

/* The group of n blocks, bytes in all, shown by its oldest block (the
 * sample): whichever order the live blocks were met in (replayed, or read
 * back from a summary), the answer is the same. */
static cJSON *group_json(htq_model_t *m, group_by_t by, const htq_block_t *sample, uint64_t n,
                         uint64_t bytes) {
  cJSON *g = cJSON_CreateObject();
  char key[512], caps[160], addr[32];
  htq_site_t *s = htq_model_site(m, sample->site);
  htq_heap_t *h = htq_model_heap(m, sample->heap);
  ht_caps_format(sample->caps, caps, sizeof caps);
  switch (by) {
  case BY_SITE:
    add_site(g, s, sample->site);
    break;
  case BY_TYPE:
    snprintf(key, sizeof key, "%s", s && s->type[0] ? s->type : "(untyped)");
    cJSON_AddStringToObject(g, "key", key);
    break;
  case BY_CAPS:
    cJSON_AddStringToObject(g, "key", caps);
    break;
  case BY_HEAP:
    snprintf(key, sizeof key, "%s", h ? h->name : "?");
    cJSON_AddStringToObject(g, "key", key);
    break;
  }
  if (by == BY_SITE || by == BY_CAPS)
    add_caps(g, "caps", sample->caps);
  if (by == BY_SITE || by == BY_HEAP) {
    cJSON_AddNumberToObject(g, "heap", sample->heap);
    cJSON_AddStringToObject(g, "heap_name", h ? h->name : "?");
  }
  cJSON_AddNumberToObject(g, "blocks", (double)n);
  cJSON_AddNumberToObject(g, "bytes", (double)bytes);
  snprintf(addr, sizeof addr, "0x%llx", (unsigned long long)sample->ptr);
  cJSON_AddStringToObject(g, "sample_address", addr);
  cJSON_AddNumberToObject(g, "sample_size", (double)sample->size);
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

/* The leak groups of a model, biggest first, filtered; NULL on OOM. Each
 * sums the model's parts of the leaks (htq_model_leaks) that share its key:
 * a few rows, however many blocks are live. */
static cJSON *leak_groups(htq_model_t *m, group_by_t by, double min_bytes, double top,
                          uint64_t *nblocks, uint64_t *nbytes) {
  if (htq_model_leaks(m) != 0)
    return NULL;
  size_t n = m->nleaks;
  keyed_t *parts = malloc((n ? n : 1) * sizeof *parts);
  group_t *groups = malloc((n ? n : 1) * sizeof *groups);
  if (!parts || !groups) {
    free(parts);
    free(groups);
    return NULL;
  }
  for (size_t i = 0; i < n; i++)
    parts[i] = keyed(m, by, &m->leaks[i]);
  qsort(parts, n, sizeof *parts, group_key_cmp);
  size_t ngroups = 0;
  *nblocks = *nbytes = 0;
  for (size_t i = 0; i < n;) {
    size_t j = i + 1;
    while (j < n && group_key_cmp(&parts[i], &parts[j]) == 0)
      j++;
    uint64_t blocks = 0, bytes = 0;
    const htq_block_t *oldest = &parts[i].g->oldest;
    for (size_t k = i; k < j; k++) {
      blocks += parts[k].g->blocks;
      bytes += parts[k].g->bytes;
      if (htq_block_older(&parts[k].g->oldest, oldest))
        oldest = &parts[k].g->oldest;
    }
    groups[ngroups] = (group_t){group_json(m, by, oldest, blocks, bytes), bytes, ngroups};
    ngroups++;
    *nblocks += blocks;
    *nbytes += bytes;
    i = j;
  }
  qsort(groups, ngroups, sizeof *groups, group_bytes_cmp);
  cJSON *list = cJSON_CreateArray();
  size_t shown = 0;
  for (size_t i = 0; i < ngroups; i++) {
    if ((double)groups[i].bytes < min_bytes || (top > 0 && (double)shown >= top)) {
      cJSON_Delete(groups[i].json);
      continue;
    }
    cJSON_AddItemToArray(list, groups[i].json);
    shown++;
  }
  free(groups);
  free(parts);
  return list;
}

static cJSON *leaks_result(ctx_t *c, group_by_t by, double min_bytes, double top) {
  uint64_t nblocks, nbytes;
  cJSON *list = leak_groups(&c->m, by, min_bytes, top, &nblocks, &nbytes);
  if (!list)
    return NULL;
  cJSON *r = cJSON_CreateObject();
  cJSON_AddStringToObject(r, "by", by_names[by]);
  cJSON_AddItemToObject(r, "groups", list);
  cJSON *total = cJSON_AddObjectToObject(r, "total");
  cJSON_AddNumberToObject(total, "blocks", (double)nblocks);
  cJSON_AddNumberToObject(total, "bytes", (double)nbytes);
  return r;
}

static cJSON *cmd_leaks(sqlite3 *db, const cJSON *req) {
  group_by_t by;
  if (parse_by(req, &by) != 0)
    return htq_error(HTQ_USAGE, "--by takes site, type, caps or heap");
  ctx_t c;
  cJSON *fail = ctx_open(&c, db, req, 2);
  if (fail) {
    ctx_free(&c);
    return fail;
  }
  return finish_view(&c,
                     leaks_result(&c, by, num_opt(req, "min_bytes", 0), num_opt(req, "top", 0)));
}

/* ======================================================================
 * stats
 * ==================================================================== */

typedef enum { TOP_BYTES, TOP_COUNT, TOP_TEMPORARY } top_by_t;
static _Thread_local top_by_t top_key;

static uint64_t top_value(const htq_site_t *s) {
  return top_key == TOP_BYTES ? s->bytes : top_key == TOP_COUNT ? s->allocs : s->temporary;
}

/* Hottest first; sites as hot as each other by id, so that the order is
 * the same whatever order the model holds its sites in. */
static int top_cmp(const void *x, const void *y) {
  const htq_site_t *const *a = x, *const *b = y;
  uint64_t va = top_value(*a), vb = top_value(*b);
  return va != vb ? CMP(vb, va) : CMP((*a)->id, (*b)->id);
}

/* The sites that allocated, hottest first by key, at most limit of them
 * (with --by temporary, only sites that had temporaries). NULL on OOM. */
static cJSON *sites_json(htq_model_t *m, top_by_t by, size_t limit) {
  const htq_site_t **order = malloc((m->nsites ? m->nsites : 1) * sizeof *order);
  if (!order)
    return NULL;
  size_t n = 0;
  for (size_t i = 0; i < m->nsites; i++)
    if (m->sites[i].allocs && (by != TOP_TEMPORARY || m->sites[i].temporary))
      order[n++] = &m->sites[i];
  top_key = by;
  qsort(order, n, sizeof *order, top_cmp);
  cJSON *list = cJSON_CreateArray();
  for (size_t i = 0; i < n && i < limit; i++) {
    const htq_site_t *s = order[i];
    cJSON *o = cJSON_CreateObject();
    add_site(o, s, s->id);
    cJSON_AddNumberToObject(o, "allocations", (double)s->allocs);
    cJSON_AddNumberToObject(o, "frees", (double)s->frees);
    cJSON_AddNumberToObject(o, "bytes", (double)s->bytes);
    cJSON_AddNumberToObject(o, "live_blocks", (double)s->live_blocks);
    cJSON_AddNumberToObject(o, "live_bytes", (double)s->live_bytes);
    cJSON_AddNumberToObject(o, "peak_live_bytes", (double)s->peak_live);
    cJSON_AddNumberToObject(o, "temporary", (double)s->temporary);
    cJSON_AddItemToArray(list, o);
  }
  free(order);
  return list;
}

static cJSON *types_json(htq_model_t *m) {
  cJSON *types = cJSON_CreateArray();
  for (size_t i = 0; i < m->nsites; i++) {
    const htq_site_t *s = &m->sites[i];
    if (!s->type[0] || !s->allocs)
      continue;
    cJSON *t = NULL, *it;
    cJSON_ArrayForEach(it, types) {
      if (strcmp(cJSON_GetObjectItem(it, "type")->valuestring, s->type) == 0)
        t = it;
    }
    if (!t) {
      t = cJSON_CreateObject();
      cJSON_AddStringToObject(t, "type", s->type);
      cJSON_AddNumberToObject(t, "allocations", 0);
      cJSON_AddNumberToObject(t, "bytes", 0);
      cJSON_AddNumberToObject(t, "live_blocks", 0);
      cJSON_AddNumberToObject(t, "live_bytes", 0);
      cJSON_AddItemToArray(types, t);
    }
    const double add[] = {(double)s->allocs, (double)s->bytes, (double)s->live_blocks,
                          (double)s->live_bytes};
    const char *const keys[] = {"allocations", "bytes", "live_blocks", "live_bytes"};
    for (int k = 0; k < 4; k++) {
      cJSON *f = cJSON_GetObjectItem(t, keys[k]);
      cJSON_SetNumberValue(f, f->valuedouble + add[k]);
    }
  }
  return types;
}

static int capstat_cmp(const void *x, const void *y) {
  const htq_capstat_t *p = x, *q = y;
  return CMP(p->caps, q->caps);
}

static cJSON *stats_result(ctx_t *c, size_t max_sites) {
  htq_model_t *m = &c->m;
  cJSON *r = cJSON_CreateObject();
  cJSON_AddNumberToObject(r, "events", (double)m->events);
  cJSON_AddNumberToObject(r, "allocations", (double)m->allocs);
  cJSON_AddNumberToObject(r, "frees", (double)m->frees);
  cJSON_AddNumberToObject(r, "reallocs", (double)m->reallocs);
  cJSON_AddNumberToObject(r, "failed", (double)m->failed);
  cJSON_AddNumberToObject(r, "temporary", (double)m->temporary);
  cJSON_AddNumberToObject(r, "current_bytes", (double)m->cur_bytes);
  cJSON_AddNumberToObject(r, "current_blocks", (double)m->cur_blocks);
  cJSON_AddNumberToObject(r, "peak_bytes", (double)m->peak_bytes);
  cJSON_AddNumberToObject(r, "peak_blocks", (double)m->peak_blocks);
  cJSON_AddNumberToObject(r, "peak_at_ms", at_ms(c, m->peak_time));
  cJSON_AddNumberToObject(r, "total_bytes", (double)m->total_bytes);
  cJSON_AddNumberToObject(r, "unmatched_frees", (double)m->unmatched);
  cJSON_AddNumberToObject(r, "double_allocations", (double)m->replaced);
  int64_t cb = 0, cn = 0;
  for (size_t i = 0; i < m->nstreams; i++) {
    cb += m->streams[i].bytes;
    cn += m->streams[i].blocks;
  }
  cJSON *agree = cJSON_AddObjectToObject(r, "totals");
  cJSON_AddNumberToObject(agree, "client_usable_bytes", (double)cb);
  cJSON_AddNumberToObject(agree, "client_blocks", (double)cn);
  cJSON_AddNumberToObject(agree, "daemon_usable_bytes", (double)m->cur_usable);
  cJSON_AddNumberToObject(agree, "daemon_blocks", (double)m->cur_blocks);
  cJSON_AddBoolToObject(agree, "agree", cb == m->cur_usable && cn == m->cur_blocks);
  /* In order of the masks: the model meets them in the order of the
   * session's events, a summary reads them back sorted. */
  if (m->ncaps > 1) /* m->caps is NULL until a first one */
    qsort(m->caps, m->ncaps, sizeof *m->caps, capstat_cmp);
  cJSON *caps = cJSON_AddArrayToObject(r, "caps");
  for (size_t i = 0; i < m->ncaps; i++) {
    cJSON *o = cJSON_CreateObject();
    add_caps(o, "caps", m->caps[i].caps);
    cJSON_AddNumberToObject(o, "allocations", (double)m->caps[i].allocs);
    cJSON_AddNumberToObject(o, "bytes", (double)m->caps[i].bytes);
    cJSON_AddNumberToObject(o, "live_blocks", (double)m->caps[i].live_blocks);
    cJSON_AddNumberToObject(o, "live_bytes", (double)m->caps[i].live_bytes);
    cJSON_AddItemToArray(caps, o);
  }
  cJSON *heaps = cJSON_AddArrayToObject(r, "heaps");
  for (size_t i = 0; i < m->nheaps; i++) {
    const htq_heap_t *h = &m->heaps[i];
    if (!heap_shown(m, h))
      continue;
    cJSON *o = cJSON_CreateObject();
    heap_head(o, h);
    cJSON_AddNumberToObject(o, "allocations", (double)h->allocs);
    cJSON_AddNumberToObject(o, "used_bytes", (double)h->used);
    cJSON_AddNumberToObject(o, "peak_used_bytes", (double)h->peak_used);
    cJSON_AddNumberToObject(o, "peak_at_ms", at_ms(c, h->peak_time));
    if (h->bounded) {
      cJSON_AddNumberToObject(o, "size", (double)h->size);
      cJSON_AddNumberToObject(o, "free_bytes", (double)h->now.free_bytes);
      cJSON_AddNumberToObject(o, "minimum_free_bytes", (double)h->min_free);
    }
    cJSON_AddItemToArray(heaps, o);
  }
  cJSON_AddItemToObject(r, "types", types_json(m));
  cJSON *sites = sites_json(m, TOP_BYTES, max_sites);
  if (sites)
    cJSON_AddItemToObject(r, "sites", sites);
  return r;
}

static cJSON *cmd_stats(sqlite3 *db, const cJSON *req) {
  ctx_t c;
  cJSON *fail = ctx_open(&c, db, req, 1);
  if (fail) {
    ctx_free(&c);
    return fail;
  }
  return finish_view(&c, stats_result(&c, (size_t)num_opt(req, "sites", 50)));
}

/* ======================================================================
 * lwm and frag
 * ==================================================================== */

static int mask_cmp(const void *x, const void *y) {
  const htq_mask_t *p = x, *q = y;
  return CMP(p->mask, q->mask);
}

static const htq_mask_t *find_mask(const htq_model_t *m, uint32_t mask) {
  for (size_t i = 0; i < m->nmasks; i++)
    if (m->masks[i].mask == mask)
      return &m->masks[i];
  return NULL;
}

static cJSON *mask_json(const ctx_t *c, const htq_mask_t *k) {
  cJSON *o = cJSON_CreateObject();
  add_caps(o, "caps", k->mask);
  cJSON *hs = cJSON_AddArrayToObject(o, "heaps");
  for (size_t i = 0; i < c->m.nheaps; i++)
    if (k->heaps & (1ull << i))
      cJSON_AddItemToArray(hs, cJSON_CreateString(c->m.heaps[i].name));
  cJSON_AddNumberToObject(o, "total_bytes", (double)k->total);
  cJSON_AddNumberToObject(o, "free_bytes", (double)k->sum);
  cJSON_AddNumberToObject(o, "minimum_free_bytes", (double)k->min_sum);
  cJSON_AddNumberToObject(o, "at_ms", at_ms(c, k->min_time));
  /* What ESP-IDF's heap_caps_get_minimum_free_size would say: the sum of
   * per-heap minima, reached at different moments. */
  uint64_t sum_of_minima = 0;
  for (size_t i = 0; i < c->m.nheaps; i++)
    if (k->heaps & (1ull << i))
      sum_of_minima += c->m.heaps[i].min_free;
  cJSON_AddNumberToObject(o, "sum_of_heap_minima", (double)sum_of_minima);
  return o;
}

static cJSON *lwm_result(ctx_t *c, const char *heap_filter, int caps_given, uint32_t caps) {
  cJSON *r = cJSON_CreateObject();
  cJSON *heaps = cJSON_AddArrayToObject(r, "heaps");
  for (size_t i = 0; i < c->m.nheaps; i++) {
    const htq_heap_t *h = &c->m.heaps[i];
    if (!heap_matches(h, heap_filter) || !heap_shown(&c->m, h))
      continue;
    cJSON *o = cJSON_CreateObject();
    heap_head(o, h);
    if (h->bounded) {
      cJSON_AddNumberToObject(o, "size", (double)h->size);
      cJSON_AddNumberToObject(o, "capacity_bytes", (double)h->capacity);
      cJSON_AddNumberToObject(o, "free_bytes", (double)h->now.free_bytes);
      cJSON_AddNumberToObject(o, "minimum_free_bytes", (double)h->min_free);
      cJSON_AddNumberToObject(o, "at_ms", at_ms(c, h->min_free_time));
      cJSON_AddNumberToObject(o, "largest_free_at_minimum", (double)h->min_free_largest);
    } else {
      /* No bounds: the system heap's low-water mark is its peak in use. */
      cJSON_AddNumberToObject(o, "used_bytes", (double)h->used);
      cJSON_AddNumberToObject(o, "peak_used_bytes", (double)h->peak_used);
      cJSON_AddNumberToObject(o, "at_ms", at_ms(c, h->peak_time));
    }
    cJSON_AddItemToArray(heaps, o);
  }
  /* In order of the masks, as stats lists caps (capstat_cmp). */
  qsort(c->m.masks, c->m.nmasks, sizeof *c->m.masks, mask_cmp);
  cJSON *masks = cJSON_AddArrayToObject(r, "caps");
  for (size_t i = 0; i < c->m.nmasks; i++)
    if (!caps_given || c->m.masks[i].mask == caps)
      cJSON_AddItemToArray(masks, mask_json(c, &c->m.masks[i]));
  return r;
}

static cJSON *window(ctx_t *c, uint64_t *since, uint64_t *until) {
  double s = num_opt(c->req, "since_ms", -1), u = num_opt(c->req, "until_ms", -1);
  *since = s >= 0 ? to_mono(c, s) : 0;
  *until = u >= 0 ? to_mono(c, u) : 0;
  if (*since && *until && *until < *since)
    return htq_error(HTQ_USAGE, "--until is before --since");
  return NULL;
}

static cJSON *cmd_lwm(sqlite3 *db, const cJSON *req) {
  ctx_t c;
  cJSON *fail = ctx_open(&c, db, req, 1);
  const char *heap = str_opt(req, "heap");
  const cJSON *jcaps = cJSON_GetObjectItemCaseSensitive(req, "caps");
  uint32_t caps = cJSON_IsNumber(jcaps) ? (uint32_t)jcaps->valuedouble : 0;
  uint64_t since = 0, until = 0;
  if (!fail)
    fail = check_heap_filter(&c, heap);
  if (!fail)
    fail = window(&c, &since, &until);
  if (!fail && (since || until || (jcaps && !find_mask(&c.m, caps))))
    fail = ctx_rebuild(&c, since, until, caps);
  if (fail) {
    ctx_free(&c);
    return fail;
  }
  cJSON *body = lwm_result(&c, heap, jcaps != NULL, caps);
  cJSON *r = result_with_session(&c);
  if (since || until) {
    cJSON *w = cJSON_AddObjectToObject(r, "window");
    cJSON_AddNumberToObject(w, "since_ms", since ? at_ms(&c, since) : 0);
    if (until)
      cJSON_AddNumberToObject(w, "until_ms", at_ms(&c, until));
    else
      cJSON_AddNullToObject(w, "until_ms");
  }
  move_members(r, body);
  ctx_free(&c);
  return htq_ok(r);
}

static double frag_of(uint64_t free_bytes, uint64_t largest) {
  return free_bytes ? 1.0 - (double)largest / (double)free_bytes : 0.0;
}

static cJSON *frag_result(ctx_t *c, const char *heap_filter) {
  cJSON *r = cJSON_CreateObject();
  cJSON *heaps = cJSON_AddArrayToObject(r, "heaps");
  for (size_t i = 0; i < c->m.nheaps; i++) {
    const htq_heap_t *h = &c->m.heaps[i];
    if (!h->bounded || !heap_matches(h, heap_filter))
      continue;
    cJSON *o = cJSON_CreateObject();
    heap_head(o, h);
    cJSON_AddNumberToObject(o, "free_bytes", (double)h->now.free_bytes);
    cJSON_AddNumberToObject(o, "largest_free_block", (double)h->now.largest_free);
    cJSON_AddNumberToObject(o, "free_blocks", (double)h->now.free_blocks);
    cJSON_AddNumberToObject(o, "fragmentation", frag_of(h->now.free_bytes, h->now.largest_free));
    cJSON *w = cJSON_AddObjectToObject(o, "worst");
    cJSON_AddNumberToObject(w, "fragmentation", h->worst_frag);
    cJSON_AddNumberToObject(w, "at_ms", at_ms(c, h->worst_frag_time));
    cJSON_AddNumberToObject(w, "free_bytes", (double)h->worst_free);
    cJSON_AddNumberToObject(w, "largest_free_block", (double)h->worst_largest);
    cJSON_AddNumberToObject(w, "free_blocks", (double)h->worst_nfree);
    cJSON_AddItemToArray(heaps, o);
  }
  return r;
}

static cJSON *cmd_frag(sqlite3 *db, const cJSON *req) {
  ctx_t c;
  const char *heap = str_opt(req, "heap");
  cJSON *fail = ctx_open(&c, db, req, 1);
  if (!fail)
    fail = check_heap_filter(&c, heap);
  if (fail) {
    ctx_free(&c);
    return fail;
  }
  return finish_view(&c, frag_result(&c, heap));
}

/* ======================================================================
 * top and timeline
 * ==================================================================== */

static cJSON *top_result(htq_model_t *m, top_by_t by, size_t limit) {
  static const char *const names[] = {"bytes", "count", "temporary"};
  cJSON *sites = sites_json(m, by, limit);
  if (!sites)
    return NULL;
  cJSON *r = cJSON_CreateObject();
  cJSON_AddStringToObject(r, "by", names[by]);
  cJSON_AddItemToObject(r, "sites", sites);
  return r;
}

static cJSON *cmd_top(sqlite3 *db, const cJSON *req) {
  const char *by = str_opt(req, "by");
  top_by_t key = TOP_BYTES;
  if (by && strcmp(by, "bytes") != 0) {
    if (strcmp(by, "count") == 0)
      key = TOP_COUNT;
    else if (strcmp(by, "temporary") == 0)
      key = TOP_TEMPORARY;
    else
      return htq_error(HTQ_USAGE, "--by takes bytes, count or temporary");
  }
  ctx_t c;
  cJSON *fail = ctx_open(&c, db, req, 1);
  if (fail) {
    ctx_free(&c);
    return fail;
  }
  return finish_view(&c, top_result(&c.m, key, (size_t)num_opt(req, "limit", 20)));
}

/* Per heap, one point per step: the state at the end of the step and the
 * extremes (peak in use, lowest free) reached in it -- exact, whatever the
 * sampling. Without a step, every stored point. */
static cJSON *timeline_result(ctx_t *c, const char *heap_filter, double step_ms) {
  cJSON *r = cJSON_CreateObject();
  cJSON_AddNumberToObject(r, "step_ms", step_ms);
  cJSON *heaps = cJSON_AddArrayToObject(r, "heaps");
  for (size_t i = 0; i < c->m.nheaps; i++) {
    const htq_heap_t *h = &c->m.heaps[i];
    if (!heap_matches(h, heap_filter) || !heap_shown(&c->m, h))
      continue;
    cJSON *o = cJSON_CreateObject();
    heap_head(o, h);
    cJSON *pts = cJSON_AddArrayToObject(o, "points");
    for (size_t k = 0; k < h->nsamples;) {
      const htq_sample_t *p = &h->samples[k];
      double t = at_ms(c, p->t);
      double bucket = step_ms > 0 ? (double)(uint64_t)(t / step_ms) * step_ms : t;
      uint64_t min_free = p->min_free;
      int64_t peak_used = p->peak_used;
      size_t j = k;
      while (step_ms > 0 && j + 1 < h->nsamples &&
             at_ms(c, h->samples[j + 1].t) < bucket + step_ms) {
        j++;
        if (h->samples[j].min_free < min_free)
          min_free = h->samples[j].min_free;
        if (h->samples[j].peak_used > peak_used)
          peak_used = h->samples[j].peak_used;
      }
      const htq_sample_t *e = &h->samples[j];
      cJSON *pt = cJSON_CreateObject();
      cJSON_AddNumberToObject(pt, "t_ms", step_ms > 0 ? bucket : t);
      cJSON_AddNumberToObject(pt, "used_bytes", (double)e->used);
      cJSON_AddNumberToObject(pt, "peak_used_bytes", (double)peak_used);
      if (h->bounded) {
        cJSON_AddNumberToObject(pt, "free_bytes", (double)e->free);
        cJSON_AddNumberToObject(pt, "min_free_bytes", (double)min_free);
        cJSON_AddNumberToObject(pt, "largest_free_block", (double)e->largest);
        cJSON_AddNumberToObject(pt, "free_blocks", (double)e->nfree);
      }
      cJSON_AddItemToArray(pts, pt);
      k = j + 1;
    }
    cJSON_AddItemToArray(heaps, o);
  }
  return r;
}

static cJSON *cmd_timeline(sqlite3 *db, const cJSON *req) {
  ctx_t c;
  const char *heap = str_opt(req, "heap");
  double step = num_opt(req, "step_ms", 0);
  cJSON *fail = ctx_open(&c, db, req, 1);
  if (!fail)
    fail = check_heap_filter(&c, heap);
  if (fail) {
    ctx_free(&c);
    return fail;
  }
  return finish_view(&c, timeline_result(&c, heap, step));
}

/* ======================================================================
 * diff
 * ==================================================================== */

static const htq_site_t *same_site(const htq_model_t *m, const htq_site_t *s) {
  for (size_t i = 0; i < m->nsites; i++) {
    const htq_site_t *t = &m->sites[i];
    if (t->line == s->line && strcmp(t->file, s->file) == 0 && strcmp(t->func, s->func) == 0 &&
        strcmp(t->type, s->type) == 0)
      return t;
  }
  return NULL;
}

static void diff_row(cJSON *list, const htq_site_t *key, const htq_site_t *a, const htq_site_t *b) {
  static const htq_site_t zero;
  a = a ? a : &zero;
  b = b ? b : &zero;
  if (a->live_bytes == b->live_bytes && a->peak_live == b->peak_live &&
      a->live_blocks == b->live_blocks)
    return;
  cJSON *o = cJSON_CreateObject();
  add_site(o, key, key->id);
  cJSON_AddNumberToObject(o, "leaked_blocks_1", (double)a->live_blocks);
  cJSON_AddNumberToObject(o, "leaked_blocks_2", (double)b->live_blocks);
  cJSON_AddNumberToObject(o, "leaked_bytes_1", (double)a->live_bytes);
  cJSON_AddNumberToObject(o, "leaked_bytes_2", (double)b->live_bytes);
  cJSON_AddNumberToObject(o, "leaked_bytes_delta", (double)b->live_bytes - (double)a->live_bytes);
  cJSON_AddNumberToObject(o, "peak_bytes_1", (double)a->peak_live);
  cJSON_AddNumberToObject(o, "peak_bytes_2", (double)b->peak_live);
  cJSON_AddNumberToObject(o, "peak_bytes_delta", (double)b->peak_live - (double)a->peak_live);
  cJSON_AddItemToArray(list, o);
}

static cJSON *cmd_diff(sqlite3 *db, const cJSON *req) {
  const cJSON *s1 = cJSON_GetObjectItemCaseSensitive(req, "session1");
  const cJSON *s2 = cJSON_GetObjectItemCaseSensitive(req, "session2");
  if (!cJSON_IsNumber(s1) || !cJSON_IsNumber(s2))
    return htq_error(HTQ_USAGE, "diff needs two sessions: heapctl diff S1 S2");
  ctx_t a, b;
  cJSON *r1 = cJSON_CreateObject(), *r2 = cJSON_CreateObject();
  cJSON_AddNumberToObject(r1, "session", s1->valuedouble);
  cJSON_AddNumberToObject(r2, "session", s2->valuedouble);
  cJSON *fail = ctx_open(&a, db, r1, 1);
  cJSON *fail2 = fail ? NULL : ctx_open(&b, db, r2, 1);
  cJSON_Delete(r1);
  cJSON_Delete(r2);
  if (fail || fail2) {
    ctx_free(&a);
    if (!fail)
      ctx_free(&b);
    return fail ? fail : fail2;
  }
  cJSON *r = cJSON_CreateObject();
  cJSON_AddItemToObject(r, "session1", a.session);
  cJSON_AddItemToObject(r, "session2", b.session);
  a.session = b.session = NULL;
  cJSON *list = cJSON_AddArrayToObject(r, "sites");
  for (size_t i = 0; i < a.m.nsites; i++)
    diff_row(list, &a.m.sites[i], &a.m.sites[i], same_site(&b.m, &a.m.sites[i]));
  for (size_t i = 0; i < b.m.nsites; i++)
    if (!same_site(&a.m, &b.m.sites[i]))
      diff_row(list, &b.m.sites[i], NULL, &b.m.sites[i]);
  cJSON_AddNumberToObject(r, "leaked_bytes_1", (double)a.m.cur_bytes);
  cJSON_AddNumberToObject(r, "leaked_bytes_2", (double)b.m.cur_bytes);
  cJSON_AddNumberToObject(r, "peak_bytes_1", (double)a.m.peak_bytes);
  cJSON_AddNumberToObject(r, "peak_bytes_2", (double)b.m.peak_bytes);
  ctx_free(&a);
  ctx_free(&b);
  return htq_ok(r);
}

/* ======================================================================
 * events
 * ==================================================================== */

typedef struct {
  ctx_t *c;
  htq_model_t sites;  /* only the sites are loaded */
  htq_livemap_t live; /* addresses allocated and not yet freed: the replay's question */
  uint64_t from, limit, n;
  cJSON *list;
} events_ctx_t;

/* The listing merges the streams as the analysis does (htq_replay's
 * held): an allocation timed a moment before the free of its address in
 * another stream is listed after that free. */
static int events_holds(uint64_t ptr, void *user) {
  events_ctx_t *e = user;
  return htq_livemap_has(&e->live, ptr);
}

static int event_row(const ht_event_t *ev, void *user) {
  events_ctx_t *e = user;
  uint64_t gone = htq_event_frees(ev), got = htq_event_allocates(ev);
  if (gone)
    htq_livemap_take(&e->live, gone, NULL);
  if (got && htq_livemap_put(&e->live, &(htq_block_t){.ptr = got}) < 0)
    return -1;
  uint64_t n = e->n++;
  if (n < e->from)
    return 0;
  if (n >= e->from + e->limit)
    return 1; /* stop the replay */
  char buf[32], caps[160];
  cJSON *o = cJSON_CreateObject();
  cJSON_AddNumberToObject(o, "n", (double)n);
  cJSON_AddNumberToObject(o, "stream", ev->stream);
  cJSON_AddNumberToObject(o, "seq", (double)ev->seq);
  cJSON_AddNumberToObject(o, "t_ms", at_ms(e->c, ev->time_ns));
  cJSON_AddStringToObject(o, "op", ht_op_name((int)ev->op));
  if (ev->op == HT_OP_FAILED)
    cJSON_AddStringToObject(o, "failed_op", ht_op_name((int)ev->failed_op));
  snprintf(buf, sizeof buf, "0x%llx", (unsigned long long)ev->ptr);
  cJSON_AddStringToObject(o, "ptr", buf);
  if (ev->op == HT_OP_REALLOC) {
    snprintf(buf, sizeof buf, "0x%llx", (unsigned long long)ev->old_ptr);
    cJSON_AddStringToObject(o, "old_ptr", buf);
  }
  cJSON_AddNumberToObject(o, "size", (double)ev->size);
  cJSON_AddNumberToObject(o, "usable", (double)ev->usable);
  cJSON_AddNumberToObject(o, "heap", ev->heap);
  cJSON_AddNumberToObject(o, "caps", ev->caps);
  cJSON_AddStringToObject(o, "caps_names", ht_caps_format(ev->caps, caps, sizeof caps));
  const htq_site_t *s = htq_model_site(&e->sites, ev->site);
  char site[600];
  snprintf(site, sizeof site, "%s:%u %s", s ? s->file : "?", s ? s->line : 0, s ? s->func : "?");
  cJSON_AddStringToObject(o, "site", site);
  cJSON_AddItemToArray(e->list, o);
  return 0;
}

static cJSON *cmd_events(sqlite3 *db, const cJSON *req) {
  ctx_t c;
  cJSON *fail = ctx_open(&c, db, req, 0);
  if (fail) {
    ctx_free(&c);
    return fail;
  }
  events_ctx_t e = {.c = &c,
                    .from = (uint64_t)num_opt(req, "from", 0),
                    .limit = (uint64_t)num_opt(req, "limit", 100),
                    .list = cJSON_CreateArray()};
  char err[512] = "";
  htq_livemap_init(&e.live);
  int rc = htq_model_init(&e.sites, db, c.id, err, sizeof err);
  if (rc == 0)
    rc = htq_replay(db, c.id, event_row, events_holds, &e, err, sizeof err);
  if (rc == -1 && !err[0])
    snprintf(err, sizeof err, "out of memory listing the events of session %lld", (long long)c.id);
  htq_model_free(&e.sites);
  htq_livemap_free(&e.live);
  if (rc < 0) {
    cJSON_Delete(e.list);
    ctx_free(&c);
    return htq_error(HTQ_FAILED, "%s", err);
  }
  cJSON *r = result_with_session(&c);
  cJSON_AddNumberToObject(r, "from", (double)e.from);
  cJSON_AddItemToObject(r, "events", e.list);
  ctx_free(&c);
  return htq_ok(r);
}

/* ======================================================================
 * export: one report with everything
 * ==================================================================== */

static cJSON *cmd_export(sqlite3 *db, const cJSON *req) {
  ctx_t c;
  cJSON *fail = ctx_open(&c, db, req, 2);
  if (fail) {
    ctx_free(&c);
    return fail;
  }
  cJSON *parts[] = {stats_result(&c, (size_t)-1),    leaks_result(&c, BY_SITE, 0, 0),
                    lwm_result(&c, NULL, 0, 0),      frag_result(&c, NULL),
                    top_result(&c.m, TOP_BYTES, 20), timeline_result(&c, NULL, 0)};
  static const char *const names[] = {"stats", "leaks", "lwm", "frag", "top", "timeline"};
  cJSON *r = cJSON_CreateObject();
  cJSON_AddStringToObject(r, "format", "heaptrace-report");
  cJSON_AddNumberToObject(r, "version", 1);
  cJSON_AddItemToObject(r, "session", c.session);
  c.session = NULL;
  int ok = 1;
  for (size_t i = 0; i < sizeof parts / sizeof *parts; i++) {
    if (parts[i])
      cJSON_AddItemToObject(r, names[i], parts[i]);
    else
      ok = 0;
  }
  ctx_free(&c);
  if (!ok) {
    cJSON_Delete(r);
    return htq_error(HTQ_FAILED, "out of memory building the report");
  }
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
    {"sessions", cmd_sessions}, {"leaks", cmd_leaks}, {"stats", cmd_stats},
    {"lwm", cmd_lwm},           {"frag", cmd_frag},   {"top", cmd_top},
    {"timeline", cmd_timeline}, {"diff", cmd_diff},   {"events", cmd_events},
    {"export", cmd_export},
};

/* Numeric options and their bounds: every later conversion to an integer
 * is then defined (a double outside an integer's range is not). */
static const struct {
  const char *name;
  double max;
  int whole; /* must be an integer */
} numeric_options[] = {
    {"session", 9007199254740992.0, 1},
    {"session1", 9007199254740992.0, 1},
    {"session2", 9007199254740992.0, 1},
    {"min_bytes", 9007199254740992.0, 1},
    {"top", 9007199254740992.0, 1},
    {"sites", 9007199254740992.0, 1},
    {"limit", 9007199254740992.0, 1},
    {"from", 9007199254740992.0, 1},
    {"caps", 4294967295.0, 1},
    {"since_ms", 1e12, 0},
    {"until_ms", 1e12, 0},
    {"step_ms", 1e12, 0},
};

static cJSON *check_numbers(const cJSON *req) {
  for (size_t i = 0; i < sizeof numeric_options / sizeof *numeric_options; i++) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(req, numeric_options[i].name);
    if (!j || cJSON_IsNull(j))
      continue;
    double v = cJSON_IsNumber(j) ? j->valuedouble : -1;
    if (!(v >= 0 && v <= numeric_options[i].max) ||
        (numeric_options[i].whole && v != (double)(uint64_t)v))
      return htq_error(HTQ_USAGE, "\"%s\" must be a %s from 0 to %.0f", numeric_options[i].name,
                       numeric_options[i].whole ? "whole number" : "number",
                       numeric_options[i].max);
  }
  return NULL;
}

cJSON *htq_execute(sqlite3 *db, const cJSON *request) {
  const cJSON *cmd = cJSON_GetObjectItemCaseSensitive(request, "cmd");
  if (!cJSON_IsString(cmd))
    return htq_error(HTQ_USAGE, "the request has no \"cmd\" string");
  cJSON *bad = check_numbers(request);
  if (bad)
    return bad;
  for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
    if (strcmp(cmd->valuestring, commands[i].name) == 0)
      return commands[i].run(db, request);
  return htq_error(HTQ_USAGE, "unknown command '%s'", cmd->valuestring);
}
