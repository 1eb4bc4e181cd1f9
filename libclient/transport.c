/* transport.c - the connection to heaptraced and the flusher thread.
 *
 * The first traced call connects (ht__transport_init), sends the HELLO
 * handshake and starts the flusher. The flusher wakes every
 * HT_FLUSH_INTERVAL_MS, or sooner when a ring passes half full or the
 * event clock wants an anchor (clock.c: within milliseconds at first),
 * and ships the committed bytes of every stream as EVENTS frames with one
 * sendmsg per stream, straight from the rings (no copy). At exit everything is
 * shipped, an END record closes the session, and the process waits
 * (bounded) until the daemon has read it: not until it is stored.
 *
 * When the daemon goes away the program goes on: events are still
 * recorded and discarded by the flusher, which counts them and reconnects
 * with backoff; each connection is an epoch (see stream.c) and a new
 * session, which learns through LOST records how many events of each
 * stream were not delivered. A fork child starts its own session. A
 * program may close the socket itself (one that daemonizes closes every
 * descriptor) and open something else at its number: every write first
 * checks that the descriptor is still the socket, and if not, leaves it
 * alone and reconnects as for a daemon gone away.
 *
 * Locks: init_lock guards (re)initialisation; list_lock the stream list;
 * io_lock the socket (flusher, SITE/HEAP records, ht_flush). None is taken
 * on the allocation hot path. A new thread's stream joins without a lock
 * (a stack the flusher empties), and in drop mode a thread that would wait
 * for io_lock to send a SITE record leaves the record to the flusher
 * instead (its stream holds the site; the flusher sends it before the
 * stream's events). In drop mode a thread that does wait for the locks (a
 * fork, a heap's registration) makes a flusher stuck on a full socket give
 * the connection up within HT_DROP_PATIENCE_MS.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "peer.h"

#define HT_FLUSH_INTERVAL_MS 50
#define HT_ANCHOR_RETRY_MS 1 /* the shortest sleep the clock may ask for */
#define HT_RETRY_FIRST_MS 100
#define HT_RETRY_MAX_MS 5000
/* Two connections in a row that the daemon closes sooner than this after
 * they were made mean it refuses this client (an older heaptraced refuses
 * a newer protocol version): it is warned about once, retried with a
 * growing interval, and not announced again until a connection lasts. */
#define HT_REFUSED_MS 1000
#define HT_END_WAIT_MS 5000
/* Drop mode: a program thread that needs the socket (a fork, a heap's
 * registration) waits this long at most for one that is full. */
#define HT_DROP_PATIENCE_MS 100

_Atomic int ht__tracing;
ht_mode_t ht__mode = HT_MODE_BLOCK;

static ht_config_t cfg;
static int cfg_loaded;
static int sock_fd = -1;
static dev_t sock_dev; /* the socket's identity: see sock_is_ours */
static ino_t sock_ino;
static _Atomic uint32_t conn_epoch; /* bumped by every successful connect; read by adopt */
static _Atomic pid_t conn_pid;      /* the process that made the connection (exec) */
static uint16_t hello_flags;        /* HT_HELLO_F_RECONNECT / _FORKED for the next HELLO */
static int ever_connected;
static uint64_t retry_at_ns, retry_ms = HT_RETRY_FIRST_MS;
static uint64_t connected_ns; /* when the current connection was made */
static int brief_losses;      /* connections in a row lost within HT_REFUSED_MS */
/* The protocol version this client speaks: HT_PROTO_VERSION, or an older
 * one while a daemon refuses the newer ones (an older heaptraced refuses a
 * newer version), down to HT_PROTO_OLDEST, the oldest whose events this
 * client writes (compact events); trying_older until one lasts (io_lock). */
#define HT_PROTO_OLDEST 2
static uint16_t proto_version = HT_PROTO_VERSION;
static int trying_older;
static uint64_t orphan_undelivered; /* of streams unmapped before reporting it */
static uint64_t unstreamed_ended;   /* ht__unstreamed an END counted (after a failed exec) */
/* The current connection's HELLO time, the events written on it in whole
 * EVENTS frames and those its LOST records counted; and, for PREVIOUS
 * records, those of the last connections lost, each `sent` once written
 * on the current connection (io_lock). A daemon that died may not have
 * read all that was written: the one started again counts the rest. An
 * account written on a connection that is lost in turn is sent again on
 * the next, as that one may never have been read either (the daemon
 * counts each account once, however often it comes). */
#define HT_PREVIOUS_MAX 4
static uint64_t conn_start_ns, conn_written, conn_reported;
static struct {
  uint64_t start_ns, events, reported;
  int sent;
} lost_conns[HT_PREVIOUS_MAX];
static int nlost_conns;
static _Atomic int init_state; /* 0 not yet, 1 done (tracing or not) */
static int exit_hooks_set;
/* 1 from the stall warning until the daemon reads again; a wait that
 * began before it did (resumed_ns) is not a new stall. */
static _Atomic int stalled;
static uint64_t stalled_since, resumed_ns; /* stall_lock */
/* Orders the two messages: program threads and the flusher may see the
 * start and the end of one stall at the same moment. */
static pthread_mutex_t stall_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t list_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t io_lock = PTHREAD_MUTEX_INITIALIZER;
/* Drop mode: how a wait for a full socket may end before HT_STALL_WARN_MS
 * (set by whoever takes io_lock; see wait_writable). */
typedef enum {
  PATIENCE_FLUSHER, /* once a program thread waits for the locks */
  PATIENCE_CALLER,  /* after HT_DROP_PATIENCE_MS: a program thread's own write */
  PATIENCE_EXIT,    /* never (the exit, ht_flush): delivery is what is asked for */
} patience_t;
static patience_t io_patience;
/* Program threads waiting for list_lock or io_lock (lock_io). */
static _Atomic int io_waiters;
static ht_stream_t *streams;
/* New threads' streams, pushed without a lock (ht__transport_adopt) and
 * moved to `streams` by whoever walks it next (collect_adopted). */
static _Atomic(ht_stream_t *) adopted;
static _Atomic uint32_t next_stream_id;
static pthread_t flusher;
static int flusher_running;
static _Atomic int flusher_alive; /* read by the fatal-signal handler */
static _Atomic int flusher_stop;
/* 1 once the flusher runs its own code: its thread start is behind it. */
static _Atomic uint32_t flusher_started;
static _Atomic uint32_t wake_word;

static uint64_t realtime_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ======================================================================
 * Socket I/O (io_lock held)
 * ==================================================================== */

/* 1 while sock_fd is still the socket connect_daemon made. A program may
 * close every descriptor (one that daemonizes does) and open others, which
 * take the lowest free numbers: writing at the number then would go into
 * the program's own connection, and closing it would close the program's
 * file. */
