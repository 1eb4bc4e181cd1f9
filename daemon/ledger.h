/* ledger.h - what the event loop has received of each session it has not
 * finished storing, kept where a kill -9 cannot take it.
 *
 * The daemon reads a client's frames at once and stores them when it has
 * a core to spare (worker.h): a daemon killed meanwhile used to take the
 * events it held to its grave, counted nowhere. The ledger is a file
 * beside the database (DB.ledger), mapped shared: for each such session
 * one entry with what its frames said - events received, events the
 * client reported dropped or undelivered - and enough of its handshake to
 * name it. The loop adds to an entry as it reads, a few stores into the
 * page cache, no system call; the kernel keeps the pages when the process
 * dies. An entry is cleared once the session's end is committed.
 *
 * At start the entries a killed daemon left are read back (htd_ledger_left)
 * and the store counts as lost whatever of them it never committed
 * (store.c, before the daemon listens); then htd_ledger_settle frees them.
 * A machine that crashes can lose the ledger's last pages, as it can the
 * database's last transactions: the ledger answers for the daemon's death,
 * not the machine's. The ledger is the loop's alone: no lock.
 */
#ifndef HTD_LEDGER_H
#define HTD_LEDGER_H

#include <stddef.h>
#include <stdint.h>

#include "ht_proto.h"

#define HTD_LEDGER_APP 64  /* bytes of the app name kept, NUL included */
#define HTD_LEDGER_EXE 128 /* bytes of the executable's path kept, NUL included */

/* One session's entry, as it lies in the file (256 bytes). */
typedef struct {
  int64_t session;      /* 0: the entry is free */
  uint64_t events;      /* events in the EVENTS frames received */
  uint64_t dropped;     /* events LOST records said the client dropped */
  uint64_t undelivered; /* events LOST and END records said it could not deliver */
  int64_t start_ns, start_mono_ns;
  uint32_t pid, ppid, flags, reserved;
  char app[HTD_LEDGER_APP]; /* NUL-terminated, cut short if longer */
  char exe[HTD_LEDGER_EXE];
} htd_ledger_entry_t;

typedef struct htd_ledger htd_ledger_t;

/* Opens (creating it 0600) and maps the ledger at path, its blocks
 * reserved on the disk. A file that is not a ledger of this layout is
 * logged and started afresh: it only ever held counts. Returns NULL with
 * msg set when the file cannot be opened, reserved or mapped. Every
 * function below takes a NULL ledger, and does nothing with it. */
htd_ledger_t *htd_ledger_open(const char *path, char *msg, size_t msglen);

/* The entries a previous daemon left (sessions it had not finished
 * storing), in a copy of the ledger's own; *n of them. */
const htd_ledger_entry_t *htd_ledger_left(const htd_ledger_t *l, size_t *n);

/* The left entries are accounted for in the database: frees them. */
void htd_ledger_settle(htd_ledger_t *l);

/* Takes an entry for a session whose handshake h was accepted. Returns the
 * entry's index, or -1 when the ledger cannot grow (logged once). */
int htd_ledger_begin(htd_ledger_t *l, int64_t session, const ht_hello_t *h);

/* Adds what frames of entry idx (from htd_ledger_begin; -1 is ignored)
 * said. */
void htd_ledger_add(htd_ledger_t *l, int idx, uint64_t events, uint64_t dropped,
                    uint64_t undelivered);

/* The session's end is committed: its entry is freed. */
void htd_ledger_finish(htd_ledger_t *l, int64_t session);

/* Entries in use. */
size_t htd_ledger_sessions(const htd_ledger_t *l);

/* Unmaps and closes; the file stays, with whatever entries are in use. */
void htd_ledger_close(htd_ledger_t *l);

#endif
