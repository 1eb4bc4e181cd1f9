/* worker.c - the ingest worker (worker.h).
 *
 * One inbox, in the order the loop sent: batches of frames, session ends,
 * ticks, barriers and releases. Two threads take turns at it, one step (a
 * frame, or a message of another kind) at a time and never two at once, so
 * the order holds. A thread at SCHED_IDLE does the work nobody waits for.
 * A thread at normal priority takes over while the inbox holds something
 * someone waits for - a query's barrier - or more than the soft limit, so
 * that programs keeping every core busy neither starve a query nor leave a
 * long burst for the end. A client's END is no such wait: the loop closes
 * its connection as soon as END is read, and the session is stored when a
 * core is free (or a query asks). A processed batch moves to the outbox, which
 * the loop drains (htd_worker_dispatch).
 *
 * The messages a session must be able to send whatever the memory - its
 * end and its release - are allocated with it, so that no session is left
 * unended for want of a few bytes. The list of sessions, which ticks and
 * barriers walk, has its own lock: the loop adds to it, the worker removes
 * from it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bufpool.h"
#include "worker.h"

#define WHY_MAX 256

typedef enum { MSG_FRAMES, MSG_REJECT, MSG_END, MSG_TICK, MSG_BARRIER, MSG_RELEASE } msg_kind_t;

typedef struct msg {
  struct msg *next;
  msg_kind_t kind;
  htd_wsess_t *ws;
  int urgent; /* someone waits for it: the normal-priority thread runs it */
  /* FRAMES: the bytes follow the message; off is how far they are done. */
  void *conn;
  size_t len, off;
  /* END */
  ht_end_t reason;
  char *detail;
  /* BARRIER */
  htd_job_t *job;
  /* FRAMES, once processed; REJECT, as sent */
  int rc;
  char why[WHY_MAX];
} msg_t;

struct htd_wsess {
  htd_session_t *s;
  htd_wsess_t *prev, *next; /* the worker's list, under list_lock */
  int broken;               /* worker: a frame broke the protocol; ignore the rest */
  msg_t *end, *release;     /* loop: sent at most once each, then the worker's */
};

struct htd_worker {
  htd_store_t *st;
  htd_worker_hooks_t hooks;
  pthread_t idle, fg;
  pthread_mutex_t lock;       /* everything below but the session list */
  pthread_cond_t cond[2];     /* each thread waits on its own: [0] idle, [1] normal priority */
  msg_t *inbox, **inbox_tail; /* the first message stays in while a thread works on it */
  msg_t *outbox, **outbox_tail;
  size_t backlog;
  int busy;   /* a thread is in a step of the first message */
  int urgent; /* messages in the inbox that someone waits for */
  int stopping, tick_queued;
  int stopped; /* the threads are gone: messages run on the caller's thread */
  msg_t tick;
  pthread_mutex_t list_lock;
  htd_wsess_t *sessions;
  htd_bufpool_t pool; /* the loop's: batches are made and freed there */
};

void htd_reject_detail(char *out, size_t cap, int err, const char *why) {
  snprintf(out, cap, "%s (%s)", why && why[0] ? why : ht_strerror(err), ht_err_name(err));
}

/* ======================================================================
 * The worker's side
 * ==================================================================== */

/* Ends ws's session, when it has not ended, and tells the server. */
static void end_session(htd_worker_t *w, htd_wsess_t *ws, ht_end_t reason, const char *detail) {
  if (htd_session_ended(ws->s))
    return;
  htd_session_end(ws->s, reason, detail);
  w->hooks.ended(htd_session_id(ws->s));
}

/* m's frame broke the protocol (m->rc, m->why): the session ends marked
 * and the rest of its frames are ignored. */
static void broke(htd_worker_t *w, htd_wsess_t *ws, const msg_t *m) {
  char detail[WHY_MAX + 32];
  htd_reject_detail(detail, sizeof detail, m->rc, m->why);
  ws->broken = 1;
  end_session(w, ws, HT_END_PROTOCOL_ERROR, detail);
}

/* Processes the next frame of batch m. Returns 1 when m is finished: its
 * last frame done, END taken, or the protocol broken. */
static int frame_step(htd_worker_t *w, msg_t *m) {
  htd_wsess_t *ws = m->ws;
  if (ws->broken || m->off >= m->len)
    return 1;
  ht_frame_t f;
  int rc = ht_proto_frame((const uint8_t *)(m + 1) + m->off, m->len - m->off, &f);
  if (rc == 0) {
    m->off += f.total;
    rc = htd_session_frame(ws->s, &f, m->why, sizeof m->why);
  } else {
    snprintf(m->why, sizeof m->why, "a batch cut inside a frame");
  }
  if (rc == 1) {
    m->rc = 1;
    w->hooks.ended(htd_session_id(ws->s));
    return 1;
  }
  if (rc < 0) {
    m->rc = rc;
    broke(w, ws, m);
    return 1;
  }
  return m->off >= m->len;
}