static int sock_is_ours(void) {
  struct stat sb;
  return sock_fd >= 0 && fstat(sock_fd, &sb) == 0 && S_ISSOCK(sb.st_mode) &&
         sb.st_dev == sock_dev && sb.st_ino == sock_ino;
}

/* Forgets the connection, closing the socket unless the program has put
 * something else at its number. */
static void drop_socket(void) {
  if (sock_is_ours())
    close(sock_fd);
  sock_fd = -1;
}

/* The connection is being lost: what was written on it is kept for the
 * next session to report, with the accounts written on it. The oldest
 * goes when there are too many (a daemon that keeps dying). io_lock held. */
static void remember_connection(void) {
  if (sock_fd < 0)
    return;
  for (int i = 0; i < nlost_conns; i++)
    lost_conns[i].sent = 0;
  if (conn_written == 0 && conn_reported == 0)
    return;
  if (nlost_conns == HT_PREVIOUS_MAX) {
    memmove(&lost_conns[0], &lost_conns[1], sizeof lost_conns - sizeof lost_conns[0]);
    nlost_conns--;
  }
  lost_conns[nlost_conns].start_ns = conn_start_ns;
  lost_conns[nlost_conns].events = conn_written;
  lost_conns[nlost_conns].reported = conn_reported;
  lost_conns[nlost_conns].sent = 0;
  nlost_conns++;
  conn_written = 0;
  conn_reported = 0;
}

/* 1 when the connection had lasted HT_REFUSED_MS by t_ns (a time of its
 * own, on the clock of connected_ns): it was not refused. */
static int lasted_by(uint64_t t_ns) {
  return t_ns - connected_ns >= HT_REFUSED_MS * 1000000ull;
}

/* The daemon went away, or the program closed the socket: the program
 * goes on; the flusher reconnects. */
static void lose_connection(int err) {
  if (sock_fd < 0)
    return;
  uint64_t now = ht__clock_real_ns();
  brief_losses = lasted_by(now) ? 0 : brief_losses + 1;
  if (!sock_is_ours()) {
    ht__warn("heaptrace: the program closed heaptrace's connection to heaptraced (descriptor "
             "%d); events are counted as undelivered until a new one is made",
             sock_fd);
    retry_ms = HT_RETRY_FIRST_MS;
  } else if (brief_losses < 2) {
    ht__warn("heaptrace: lost the connection to heaptraced at %s (%s); events are counted "
             "as undelivered until it is back",
             cfg.socket_path, strerror(err));
    retry_ms = HT_RETRY_FIRST_MS;
  } else if (brief_losses == 2 && proto_version > HT_PROTO_OLDEST) {
    /* Refused twice: the next tries speak the version before, quietly. */
    proto_version--;
    trying_older = 1;
    brief_losses = 1;
    retry_ms = HT_RETRY_FIRST_MS;
  } else if (brief_losses == 2) {
    ht__warn("heaptrace: heaptraced at %s closes this client's connections as soon as they "
             "are made, in protocol versions %d to %d alike (its log says why); events are "
             "counted as undelivered; retrying ever less often, then every %d s",
             cfg.socket_path, HT_PROTO_VERSION, HT_PROTO_OLDEST, HT_RETRY_MAX_MS / 1000);
    proto_version = HT_PROTO_VERSION; /* a daemon restarted later may speak it */
    trying_older = 0;
  }
  remember_connection();
  drop_socket();
  retry_at_ns = now + retry_ms * 1000000u;
}

void ht__transport_stalled(uint64_t since_ns) {
  pthread_mutex_lock(&stall_lock);
  if (since_ns >= resumed_ns && !atomic_load(&stalled)) {
    atomic_store(&stalled, 1);
    stalled_since = since_ns;
    double s = (double)(ht__clock_real_ns() - since_ns) / 1e9;
    if (ht__mode == HT_MODE_DROP)
      ht__warn("heaptrace: heaptraced at %s has read nothing for %.1f s (stopped, or behind with "
               "its writes); in drop mode the program does not wait: the connection is given up, "
               "events are counted as undelivered, and a new one is tried",
               cfg.socket_path, s);
    else
      ht__warn("heaptrace: heaptraced at %s has read nothing for %.0f s (stopped, or behind with "
               "its writes); this program waits for it when its buffers are full and at exit, "
               "and goes on once it reads again (HEAPTRACE_MODE=drop drops and counts events "
               "instead)",
               cfg.socket_path, s);
  }
  pthread_mutex_unlock(&stall_lock);
}

/* Ends a stall that was warned about: 1 if there was one, and *lasted_s
 * how long it lasted. */
static int end_stall(double *lasted_s) {
  if (HT_LIKELY(!atomic_load_explicit(&stalled, memory_order_relaxed)))
    return 0;
  pthread_mutex_lock(&stall_lock);
  int was = atomic_load(&stalled);
  atomic_store(&stalled, 0);
  if (was) {
    resumed_ns = ht__clock_real_ns();
    *lasted_s = (double)(resumed_ns - stalled_since) / 1e9;
  }
  pthread_mutex_unlock(&stall_lock);
  return was;
}

/* After a write went through: the end of a stall that was warned about. */
static void stall_over(void) {
  double lasted;
  if (end_stall(&lasted))
    ht__warn("heaptrace: heaptraced at %s reads again, after %.1f s%s", cfg.socket_path, lasted,
             ht__mode == HT_MODE_DROP ? "" : "; nothing was lost");
}

/* Waits until the socket takes more, saying so once the daemon has read
 * nothing for HT_STALL_WARN_MS. A lossless program waits for it (in the
 * flusher, or in its exit): returns 0. In drop mode nothing may wait that
 * long, so the connection is given up: -1. It is given up sooner where a
 * program thread would wait - its own write, or the flusher's while the
 * thread waits for the locks (a fork, a heap's registration; new threads
 * and new sites do not take them): after HT_DROP_PATIENCE_MS. The exit and
 * ht_flush(), which ask for delivery, keep waiting: giving up would leave
 * their last events uncounted.
 * since_ns: when the wait began (0: now). */
static int wait_writable(uint64_t *since_ns) {
  if (!*since_ns)
    *since_ns = ht__clock_real_ns();
  int drop = ht__mode == HT_MODE_DROP;
  for (;;) {
    uint64_t waited_ms = (ht__clock_real_ns() - *since_ns) / 1000000u;
    if (waited_ms >= HT_STALL_WARN_MS)
      break;
    uint64_t slice = HT_STALL_WARN_MS - waited_ms;
    if (drop && io_patience != PATIENCE_EXIT) {
      if (waited_ms >= HT_DROP_PATIENCE_MS &&
          (io_patience == PATIENCE_CALLER || atomic_load(&io_waiters) > 0))
        break;
      /* the flusher looks for waiters this often */
      slice = slice < HT_DROP_PATIENCE_MS ? slice : HT_DROP_PATIENCE_MS;
    }
    struct pollfd p = {sock_fd, POLLOUT, 0};
    if (poll(&p, 1, (int)slice) != 0)
      return 0;
  }
  ht__transport_stalled(*since_ns);
  if (drop)
    return -1;
  struct pollfd p = {sock_fd, POLLOUT, 0};
  poll(&p, 1, -1);
  return 0;
}

