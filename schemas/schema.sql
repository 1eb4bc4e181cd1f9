-- heaptrace store, schema version 1 (migrate-2.sql and migrate-3.sql bring it to 3).
--
-- Events are kept compactly: each row of event_chunks holds up to a few
-- thousand consecutive events of one client thread (a stream), encoded as
-- the EVENTS record of proto/PROTOCOL.md with the delta state reset at the
-- start of the chunk, so any chunk decodes on its own. The other tables are
-- what the events refer to (sessions, sites, heaps) and what was lost.
PRAGMA user_version = 1;

CREATE TABLE IF NOT EXISTS sessions (
  id            INTEGER PRIMARY KEY,
  pid           INTEGER NOT NULL,
  ppid          INTEGER NOT NULL,
  app           TEXT NOT NULL,
  exe           TEXT NOT NULL,
  argv          TEXT NOT NULL,            -- JSON array of strings
  flags         INTEGER NOT NULL,         -- HT_HELLO_F_*
  start_ns      INTEGER NOT NULL,         -- CLOCK_REALTIME of the client
  start_mono_ns INTEGER NOT NULL,         -- CLOCK_MONOTONIC of the client
  end_ns        INTEGER,                  -- CLOCK_REALTIME of the daemon
  end_reason    TEXT NOT NULL DEFAULT 'running',
  end_detail    TEXT,                     -- why it ended, for protocol errors
  events        INTEGER NOT NULL DEFAULT 0,
  lost          INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS sites (
  session INTEGER NOT NULL REFERENCES sessions(id),
  id      INTEGER NOT NULL,
  file    TEXT NOT NULL,
  line    INTEGER NOT NULL,
  func    TEXT NOT NULL,
  type    TEXT NOT NULL,
  PRIMARY KEY (session, id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS heaps (
  session INTEGER NOT NULL REFERENCES sessions(id),
  id      INTEGER NOT NULL,
  name    TEXT NOT NULL,
  caps0   INTEGER NOT NULL,
  caps1   INTEGER NOT NULL,
  caps2   INTEGER NOT NULL,
  start   INTEGER NOT NULL,
  size    INTEGER NOT NULL,
  PRIMARY KEY (session, id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS event_chunks (
  session   INTEGER NOT NULL REFERENCES sessions(id),
  stream    INTEGER NOT NULL,
  first_seq INTEGER NOT NULL,
  count     INTEGER NOT NULL,
  t0        INTEGER NOT NULL,             -- time of the first event
  t1        INTEGER NOT NULL,             -- time of the last event
  data      BLOB NOT NULL,
  PRIMARY KEY (session, stream, first_seq)
) WITHOUT ROWID;

-- Events a client dropped (drop mode) or could not deliver, the daemon
-- found missing, or a killed daemon had received and not stored.
CREATE TABLE IF NOT EXISTS lost (
  session   INTEGER NOT NULL REFERENCES sessions(id),
  stream    INTEGER NOT NULL,             -- 0: the session's, not one stream's
  first_seq INTEGER NOT NULL,             -- 'unread' of a connection never read: its start
  count     INTEGER NOT NULL,
  why       TEXT NOT NULL                 -- 'dropped', 'undelivered', 'gap', 'unstored' or 'unread'
);
CREATE INDEX IF NOT EXISTS lost_by_session ON lost(session);