/* The loop found a protocol error of its own (a frame's length): it holds
 * unless a frame before it already broke the protocol. */
static void run_reject(htd_worker_t *w, msg_t *m) {
  if (m->ws->broken || htd_session_ended(m->ws->s))
    m->rc = 0; /* that one is in the log and the session already */
  else
    broke(w, m->ws, m);
}

/* Runs f on every session; the list may not change meanwhile. */
static void each_session(htd_worker_t *w, void (*f)(htd_session_t *s)) {
  pthread_mutex_lock(&w->list_lock);
  for (htd_wsess_t *ws = w->sessions; ws; ws = ws->next)
    f(ws->s);
  pthread_mutex_unlock(&w->list_lock);
}

static void tick_one(htd_session_t *s) {
  htd_session_flush(s);
  htd_session_progress(s);
}

static void release(htd_worker_t *w, htd_wsess_t *ws) {
  pthread_mutex_lock(&w->list_lock);
  if (ws->prev)
    ws->prev->next = ws->next;
  else
    w->sessions = ws->next;
  if (ws->next)
    ws->next->prev = ws->prev;
  pthread_mutex_unlock(&w->list_lock);
  htd_session_free(ws->s);
  free(ws->end); /* NULL once sent */
  free(ws->release);
  free(ws);
}

/* Runs one step of m, the inbox's first message, which this thread holds
 * (busy): one frame of a batch, or all of another kind. Returns 1 when m is
 * finished. */
static int step(htd_worker_t *w, msg_t *m) {
  switch (m->kind) {
  case MSG_FRAMES:
    return frame_step(w, m);
  case MSG_REJECT:
    run_reject(w, m);
    return 1;
  case MSG_END:
    end_session(w, m->ws, m->reason, m->detail);
    return 1;
  case MSG_TICK:
    each_session(w, tick_one);
    return 1;
  case MSG_BARRIER:
    each_session(w, htd_session_flush);
    htd_store_submit(w->st, m->job);
    return 1;
  case MSG_RELEASE:
    release(w, m->ws);
    return 1;
  }
  return 1;
}

/* A finished message, out of the inbox: a batch or a rejection goes to the
 * outbox (the loop is woken when it was empty), the rest is freed. */
static void finish(htd_worker_t *w, msg_t *m) {
  if (m->kind == MSG_TICK) { /* the worker's own: it may be queued again */
    pthread_mutex_lock(&w->lock);
    w->tick_queued = 0;
    pthread_mutex_unlock(&w->lock);
    return;
  }
  if (m->kind != MSG_FRAMES && m->kind != MSG_REJECT) {
    free(m->detail);
    free(m);
    return;
  }
  pthread_mutex_lock(&w->lock);
  int wake = w->outbox == NULL && !w->stopped;
  m->next = NULL;
  *w->outbox_tail = m;
  w->outbox_tail = &m->next;
  pthread_mutex_unlock(&w->lock);
  if (wake)
    w->hooks.notify(w->hooks.notify_arg);
}

/* 1 when the normal-priority thread is to take the steps: someone waits,
 * the worker stops, or the backlog is past its soft limit. Called with
 * lock. */
static int fg_wanted(const htd_worker_t *w) {
  return w->urgent > 0 || w->stopping || w->backlog > w->hooks.soft_limit;
}

/* Whether the thread (fg: the normal-priority one) may take the next step.
 * Called with lock. */
static int may_step(const htd_worker_t *w, int fg) {
  return w->inbox && !w->busy && fg == fg_wanted(w);
}

/* Wakes the thread that may take the next step, and only that one: the
 * other, at normal priority, would take a core from the traced programs
 * for nothing at every batch. Both when stopping. Called with lock. */
static void wake_stepper(htd_worker_t *w) {
  if (w->stopping) {
    pthread_cond_broadcast(&w->cond[0]);
    pthread_cond_broadcast(&w->cond[1]);
  } else if (w->inbox && !w->busy) {
    pthread_cond_signal(&w->cond[fg_wanted(w)]);
  }
}

/* Queues m; once the threads have stopped, runs it at once. urgent: someone
 * waits for it (a query), so the normal-priority thread
 * takes over until it is done. */