/* Takes io_lock, after list_lock with `list`, for a holder of patience p
 * (see wait_writable); a program thread (PATIENCE_CALLER) counts itself
 * among the waiters meanwhile. */
static void lock_io(int list, patience_t p) {
  int caller = p == PATIENCE_CALLER;
  if (caller)
    atomic_fetch_add(&io_waiters, 1);
  if (list)
    pthread_mutex_lock(&list_lock);
  pthread_mutex_lock(&io_lock);
  if (caller)
    atomic_fetch_sub(&io_waiters, 1);
  io_patience = p;
}

/* Drop mode, a daemon that reads nothing: the connection goes (the
 * daemon ends the session 'disconnected' once it reads again), what was
 * not shipped is counted as undelivered, and the flusher tries a new one
 * with backoff: from the first interval again if the connection carried
 * events for HT_REFUSED_MS before the stall began at since_ns (the
 * daemon read then, and may soon again), else the doubled one, as after
 * the loss of a connection. Said once per stall (ht__transport_stalled). */
static void give_up_connection(uint64_t since_ns) {
  if (lasted_by(since_ns))
    retry_ms = HT_RETRY_FIRST_MS;
  remember_connection();
  drop_socket();
  retry_at_ns = ht__clock_real_ns() + retry_ms * 1000000u;
}

/* Writes every byte of iov, retrying short writes, into the socket if it
 * is still ours (one fstat per shipment or record). */
static int write_all(struct iovec *iov, int iovcnt) {
  if (sock_fd >= 0 && !sock_is_ours()) {
    lose_connection(EBADF);
    return HT_ENOTCONN;
  }
  uint64_t since = 0; /* 0, or since when the socket has been full */
  while (iovcnt > 0 && sock_fd >= 0) {
    struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)iovcnt};
    ssize_t n = sendmsg(sock_fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        if (wait_writable(&since) == 0)
          continue;
        give_up_connection(since);
        return HT_ENOTCONN;
      }
      lose_connection(errno);
      return HT_ENOTCONN;
    }
    if (since) { /* it was full, and the daemon read from it */
      stall_over();
      since = 0;
    }
    while (iovcnt > 0 && (size_t)n >= iov->iov_len) {
      n -= (ssize_t)iov->iov_len;
      iov++;
      iovcnt--;
    }
    if (iovcnt > 0) {
      iov->iov_base = (uint8_t *)iov->iov_base + n;
      iov->iov_len -= (size_t)n;
    }
  }
  return iovcnt == 0 ? 0 : HT_ENOTCONN;
}

static int write_buf(const void *buf, size_t len) {
  struct iovec iov = {(void *)buf, len};
  return write_all(&iov, 1);
}

/* Takes io_lock for a program thread's record. In drop mode it does not
 * wait (returns 0) while someone holds the lock - the flusher, perhaps
 * waiting on a full socket: the record is left to the flusher
 * (ht__stream_pend_site). */
static int lock_io_for_record(void) {
  if (ht__mode != HT_MODE_DROP) {
    lock_io(0, PATIENCE_CALLER);
    return 1;
  }
  if (pthread_mutex_trylock(&io_lock) != 0)
    return 0;
  io_patience = PATIENCE_CALLER;
  return 1;
}

/* Drop mode: 1 when the socket takes a record now (POLLOUT: a quarter of
 * its buffer is free, far more than a record), so that the write will not
 * wait. io_lock held. */
static int sock_takes_record(void) {
  if (ht__mode != HT_MODE_DROP || sock_fd < 0)
    return 1;
  struct pollfd p = {sock_fd, POLLOUT, 0};
  return poll(&p, 1, 0) == 1 && (p.revents & POLLOUT);
}

int ht__transport_send_record_epoch(const uint8_t *buf, size_t len, uint32_t *epoch) {
  *epoch = 0;
  int cancel = ht__cancel_off();
  int rc = HT_EAGAIN;
  if (lock_io_for_record()) {
    rc = sock_takes_record() ? write_buf(buf, len) : HT_EAGAIN;
    if (rc == 0 && sock_fd >= 0)
      *epoch = conn_epoch;
    pthread_mutex_unlock(&io_lock);
  }
  ht__cancel_restore(cancel);
  return rc;
}

int ht__transport_send_record(const uint8_t *buf, size_t len) {
  int cancel = ht__cancel_off();
  lock_io(0, PATIENCE_CALLER);
  int rc = write_buf(buf, len);
  pthread_mutex_unlock(&io_lock);
  ht__cancel_restore(cancel);
  return rc;
}

/* Returns 0 once the record is on the connection; else (no connection,
 * or it went while the record waited) the count is still the caller's to
 * report. */
static int send_lost(uint32_t stream, uint64_t first_seq, uint64_t count, uint8_t why) {
  uint8_t buf[64];
  ht_wbuf_t w;
  ht_wbuf_init(&w, buf, sizeof buf);
  ht_lost_rec_t rec = {stream, first_seq, count, why};
  ht_proto_put_lost(&w, &rec);
  int rc = write_buf(buf, w.len);
  if (rc == 0)
    conn_reported += count;
  return rc;
}

/* ======================================================================
 * Shipping (list_lock and io_lock held)
 * ==================================================================== */

