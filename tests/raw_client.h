/* raw_client.h - speaking the heaptrace protocol by hand, for tests that
 * feed heaptraced inputs no real client would send.
 *
 * A raw_client_t is one Unix stream connection. Records are built with the
 * proto encoders (proto/ht_proto.h) so that a test changes only the bytes
 * it means to break. Events go through a raw_stream_t, which keeps what a
 * real client keeps per thread (sequence number, running totals, delta
 * state) and collects encoded events until a test ships them as one EVENTS
 * frame, honestly or with a header that lies.
 *
 * Helpers that set up a scenario assert (Criterion) when they fail;
 * raw_send and raw_wait_closed report, because a hostile test expects the
 * daemon to hang up on it.
 */
#ifndef HT_RAW_CLIENT_H
#define HT_RAW_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "ht_proto.h"

#define RAW_STREAM_BYTES (64 * 1024) /* pending event bytes of one stream */
#define RAW_WAIT_MS 5000             /* how long raw_wait_closed waits by default */

typedef struct {
  int fd;
} raw_client_t;

/* Connects to the Unix socket at path; asserts on failure. */
void raw_connect(raw_client_t *c, const char *path);
/* Closes the connection (a disconnect, as far as the daemon knows). */
void raw_close(raw_client_t *c);

/* Sends n bytes as they are. Returns 0, or -errno when the daemon has
 * already closed the connection (EPIPE, ECONNRESET). Never raises SIGPIPE. */
int raw_send(raw_client_t *c, const void *p, size_t n);

/* Reads and discards until the daemon closes the connection or timeout_ms
 * passes. Returns 1 when it closed (EOF or reset), 0 on timeout. */
int raw_wait_closed(raw_client_t *c, int timeout_ms);

/* Writes a valid HELLO frame (version HT_PROTO_VERSION, pid, app, one argv
 * entry: app) into out. Returns its length; asserts that it fits. Tests
 * that break a handshake patch these bytes. */
size_t raw_encode_hello(uint8_t *out, size_t cap, uint32_t pid, const char *app);
/* The same with the handshake's time, flags (HT_HELLO_F_*) and version. */
size_t raw_encode_hello_as(uint8_t *out, size_t cap, uint32_t pid, const char *app,
                           uint64_t start_realtime_ns, uint16_t flags, uint16_t version);
/* A client's account of a session that ended with no daemon (left.h):
 * HELLO (flag reconnect) of pid, app and start_realtime_ns, then an END
 * (clean) counting undelivered events. Returns its length. */
size_t raw_encode_account(uint8_t *out, size_t cap, uint32_t pid, const char *app,
                          uint64_t start_realtime_ns, uint64_t undelivered);
/* Byte offsets of HELLO fields inside a frame from raw_encode_hello. */
#define RAW_HELLO_MAGIC_AT 5
#define RAW_HELLO_VERSION_AT 9

/* Record senders: each sends one whole, valid frame and asserts that the
 * bytes went out. */
void raw_hello(raw_client_t *c, uint32_t pid, const char *app);
void raw_site(raw_client_t *c, uint32_t id, uint32_t line, const char *file, const char *func);
void raw_end(raw_client_t *c);
/* Sends a frame of the given type around payload (n bytes). */
void raw_frame(raw_client_t *c, uint8_t type, const void *payload, size_t n);

/* ---- events ---- */
typedef struct {
  uint32_t id;
  uint64_t next_seq; /* sequence number of the first pending event */
  uint64_t time_ns;  /* time of the last event */
  int64_t cur_bytes; /* running totals, as a client keeps them */
  int64_t cur_blocks;
  uint64_t total_bytes;
  ht_evstate_t enc; /* wire delta state: carries across frames */
  uint8_t buf[RAW_STREAM_BYTES];
  size_t len;     /* pending encoded bytes */
  uint32_t count; /* pending events */
} raw_stream_t;

/* A stream with id; event times start just after t0_ns. */
void raw_stream_init(raw_stream_t *s, uint32_t id, uint64_t t0_ns);
/* Appends a MALLOC / FREE of size bytes at ptr from site (heap 0, caps
 * HT_SYSTEM_HEAP_CAPS, usable == size) and updates the running totals. */
void raw_stream_malloc(raw_stream_t *s, uint32_t site, uint64_t ptr, uint64_t size);
void raw_stream_free(raw_stream_t *s, uint32_t site, uint64_t ptr, uint64_t size);
/* Appends a REALLOC of the block at from (old_size bytes) to to (size
 * bytes, usable == size), and moves the running totals by the change. */
void raw_stream_realloc(raw_stream_t *s, uint32_t site, uint64_t from, uint64_t to,
                        uint64_t old_size, uint64_t size);
/* Appends ev as it is (seq and stream come from the frame; time_ns is
 * taken as given). For events no client would produce. */
void raw_stream_append(raw_stream_t *s, const ht_event_t *ev);

/* Ships the pending events as one EVENTS frame starting at s->next_seq and
 * advances it. Asserts that the bytes went out. */
void raw_send_events(raw_client_t *c, raw_stream_t *s);
/* Ships the pending events in a frame whose header says first_seq and
 * count, whatever is pending; next_seq becomes first_seq + pending count.
 * Returns what raw_send returned. */
int raw_send_events_as(raw_client_t *c, raw_stream_t *s, uint64_t first_seq, uint32_t count);

/* ---- a well-behaved session ---- */
/* What raw_session_begin + raw_session_finish send, for exact checks. */
#define RAW_SESSION_EVENTS 9
#define RAW_SESSION_ALLOCS 6
#define RAW_SESSION_FREES 3
#define RAW_SESSION_BYTES 1500 /* live at the end: 400 + 500 + 600 */
#define RAW_SESSION_BLOCKS 3

typedef struct {
  raw_client_t c;
  raw_stream_t s;
} raw_session_t;

/* HELLO, one SITE and six events (four mallocs, two frees) in one frame. */
void raw_session_begin(raw_session_t *g, const char *socket, uint32_t pid, const char *app);
/* Three more events in a second frame, END, and waits until the daemon
 * closes the connection (the session is committed); asserts that it did. */
void raw_session_finish(raw_session_t *g);

/* ---- control ---- */
/* Sends payload (n bytes, not necessarily JSON) as a CTL_REQUEST on a new
 * connection and returns the CTL_REPLY's JSON text (owned, NUL-terminated),
 * or NULL when the daemon closed without a well-formed reply. */
char *raw_control(const char *socket, const void *payload, size_t n);

/* Monotonic clock in ns, the clock of HELLO's start_mono_ns. */
uint64_t raw_now_ns(void);

#endif