static void push(htd_worker_t *w, msg_t *m, int urgent) {
  m->next = NULL;
  m->urgent = urgent;
  pthread_mutex_lock(&w->lock);
  if (w->stopped) {
    pthread_mutex_unlock(&w->lock);
    while (!step(w, m)) {
    }
    finish(w, m);
    return;
  }
  *w->inbox_tail = m;
  w->inbox_tail = &m->next;
  w->backlog += m->len;
  w->urgent += urgent;
  wake_stepper(w);
  pthread_mutex_unlock(&w->lock);
}

/* Either thread: steps through the inbox while it may. A step is short (one
 * frame), so that when urgent work comes in while the idle thread, starved
 * by busy cores, holds a batch, the normal-priority thread waits for one
 * frame at most. */
static void serve(htd_worker_t *w, int fg) {
  pthread_mutex_lock(&w->lock);
  for (;;) {
    while (!may_step(w, fg) && !(w->stopping && !w->inbox && !w->busy))
      pthread_cond_wait(&w->cond[fg], &w->lock);
    if (!may_step(w, fg))
      break; /* stopping, and everything is done */
    msg_t *m = w->inbox;
    w->busy = 1;
    pthread_mutex_unlock(&w->lock);
    int done = step(w, m);
    pthread_mutex_lock(&w->lock);
    w->busy = 0;
    if (done) {
      w->inbox = m->next;
      if (!w->inbox)
        w->inbox_tail = &w->inbox;
      w->backlog -= m->len;
      w->urgent -= m->urgent;
      pthread_mutex_unlock(&w->lock);
      finish(w, m);
      pthread_mutex_lock(&w->lock);
    }
    wake_stepper(w);
  }
  pthread_mutex_unlock(&w->lock);
}

/* The threads are named (what top -H and the tests see) and the idle one
 * is put at SCHED_IDLE by htd_worker_start, before the daemon listens: a
 * thread that did it itself might not have run yet when a client came. */
static void *idle_main(void *arg) {
  serve(arg, 0);
  return NULL;
}

static void *fg_main(void *arg) {
  serve(arg, 1);
  return NULL;
}

/* ======================================================================
 * The loop's side
 * ==================================================================== */

htd_worker_t *htd_worker_start(htd_store_t *st, const htd_worker_hooks_t *hooks, char *msg,
                               size_t msglen) {
  htd_worker_t *w = calloc(1, sizeof *w);
  if (!w) {
    snprintf(msg, msglen, "out of memory");
    return NULL;
  }
  w->st = st;
  w->hooks = *hooks;
  w->inbox_tail = &w->inbox;
  w->outbox_tail = &w->outbox;
  w->tick.kind = MSG_TICK;
  htd_bufpool_init(&w->pool, hooks->soft_limit, hooks->keep_ticks);
  pthread_mutex_init(&w->lock, NULL);
  pthread_mutex_init(&w->list_lock, NULL);
  pthread_cond_init(&w->cond[0], NULL);
  pthread_cond_init(&w->cond[1], NULL);
  int rc = pthread_create(&w->idle, NULL, idle_main, w);
  if (rc == 0 && (rc = pthread_create(&w->fg, NULL, fg_main, w)) != 0) {
    pthread_mutex_lock(&w->lock);
    w->stopping = 1;
    wake_stepper(w);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->idle, NULL);
  }
  if (rc == 0) {
    pthread_setname_np(w->idle, "htd-ingest");
    pthread_setname_np(w->fg, "htd-ingest-fg");
    struct sched_param p = {0};
    int prc = pthread_setschedparam(w->idle, SCHED_IDLE, &p);
    if (prc != 0)
      htd_log(HTD_LOG_DEBUG, "ingest worker: no idle priority: %s", strerror(prc));
  }
  if (rc != 0) {
    snprintf(msg, msglen, "cannot start the ingest worker: %s", strerror(rc));
    pthread_mutex_destroy(&w->lock);
    pthread_mutex_destroy(&w->list_lock);
    pthread_cond_destroy(&w->cond[0]);
    pthread_cond_destroy(&w->cond[1]);
    free(w);
    return NULL;
  }
  return w;
}