/* Tells a thread sleeping on a full ring that it drained (stream.c). */
static void wake_writer(ht_stream_t *s) {
  atomic_fetch_add_explicit(&s->drained, 1, memory_order_release);
  if (atomic_load(&s->waiting))
    syscall(SYS_futex, &s->drained, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

/* The events committed up to word (a commit word) and not shipped yet.
 * The word's seq runs on across epochs (stream.c), so this holds for a
 * word of any epoch: the thread's last of an old one, which it still shows
 * after restarting until it publishes an event of the new one, or one of
 * an epoch this side never shipped in (two new connections while the
 * thread made no event). */
static uint32_t events_to(const ht_stream_t *s, uint64_t word) {
  return (uint32_t)(word >> 32) - (uint32_t)s->shipped_seq;
}

/* Skips the stream's committed bytes up to word (a commit word) without
 * sending them: they belong to a connection that is gone. */
static void discard_to(ht_stream_t *s, uint64_t word) {
  uint32_t bytes = (uint32_t)word - (uint32_t)s->shipped_bytes;
  uint32_t count = events_to(s, word);
  s->shipped_bytes += bytes;
  s->shipped_seq += count;
  s->undelivered += count;
  atomic_store_explicit(&s->consumed, s->shipped_bytes, memory_order_release);
  wake_writer(s);
}

/* Brings the stream into the current epoch once its thread has switched:
 * what it wrote before the switch is discarded and reported. Returns 1
 * when the stream may ship. */
static int follow_epoch(ht_stream_t *s) {
  if (s->shipped_epoch == conn_epoch)
    return 1;
  uint64_t word = atomic_load_explicit(&s->commit, memory_order_acquire);
  if (atomic_load_explicit(&s->epoch_ack, memory_order_acquire) != conn_epoch) {
    /* Read after the commit word: everything in it is of older epochs. */
    discard_to(s, word);
    return 0;
  }
  uint64_t head = atomic_load_explicit(&s->restart_head, memory_order_relaxed);
  uint64_t seq = atomic_load_explicit(&s->restart_seq, memory_order_relaxed);
  s->undelivered += seq - s->shipped_seq;
  s->shipped_bytes = head;
  s->shipped_seq = s->epoch_seq = seq;
  /* Drops not yet reported belong to a connection that is gone: they go
   * with the undelivered events into this one's LOST record. */
  uint64_t lost = atomic_load_explicit(&s->lost, memory_order_relaxed);
  s->undelivered += lost - s->lost_sent;
  s->lost_sent = lost;
  s->shipped_epoch = conn_epoch;
  atomic_store_explicit(&s->consumed, s->shipped_bytes, memory_order_release);
  wake_writer(s);
  if (s->undelivered && send_lost(s->id, 0, s->undelivered, HT_LOST_UNDELIVERED) == 0)
    s->undelivered = 0;
  return 1;
}

/* Announces the sites the stream holds (drop mode: its thread did not
 * wait for the socket), before any of its events that name them. Called
 * after the commit word was read: the events up to it were committed
 * after their sites were held, so those sites are all seen here. */
static void send_held_sites(ht_stream_t *s) {
  uint32_t head = atomic_load_explicit(&s->pend_head, memory_order_acquire);
  uint32_t tail = atomic_load_explicit(&s->pend_tail, memory_order_relaxed);
  for (; tail != head; tail++) {
    uint32_t idx = s->pend_sites[tail % HT_PEND_SITES];
    uint8_t buf[HT_SITE_RECORD_MAX];
    size_t len;
    if (sock_fd >= 0 &&
        atomic_load_explicit(&ht__site_sent[idx], memory_order_relaxed) != conn_epoch &&
        (len = ht__site_record(idx, buf, sizeof buf)) > 0 && write_buf(buf, len) == 0)
      atomic_store_explicit(&ht__site_sent[idx], conn_epoch, memory_order_relaxed);
  }
  atomic_store_explicit(&s->pend_tail, tail, memory_order_release);
}

static void ship_stream(ht_stream_t *s) {
  if (!follow_epoch(s))
    return;
  uint64_t word = atomic_load_explicit(&s->commit, memory_order_acquire);
  send_held_sites(s);
  if (sock_fd < 0) {
    discard_to(s, word);
    return;
  }
  uint32_t bytes = (uint32_t)word - (uint32_t)s->shipped_bytes;
  uint32_t count = events_to(s, word);
  if (count > 0) {
    uint8_t head[HT_PROTO_EVENTS_HEAD];
    ht_proto_events_head(head, s->id, s->shipped_seq - s->epoch_seq, count, bytes);
    size_t pos = (size_t)(s->shipped_bytes & (HT_RING_BYTES - 1));
    size_t first = bytes <= HT_RING_BYTES - pos ? bytes : HT_RING_BYTES - pos;
    struct iovec iov[3] = {{head, sizeof head}, {s->ring + pos, first}, {s->ring, bytes - first}};
    if (write_all(iov, bytes > first ? 3 : 2) != 0)
      s->undelivered += count; /* counted, and reported after reconnecting */
    else
      conn_written += count;
    s->shipped_bytes += bytes;
    s->shipped_seq += count;
  }
  atomic_store_explicit(&s->consumed, s->shipped_bytes, memory_order_release);
  if (count > 0)
    wake_writer(s);
  uint64_t lost = atomic_load_explicit(&s->lost, memory_order_relaxed);
  /* Unsent, the drops go with the undelivered events to the next
   * connection (follow_epoch), or to END. */
  if (lost > s->lost_sent &&
      send_lost(s->id, s->shipped_seq - s->epoch_seq, lost - s->lost_sent, HT_LOST_DROPPED) == 0)
    s->lost_sent = lost;
}

/* Events the stream's thread dropped (drop mode) that no LOST record has
 * reported: a shipment reports them when connected (ship_stream), a new
 * epoch takes them into its undelivered count (follow_epoch). */
static uint64_t unreported_drops(const ht_stream_t *s) {
  return atomic_load_explicit(&s->lost, memory_order_relaxed) - s->lost_sent;
}

/* Moves the streams adopted since the last walk into `streams`, in the
 * current epoch (a connection made after a thread read conn_epoch is news
 * to its stream, as to those in the list). list_lock and io_lock held. */
static void collect_adopted(void) {
  ht_stream_t *s = atomic_exchange_explicit(&adopted, NULL, memory_order_acquire);
  while (s) {
    ht_stream_t *next = s->next;
    atomic_store_explicit(&s->epoch, conn_epoch, memory_order_relaxed);
    s->next = streams;
    streams = s;
    s = next;
  }
}

/* Ships every stream; unmaps streams whose thread exited once drained.
 * patience: the flusher's or the exit's (see wait_writable). */
static void ship_all_locked(void);
static void ship_all(patience_t patience) {
  lock_io(1, patience);
  ship_all_locked();
  pthread_mutex_unlock(&io_lock);
  pthread_mutex_unlock(&list_lock);
}

/* ship_all's work, list_lock and io_lock held. */
static void ship_all_locked(void) {
  collect_adopted();
  ht_stream_t **link = &streams;
  while (*link) {
    ht_stream_t *s = *link;
    int orphan = atomic_load_explicit(&s->orphaned, memory_order_acquire);
    ship_stream(s);
    uint64_t word = atomic_load_explicit(&s->commit, memory_order_relaxed);
    if (orphan && (uint32_t)word == (uint32_t)s->shipped_bytes) {
      /* The thread is gone; what it could not deliver is still reported,
       * drops not yet reported with it: now if connected in its epoch,
       * else at END. */
      uint64_t left = s->undelivered + unreported_drops(s);
      if (left &&
          (s->shipped_epoch != conn_epoch || send_lost(s->id, 0, left, HT_LOST_UNDELIVERED) != 0))
        orphan_undelivered += left;
      *link = s->next;
      ht__stream_unmap(s);
      continue;
    }
    link = &s->next;
  }
}

/* No lock: a new thread does not wait for a flusher busy on the socket. */
void ht__transport_adopt(ht_stream_t *s) {
  uint32_t epoch = atomic_load(&conn_epoch);
  s->id = atomic_fetch_add_explicit(&next_stream_id, 1, memory_order_relaxed) + 1;
  s->shipped_epoch = epoch;
  atomic_store_explicit(&s->epoch_ack, epoch, memory_order_relaxed);
  atomic_store_explicit(&s->epoch, epoch, memory_order_relaxed);
  ht_stream_t *head = atomic_load_explicit(&adopted, memory_order_relaxed);
  do
    s->next = head;
  while (!atomic_compare_exchange_weak_explicit(&adopted, &head, s, memory_order_release,
                                                memory_order_relaxed));
}

ht_stream_t *ht__transport_take_streams(void) {
  collect_adopted();
  ht_stream_t *s = streams;
  streams = NULL;
  return s;
}

void ht__transport_kick(void) {
  if (atomic_load_explicit(&wake_word, memory_order_relaxed))
    return;
  if (atomic_exchange(&wake_word, 1) == 0)
    syscall(SYS_futex, &wake_word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

/* ======================================================================
 * Connection and handshake
 * ==================================================================== */

/* Reads a whole small /proc file into buf without stdio. Returns bytes. */
static size_t read_proc(const char *path, char *buf, size_t cap) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return 0;
  size_t len = 0;
  while (len < cap) {
    ssize_t n = read(fd, buf + len, cap - len);
    if (n <= 0)
      break;
    len += (size_t)n;
  }
  close(fd);
  return len;
}

/* Encodes this process's HELLO, with flags (HT_HELLO_F_*; drop mode's is
 * added) and the handshake's time `start`, into the static buffer it
 * returns (*out_len bytes); NULL when it does not fit. io_lock held. */
static const uint8_t *encode_hello(uint16_t flags, uint64_t start, size_t *out_len) {
  static char exe[4096], cmdline[8192];
  static ht_hello_t h;
  static uint8_t buf[16384];
  memset(&h, 0, sizeof h);
  h.version = proto_version;
  h.ptr_size = (uint8_t)sizeof(void *);
  h.clock = 1;
  h.flags = (uint16_t)(flags | (ht__mode == HT_MODE_DROP ? HT_HELLO_F_DROP : 0));
  h.pid = (uint32_t)getpid();
  h.ppid = (uint32_t)getppid();
  h.start_realtime_ns = start;
  h.start_mono_ns = ht__clock_real_ns();
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  exe[n > 0 ? n : 0] = '\0';
  h.exe = ht_str(exe);
  size_t len = read_proc("/proc/self/cmdline", cmdline, sizeof cmdline);
  for (size_t at = 0; at < len && h.argc < HT_PROTO_MAX_ARGS;) {
    size_t l = strnlen(cmdline + at, len - at);
    h.argv[h.argc].s = cmdline + at;
    h.argv[h.argc].len = l;
    h.argc++;
    at += l + 1;
  }
  if (cfg.app[0]) {
    h.app = ht_str(cfg.app);
  } else {
    const char *slash = strrchr(exe, '/');
    h.app = ht_str(slash ? slash + 1 : exe);
  }
  ht_wbuf_t w;
  ht_wbuf_init(&w, buf, sizeof buf);
  ht_proto_put_hello(&w, &h);
  *out_len = w.len;
  return w.overflow ? NULL : buf;
}

/* Sends HELLO on the new socket. io_lock held. */
static int send_hello(void) {
  conn_start_ns = realtime_ns();
  conn_written = 0;
  conn_reported = 0;
  size_t len;
  const uint8_t *hello = encode_hello(hello_flags, conn_start_ns, &len);
  return hello ? write_buf(hello, len) : HT_ENOMEM;
}

/* A new connection is a new session: it learns every registered region
 * again. io_lock held. */
static int announce_heaps(void) {
  unsigned n = ht__heap_regions();
  for (unsigned i = 0; i < n; i++) {
    uint8_t buf[HT_PROTO_MAX_STRING + 128];
    size_t len = ht__heap_record(i, buf, sizeof buf);
    if (len && write_buf(buf, len) != 0)
      return -1;
  }
  return 0;
}

/* The PREVIOUS record of lost connection i, at buf; returns its length. */
#define HT_PREVIOUS_BYTES 64
static size_t encode_previous(int i, uint8_t buf[HT_PREVIOUS_BYTES]) {
  ht_wbuf_t w;
  ht_wbuf_init(&w, buf, HT_PREVIOUS_BYTES);
  ht_previous_rec_t rec = {lost_conns[i].start_ns, lost_conns[i].events, lost_conns[i].reported};
  ht_proto_put_previous(&w, &rec, proto_version);
  return w.len;
}

/* Tells the new session what was written on the connections lost before
 * it (PREVIOUS records), those not written on it yet; one whose write
 * failed, and those after it, wait for the next session. io_lock held. */
static int report_lost_connections(void) {
  for (int i = 0; i < nlost_conns && proto_version >= 3; i++) { /* PREVIOUS: version 3 on */
    if (lost_conns[i].sent)
      continue;
    uint8_t buf[HT_PREVIOUS_BYTES];
    if (write_buf(buf, encode_previous(i, buf)) != 0)
      return -1;
    lost_conns[i].sent = 1;
  }
  return 0;
}

/* A new socket, above the standard descriptors: a program that closed
 * stdout would otherwise print into it, or dup2() a file over it. Returns
 * the descriptor or a negative errno. */
static int new_socket(void) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || fd > STDERR_FILENO)
    return fd < 0 ? -errno : fd;
  int high = fcntl(fd, F_DUPFD_CLOEXEC, STDERR_FILENO + 1);
  int err = errno;
  close(fd);
  return high < 0 ? -err : high;
}

/* Connects and shakes hands; a new epoch begins. io_lock held. Returns 0
 * or a negative errno. */
static int connect_daemon(void) {
  if (!cfg.socket_path[0])
    return -ENAMETOOLONG;
  int fd = new_socket();
  struct stat sb;
  if (fd < 0)
    return fd;
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  memcpy(sa.sun_path, cfg.socket_path, strlen(cfg.socket_path) + 1);
  /* Not blocking: a daemon that accepts nothing (stopped) fills its queue
   * of new connections, and a blocking connect would then wait for it
   * with the transport's locks held - in the program's first allocation,
   * or in the flusher, which its exit waits for. EAGAIN is tried again
   * like any other refusal. */
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0 ||
      connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || fcntl(fd, F_SETFL, flags) != 0) {
    int err = errno;
    close(fd);
    return -err;
  }
  /* A daemon killed with -9 that is still exiting (peer.h) would take the
   * connection and lose it a moment later: a second warning. */
  if (ht_pid_exiting(ht_peer_pid(fd)) || fstat(fd, &sb) != 0) {
    close(fd);
    return -ECONNREFUSED;
  }
  sock_fd = fd;
  sock_dev = sb.st_dev;
  sock_ino = sb.st_ino;
  if (send_hello() != 0 || announce_heaps() != 0 || report_lost_connections() != 0) {
    remember_connection(); /* what it took of the accounts is sent again */
    drop_socket();
    return -EPIPE;
  }
  conn_epoch++;
  ever_connected = 1;
  atomic_store(&conn_pid, getpid());
  connected_ns = ht__clock_real_ns();
  return 0;
}

