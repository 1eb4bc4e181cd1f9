-- heaptrace store, schema version 1 -> 2: session summaries.
--
-- Once a session has ended, the daemon replays its events once, in time
-- order, and keeps the results here; queries read these tables instead of
-- the events. A session without a summary (still running, or its daemon
-- was killed) is analysed from its events on demand.
-- How a chunk's data is stored: 0 the first format (events from a zero
-- state), 1 a state then the client's own bytes, 2 the same compressed
-- with zstd (daemon/chunk.h).
ALTER TABLE event_chunks ADD COLUMN codec INTEGER NOT NULL DEFAULT 0;

CREATE TABLE IF NOT EXISTS summaries (
  session     INTEGER PRIMARY KEY REFERENCES sessions(id),
  events      INTEGER NOT NULL,
  allocs      INTEGER NOT NULL,
  frees       INTEGER NOT NULL,
  reallocs    INTEGER NOT NULL,
  failed      INTEGER NOT NULL,
  unmatched   INTEGER NOT NULL,           -- frees of blocks never seen allocated
  replaced    INTEGER NOT NULL,           -- addresses allocated twice without a free
  temporary   INTEGER NOT NULL,           -- freed before the thread did anything else
  cur_bytes   INTEGER NOT NULL,
  cur_blocks  INTEGER NOT NULL,
  cur_usable  INTEGER NOT NULL,
  peak_bytes  INTEGER NOT NULL,
  peak_blocks INTEGER NOT NULL,
  peak_time   INTEGER NOT NULL,           -- client CLOCK_MONOTONIC ns
  total_bytes INTEGER NOT NULL,
  client_bytes  INTEGER NOT NULL,         -- sum of the streams' running totals
  client_blocks INTEGER NOT NULL,
  first_time  INTEGER NOT NULL,
  last_time   INTEGER NOT NULL,
  version     INTEGER NOT NULL            -- of the model that wrote it (daemon/model.h)
);

CREATE TABLE IF NOT EXISTS site_stats (
  session     INTEGER NOT NULL,
  site        INTEGER NOT NULL,
  allocs      INTEGER NOT NULL,
  frees       INTEGER NOT NULL,
  bytes       INTEGER NOT NULL,
  temporary   INTEGER NOT NULL,
  live_blocks INTEGER NOT NULL,
  live_bytes  INTEGER NOT NULL,
  peak_live   INTEGER NOT NULL,           -- peak of the bytes live from this site
  PRIMARY KEY (session, site)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS heap_stats (
  session       INTEGER NOT NULL,
  heap          INTEGER NOT NULL,
  allocs        INTEGER NOT NULL,
  used          INTEGER NOT NULL,         -- requested bytes live at the end
  peak_used     INTEGER NOT NULL,
  peak_time     INTEGER NOT NULL,
  bounded       INTEGER NOT NULL,         -- 1: a region, the rest is known
  capacity      INTEGER NOT NULL,
  free_now      INTEGER NOT NULL,
  largest_now   INTEGER NOT NULL,
  nfree_now     INTEGER NOT NULL,
  min_free      INTEGER NOT NULL,
  min_free_time INTEGER NOT NULL,
  min_free_largest INTEGER NOT NULL,
  worst_frag    REAL NOT NULL,
  worst_time    INTEGER NOT NULL,
  worst_free    INTEGER NOT NULL,
  worst_largest INTEGER NOT NULL,
  worst_nfree   INTEGER NOT NULL,
  PRIMARY KEY (session, heap)
) WITHOUT ROWID;

-- One timeline point per heap and interval: the state at t (the last
-- event of the interval) and the extremes reached within it.
CREATE TABLE IF NOT EXISTS heap_samples (
  session   INTEGER NOT NULL,
  heap      INTEGER NOT NULL,
  t         INTEGER NOT NULL,
  used      INTEGER NOT NULL,
  peak_used INTEGER NOT NULL,
  free      INTEGER NOT NULL,
  min_free  INTEGER NOT NULL,
  largest   INTEGER NOT NULL,
  nfree     INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS heap_samples_by_session ON heap_samples(session, heap, t);

CREATE TABLE IF NOT EXISTS caps_lwm (
  session  INTEGER NOT NULL,
  mask     INTEGER NOT NULL,
  heaps    INTEGER NOT NULL,              -- bit i: the i-th heap of the session qualifies
  total    INTEGER NOT NULL,
  now      INTEGER NOT NULL,
  min_free INTEGER NOT NULL,
  min_time INTEGER NOT NULL,
  PRIMARY KEY (session, mask)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS caps_stats (
  session     INTEGER NOT NULL,
  caps        INTEGER NOT NULL,
  allocs      INTEGER NOT NULL,
  bytes       INTEGER NOT NULL,
  live_blocks INTEGER NOT NULL,
  live_bytes  INTEGER NOT NULL,
  PRIMARY KEY (session, caps)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS live_blocks (
  session INTEGER NOT NULL,
  ptr     INTEGER NOT NULL,
  size    INTEGER NOT NULL,
  usable  INTEGER NOT NULL,
  site    INTEGER NOT NULL,
  heap    INTEGER NOT NULL,
  caps    INTEGER NOT NULL,
  stream  INTEGER NOT NULL,
  seq     INTEGER NOT NULL,
  t       INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS live_blocks_by_session ON live_blocks(session);

PRAGMA user_version = 2;