htd_wsess_t *htd_worker_adopt(htd_worker_t *w, htd_session_t *s) {
  htd_wsess_t *ws = calloc(1, sizeof *ws);
  msg_t *end = calloc(1, sizeof *end), *rel = calloc(1, sizeof *rel);
  if (!ws || !end || !rel) {
    free(ws);
    free(end);
    free(rel);
    return NULL;
  }
  *end = (msg_t){.kind = MSG_END, .ws = ws};
  *rel = (msg_t){.kind = MSG_RELEASE, .ws = ws};
  ws->s = s;
  ws->end = end;
  ws->release = rel;
  pthread_mutex_lock(&w->list_lock);
  ws->next = w->sessions;
  if (w->sessions)
    w->sessions->prev = ws;
  w->sessions = ws;
  pthread_mutex_unlock(&w->list_lock);
  return ws;
}

int htd_worker_frames(htd_worker_t *w, htd_wsess_t *ws, void *conn, const uint8_t *bytes,
                      size_t len) {
  msg_t *m = htd_bufpool_get(&w->pool, sizeof *m + len);
  if (!m)
    return HT_ENOMEM;
  *m = (msg_t){.kind = MSG_FRAMES, .ws = ws, .conn = conn, .len = len};
  memcpy(m + 1, bytes, len);
  push(w, m, 0);
  return 0;
}

int htd_worker_reject(htd_worker_t *w, htd_wsess_t *ws, void *conn, int err, const char *why) {
  msg_t *m = calloc(1, sizeof *m);
  if (!m)
    return HT_ENOMEM;
  *m = (msg_t){.kind = MSG_REJECT, .ws = ws, .conn = conn, .rc = err};
  snprintf(m->why, sizeof m->why, "%s", why ? why : "");
  push(w, m, 0);
  return 0;
}

void htd_worker_end(htd_worker_t *w, htd_wsess_t *ws, ht_end_t reason, const char *detail) {
  msg_t *m = ws->end;
  if (!m)
    return; /* sent once already: the session is ended by then */
  ws->end = NULL;
  m->reason = reason;
  m->detail = detail ? strdup(detail) : NULL;
  push(w, m, 0);
}

void htd_worker_tick(htd_worker_t *w) {
  htd_bufpool_tick(&w->pool);
  pthread_mutex_lock(&w->lock);
  int queued = w->tick_queued;
  w->tick_queued = 1;
  pthread_mutex_unlock(&w->lock);
  if (!queued)
    push(w, &w->tick, 0);
}

void htd_worker_barrier(htd_worker_t *w, htd_job_t *job) {
  msg_t *m = calloc(1, sizeof *m);
  if (!m) { /* out of memory: the query reads what is committed */
    htd_store_submit(w->st, job);
    return;
  }
  m->kind = MSG_BARRIER;
  m->job = job;
  push(w, m, 1);
}

void htd_worker_release(htd_worker_t *w, htd_wsess_t *ws) {
  msg_t *m = ws->release;
  ws->release = NULL;
  push(w, m, 0);
}

void htd_worker_dispatch(htd_worker_t *w, void (*fn)(const htd_worker_result_t *r)) {
  pthread_mutex_lock(&w->lock);
  msg_t *list = w->outbox;
  w->outbox = NULL;
  w->outbox_tail = &w->outbox;
  pthread_mutex_unlock(&w->lock);
  while (list) {
    msg_t *next = list->next;
    htd_worker_result_t r = {list->conn, list->rc, list->why};
    fn(&r);
    if (list->kind == MSG_FRAMES)
      htd_bufpool_put(&w->pool, list);
    else
      free(list);
    list = next;
  }
}

size_t htd_worker_backlog(htd_worker_t *w) {
  pthread_mutex_lock(&w->lock);
  size_t b = w->backlog;
  pthread_mutex_unlock(&w->lock);
  return b;
}

size_t htd_worker_kept(const htd_worker_t *w) {
  return w->pool.kept_bytes;
}

void htd_worker_stop(htd_worker_t *w, void (*fn)(const htd_worker_result_t *r)) {
  pthread_mutex_lock(&w->lock);
  w->stopping = 1; /* the normal-priority thread does the rest */
  wake_stepper(w);
  pthread_mutex_unlock(&w->lock);
  pthread_join(w->idle, NULL);
  pthread_join(w->fg, NULL);
  pthread_mutex_lock(&w->lock);
  w->stopped = 1;
  pthread_mutex_unlock(&w->lock);
  htd_worker_dispatch(w, fn);
}

void htd_worker_free(htd_worker_t *w) {
  if (!w)
    return;
  while (w->sessions)
    release(w, w->sessions); /* connections never freed */
  pthread_mutex_destroy(&w->lock);
  pthread_mutex_destroy(&w->list_lock);
  pthread_cond_destroy(&w->cond[0]);
  pthread_cond_destroy(&w->cond[1]);
  htd_bufpool_release(&w->pool);
  free(w);
}