static void warn_reconnected(void) {
  if (proto_version < HT_PROTO_VERSION)
    ht__warn("heaptrace: reconnected to heaptraced at %s in protocol version %d (it is older "
             "than this library, which speaks %d); tracing goes on in a new session",
             cfg.socket_path, proto_version, HT_PROTO_VERSION);
  else
    ht__warn("heaptrace: reconnected to heaptraced at %s; tracing goes on in a new session",
             cfg.socket_path);
}

/* A new connection, flagged as a reconnection; on success the streams
 * learn its epoch from their epoch word. list_lock and io_lock held.
 * Returns connect_daemon()'s result. */
static int reconnect(void) {
  hello_flags |= HT_HELLO_F_RECONNECT;
  int rc = connect_daemon();
  if (rc == 0) {
    collect_adopted();
    for (ht_stream_t *s = streams; s; s = s->next)
      atomic_store_explicit(&s->epoch, conn_epoch, memory_order_relaxed);
  }
  return rc;
}

/* The flusher's retry: a new session once the daemon is back. list_lock
 * and io_lock held. The interval doubles with every try (lose_connection
 * starts it again, but for a daemon that refuses). */
static void maybe_reconnect(void) {
  uint64_t lasted = sock_fd >= 0 ? ht__clock_real_ns() - connected_ns : 0;
  if ((brief_losses >= 2 || trying_older) && lasted >= HT_REFUSED_MS * 1000000ull) {
    brief_losses = 0; /* taken at last: announced once it lasts */
    trying_older = 0;
    warn_reconnected();
  }
  /* A connection made after a stall (drop mode gave it up, or the daemon
   * died) that lasts twice as long as a stall takes to be said ends the
   * stall, if a write after a full socket did not. */
  double stall_s;
  if (lasted >= 2 * HT_STALL_WARN_MS * 1000000ull && end_stall(&stall_s))
    warn_reconnected();
  if (sock_fd >= 0 || !ever_connected || ht__clock_real_ns() < retry_at_ns)
    return;
  retry_ms = retry_ms * 2 > HT_RETRY_MAX_MS ? HT_RETRY_MAX_MS : retry_ms * 2;
  if (reconnect() != 0) {
    retry_at_ns = ht__clock_real_ns() + retry_ms * 1000000u;
    return;
  }
  if (brief_losses < 2 && !trying_older && !atomic_load(&stalled))
    warn_reconnected(); /* a stall is over when the daemon reads (stall_over) */
}

/* The daemon closes the connection once it has read END; waiting for that
 * (bounded) means that a query made after the process exited comes after
 * every event of it (the daemon answers a query once everything it read
 * before is stored). A daemon that does not answer in time costs the exit
 * HT_END_WAIT_MS. */
static void wait_for_receipt(int fd) {
  shutdown(fd, SHUT_WR);
  struct timeval tv = {HT_END_WAIT_MS / 1000, (HT_END_WAIT_MS % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  char byte;
  while (recv(fd, &byte, 1, 0) > 0) {
  }
}

/* Events s committed in this connection's epoch that were not shipped. */
static uint64_t unshipped(const ht_stream_t *s) {
  if (s->shipped_epoch != conn_epoch)
    return 0;
  uint64_t word = atomic_load_explicit(&s->commit, memory_order_acquire);
  return events_to(s, word);
}

/* Writes all of buf to fd; 0, or -1 with errno set. */
static int write_file(int fd, const void *buf, size_t len) {
  const uint8_t *p = buf;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n == 0)
      errno = EIO;
    if (n <= 0)
      return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

/* No daemon took the session's END (end_len bytes at end; it counts
 * `undelivered` events): the session's account - HELLO, the PREVIOUS
 * records of the connections lost, END, as a connection would have carried
 * them - is left beside the socket, in SOCKET.left.PID.TIME, for the next
 * daemon to take when it starts. Written under a .tmp name and renamed, so
 * that a daemon never reads half of one. Nothing is left when there is
 * nothing to count, never twice, and not for a daemon that closes this
 * client's connections as soon as they are made (one that refuses its
 * protocol version would refuse its account too). list_lock and io_lock
 * held. */
static void leave_account(const uint8_t *end, size_t end_len, uint64_t undelivered) {
  static int left;
  if (left || brief_losses >= 2 || (nlost_conns == 0 && undelivered == 0))
    return;
  left = 1;
  uint64_t now = realtime_ns();
  static char path[sizeof cfg.socket_path + 64], tmp[sizeof path + 8];
  snprintf(path, sizeof path, "%s.left.%ld.%llu", cfg.socket_path, (long)getpid(),
           (unsigned long long)now);
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  int err = fd < 0 ? errno : 0;
  if (fd >= 0) {
    size_t len;
    const uint8_t *hello = encode_hello(hello_flags | HT_HELLO_F_RECONNECT, now, &len);
    int rc = hello ? write_file(fd, hello, len) : (errno = ENOMEM, -1);
    for (int i = 0; rc == 0 && proto_version >= 3 && i < nlost_conns; i++) {
      uint8_t buf[HT_PREVIOUS_BYTES];
      rc = write_file(fd, buf, encode_previous(i, buf));
    }
    if (rc == 0)
      rc = write_file(fd, end, end_len);
    if (rc != 0)
      err = errno;
    if (close(fd) != 0 && !err)
      err = errno;
    if (!err && rename(tmp, path) != 0)
      err = errno;
    if (err)
      unlink(tmp);
  }
  if (!err) {
    ht__warn("heaptrace: no heaptraced took the end of the session (%llu events undelivered); "
             "its account is left in %s for the next one to start",
             (unsigned long long)undelivered, path);
  } else {
    ht__warn("heaptrace: no heaptraced took the end of the session (%llu events undelivered), "
             "and its account could not be left in %s: %s",
             (unsigned long long)undelivered, path, strerror(err));
  }
}

/* Sends END (list_lock and io_lock held) and closes the connection; with
 * wait, once the daemon has read it. With no connection to take it (the
 * daemon went away and a last try found none, or it went as END was
 * written), the session's account is left for the next daemon. For an
 * exec (which may fail, and tracing go on), what END counts is marked
 * counted, and the events still in the rings are not in it: they are the
 * next session's if the exec fails, and go with the image if not. */
static void send_end(uint8_t reason, uint8_t signal, int wait, int exec) {
  if (!ever_connected)
    return;
  uint64_t unstreamed = atomic_load(&ht__unstreamed);
  uint64_t undelivered = orphan_undelivered + (unstreamed - unstreamed_ended);
  collect_adopted();
  for (ht_stream_t *s = streams; s; s = s->next) {
    uint64_t lost = atomic_load_explicit(&s->lost, memory_order_relaxed);
    undelivered += s->undelivered + (exec ? 0 : unshipped(s)) + (lost - s->lost_sent);
    if (exec) {
      s->undelivered = 0;
      s->lost_sent = lost;
    }
  }
  if (exec) {
    orphan_undelivered = 0;
    unstreamed_ended = unstreamed;
  }
  uint8_t buf[32];
  ht_wbuf_t w;
  ht_wbuf_init(&w, buf, sizeof buf);
  ht_end_rec_t e = {.reason = reason, .undelivered = undelivered, .signal = signal};
  ht_proto_put_end(&w, &e);
  if (sock_fd >= 0 && write_buf(buf, w.len) == 0) {
    if (wait)
      wait_for_receipt(sock_fd);
    drop_socket();
    return;
  }
  leave_account(buf, w.len, undelivered);
}

/* The session's last moments (exit, a fatal signal): tracing goes off
 * before the last shipment, so that what the program's other threads
 * (still running while exit() runs the atexit handlers) record meanwhile
 * is not left behind unsent, then END. A thread that was in the middle of
 * an event may still finish it after the shipment: END counts such events
 * as undelivered. */
static void end_session(uint8_t reason, uint8_t signal, int wait) {
  atomic_store(&ht__tracing, 0);
  ship_all(PATIENCE_EXIT);
  lock_io(1, PATIENCE_EXIT);
  send_end(reason, signal, wait, 0);
  pthread_mutex_unlock(&io_lock);
  pthread_mutex_unlock(&list_lock);
}

/* A fatal signal (fatal.c): everything recorded is shipped and the session
 * ends "killed"; the process is about to die, so nothing waits for the
 * daemon, which has the bytes once they are in the socket. */
static void end_killed(int sig) {
  end_session(HT_END_KILLED, (uint8_t)sig, 0);
  ht__fatal_reported();
}

/* The flusher's sleep: HT_FLUSH_INTERVAL_MS, or less when the clock wants
 * an anchor sooner - the first ones come within milliseconds of start-up,
 * and until then every event pays for clock_gettime(). An anchor that was
 * due but could not be made is retried after HT_ANCHOR_RETRY_MS. */
static struct timespec flusher_sleep(void) {
  uint64_t ns = HT_FLUSH_INTERVAL_MS * 1000000ull, due = ht__clock_anchor_due_ns();
  if (due < ns)
    ns = due > HT_ANCHOR_RETRY_MS * 1000000ull ? due : HT_ANCHOR_RETRY_MS * 1000000ull;
  return (struct timespec){(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
}

static void *flusher_main(void *arg) {
  (void)arg;
  ht__fatal_on_flusher();
  atomic_store(&flusher_started, 1);
  syscall(SYS_futex, &flusher_started, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
  while (!atomic_load(&flusher_stop)) {
    struct timespec ts = flusher_sleep();
    syscall(SYS_futex, &wake_word, FUTEX_WAIT_PRIVATE, 0, &ts, NULL, 0);
    atomic_store(&wake_word, 0);
    int sig = ht__fatal_pending();
    if (sig) {
      end_killed(sig);
      break;
    }
    ht__clock_anchor(0);
    lock_io(1, PATIENCE_FLUSHER);
    maybe_reconnect();
    pthread_mutex_unlock(&io_lock);
    pthread_mutex_unlock(&list_lock);
    ship_all(PATIENCE_FLUSHER);
  }
  return NULL;
}

/* The exit, with no connection (the daemon went away, or drop mode gave
 * the connection up) and the next try not due yet: one try now, so that a
 * daemon that is there again learns, in a session of its own, how many
 * events it did not get (END counts them), rather than nothing. Not after
 * a connection the daemon closed as soon as it was made: one that refuses
 * this client (peer credentials, protocol version) would refuse again. */
static void reconnect_for_exit(void) {
  lock_io(1, PATIENCE_EXIT);
  if (sock_fd < 0 && ever_connected && brief_losses == 0)
    reconnect();
  pthread_mutex_unlock(&io_lock);
  pthread_mutex_unlock(&list_lock);
}

/* atexit and at_quick_exit: ship everything, close the session cleanly. */
static void transport_shutdown(void) {
  if (!atomic_load(&ht__tracing))
    return;
  int cancel = ht__cancel_off();
  if (flusher_running) {
    atomic_store(&flusher_stop, 1);
    ht__transport_kick();
    pthread_join(flusher, NULL);
    flusher_running = 0;
    atomic_store(&flusher_alive, 0);
  }
  reconnect_for_exit();
  end_session(HT_END_CLEAN, 0, 1);
  ht__cancel_restore(cancel);
}

/* list_lock and io_lock (for a holder that asks for delivery), if had
 * within ms: 0, or -1 holding neither. */
static int lock_io_within(unsigned ms) {
  uint64_t t = realtime_ns() + ms * 1000000ull;
  struct timespec until = {(time_t)(t / 1000000000u), (long)(t % 1000000000u)};
  if (pthread_mutex_timedlock(&list_lock, &until) != 0)
    return -1;
  if (pthread_mutex_timedlock(&io_lock, &until) != 0) {
    pthread_mutex_unlock(&list_lock);
    return -1;
  }
  io_patience = PATIENCE_EXIT;
  return 0;
}

/* The cancellation state of the thread in an exec, while it holds the
 * locks (ht__transport_exec to ht__transport_exec_failed). */
static int exec_cancel;

int ht__transport_exec(void) {
  /* The pid first, touching nothing: a vfork child shares the parent's
   * memory - its locks, which another of the parent's threads may need,
   * and the calling thread's own state (its cancellation state), which
   * the parent's thread has again once the child's exec succeeded. */
  if (atomic_load(&conn_pid) != getpid() ||
      !atomic_load_explicit(&init_state, memory_order_acquire) || !atomic_load(&ht__tracing))
    return 0;
  int cancel = ht__cancel_off();
  if (lock_io_within(HT_END_WAIT_MS) != 0) {
    ht__cancel_restore(cancel);
    return 0;
  }
  exec_cancel = cancel;                 /* connected once: conn_pid is set with ever_connected */
  if (sock_fd < 0 && brief_losses == 0) /* as at exit (reconnect_for_exit) */
    reconnect();
  ship_all_locked();
  send_end(HT_END_CLEAN, 0, 1, 1);
  return 1;
}

void ht__transport_exec_failed(void) {
  int err = errno;
  /* Quietly: nothing was lost that the program did not ask for. */
  if (reconnect() != 0)
    retry_at_ns = ht__clock_real_ns() + retry_ms * 1000000u;
  int cancel = exec_cancel;
  pthread_mutex_unlock(&io_lock);
  pthread_mutex_unlock(&list_lock);
  ht__cancel_restore(cancel);
  errno = err;
}

/* fork: the child must not write into the parent's connection nor ship
 * the parent's events. It forgets both and starts its own session on its
 * next traced call. */
static void atfork_prepare(void) {
  pthread_mutex_lock(&init_lock);
  lock_io(1, PATIENCE_CALLER);
  ht__clock_hold(1); /* no clock update half-published in the child */
}

static void atfork_parent(void) {
  ht__clock_hold(0);
  pthread_mutex_unlock(&io_lock);
  pthread_mutex_unlock(&list_lock);
  pthread_mutex_unlock(&init_lock);
}

static void atfork_child(void) {
  ht__clock_hold(0);
  pthread_mutex_unlock(&io_lock);
  pthread_mutex_unlock(&list_lock);
  pthread_mutex_unlock(&init_lock);
  /* A parent that never connected (tracing off, or not started: then the
   * child's first traced call starts it) leaves nothing to start again. */
  if (!ever_connected)
    return;
  flusher_running = 0;
  atomic_store(&flusher_alive, 0);
  atomic_store(&flusher_stop, 0);
  ht__fatal_forget();
  drop_socket();
  ever_connected = 0;
  atomic_store(&conn_pid, 0);
  brief_losses = 0;
  trying_older = 0;
  atomic_store(&next_stream_id, 0);
  orphan_undelivered = 0;
  atomic_store(&ht__unstreamed, 0);
  unstreamed_ended = 0;
  nlost_conns = 0; /* the parent's connections */
  conn_written = 0;
  conn_reported = 0;
  ht__stream_forget_all();
  hello_flags = HT_HELLO_F_FORKED;
  atomic_store(&init_state, 0);
  /* "On" until the child's first traced call connects it (or finds it
   * cannot): that call takes the slow path through ht__stream_get, which
   * initialises again. */
  atomic_store(&ht__tracing, cfg.disabled ? 0 : 1);
}

/* Why connect_daemon() failed with rc, for the warning: a file at the
 * path that is not a socket refuses like a socket nobody listens on. */
static const char *connect_failure(int rc) {
  struct stat sb;
  if (rc == -EAGAIN)
    return "its queue of new connections is full: is it stopped?";
  if (rc == -ECONNREFUSED && stat(cfg.socket_path, &sb) == 0 && !S_ISSOCK(sb.st_mode))
    return "the path is not a socket";
  return strerror(-rc);
}

static void init_locked(void) {
  if (!cfg_loaded) {
    ht__config_load(&cfg);
    ht__mode = cfg.mode;
    cfg_loaded = 1;
    /* Once per process, traced or not: the accounting needs usable sizes. */
    ht__sys_usable_setup(1);
  }
  if (cfg.disabled)
    return;
  if (!ever_connected && !(hello_flags & HT_HELLO_F_FORKED))
    ht__clock_init(-1); /* a fork child keeps the parent's mapping */
  lock_io(0, PATIENCE_CALLER);
  int rc = connect_daemon();
  pthread_mutex_unlock(&io_lock);
  if (rc != 0) {
    atomic_store(&ht__tracing, 0);
    if (!(hello_flags & HT_HELLO_F_FORKED))
      ht__warn("heaptrace: cannot connect to heaptraced at %s (%s); tracing is off. "
               "Start heaptraced or set HEAPTRACE_SOCKET.",
               cfg.socket_path[0] ? cfg.socket_path : "(no path)", connect_failure(rc));
    return;
  }
  atomic_store(&ht__tracing, 1);
  if (!exit_hooks_set) {
    atexit(transport_shutdown);
    at_quick_exit(transport_shutdown); /* C11's other way out, which skips atexit */
    exit_hooks_set = 1;
  }
  /* The flusher takes no signal meant for the process: one that kills it
   * must reach a thread that can wait for the flusher (fatal.c). */
  sigset_t old;
  ht__fatal_block_async(&old);
  atomic_store(&flusher_started, 0);
  if (pthread_create(&flusher, NULL, flusher_main, NULL) == 0) {
    flusher_running = 1;
    atomic_store(&flusher_alive, 1);
    /* Not before the thread's start is over: a fork must not find it
     * there. Under ASan that start allocates (GCC 12's libasan keeps no
     * allocator lock across fork), and a fork child whose parent's
     * flusher held such a lock hung on its first allocation. */
    while (atomic_load(&flusher_started) == 0)
      syscall(SYS_futex, &flusher_started, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  ht__fatal_install();
}

int ht__transport_flusher_alive(void) {
  return atomic_load(&flusher_alive);
}

/* The fork handlers, the transport's and then the heaps' and accounting's
 * (registry.c: theirs run first), are in place before anyone takes one of
 * their locks - when the library is loaded, or at the latest when the
 * transport starts: a fork while another thread makes the process's
 * first traced call (connects, joins the accounting) waits until it is
 * done. Registered later, such a fork left the child with init_lock or
 * the accounting's thread list held by a thread it does not have, and the
 * child's first traced call hung. */
static pthread_once_t fork_hooks_once = PTHREAD_ONCE_INIT;
static void set_fork_hooks(void) {
  pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
  ht__fork_guard();
}

__attribute__((constructor)) static void fork_hooks_at_load(void) {
  pthread_once(&fork_hooks_once, set_fork_hooks);
}

void ht__transport_init(void) {
  if (HT_LIKELY(atomic_load_explicit(&init_state, memory_order_acquire)))
    return;
  pthread_once(&fork_hooks_once, set_fork_hooks);
  int cancel = ht__cancel_off();
  pthread_mutex_lock(&init_lock);
  if (!atomic_load_explicit(&init_state, memory_order_relaxed)) {
    init_locked();
    atomic_store_explicit(&init_state, 1, memory_order_release);
  }
  pthread_mutex_unlock(&init_lock);
  ht__cancel_restore(cancel);
}

int ht_flush(void) {
  ht__transport_init();
  if (!atomic_load(&ht__tracing))
    return HT_ENOTCONN;
  int cancel = ht__cancel_off();
  ship_all(PATIENCE_EXIT); /* asked to deliver: in drop mode too, as the exit does */
  pthread_mutex_lock(&io_lock);
  int rc = sock_fd >= 0 ? 0 : HT_ENOTCONN;
  pthread_mutex_unlock(&io_lock);
  ht__cancel_restore(cancel);
  return rc;
}

int ht_tracing_enabled(void) {
  ht__transport_init();
  return atomic_load(&ht__tracing);
}
