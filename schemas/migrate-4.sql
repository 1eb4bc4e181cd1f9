-- heaptrace store, schema version 3 -> 4: leaks summarised by group.
--
-- A summary (model version 2) keeps the blocks live at the end of a session
-- counted per (site, heap, caps), the finest grouping `heapctl leaks`
-- offers: every grouping it answers (by site, type, caps or heap) is a sum
-- of these rows, each with the oldest block as its sample. A query reads a
-- row per group instead of one per live block. Summaries of model version
-- 1 kept every live block in live_blocks instead; the daemon writes such a
-- session's summary again, which also deletes its live_blocks rows.
CREATE TABLE IF NOT EXISTS leak_groups (
  session INTEGER NOT NULL,
  site    INTEGER NOT NULL,
  heap    INTEGER NOT NULL,
  caps    INTEGER NOT NULL,
  blocks  INTEGER NOT NULL,
  bytes   INTEGER NOT NULL,               -- requested bytes of the blocks
  -- the oldest block of the group: allocated first (time, stream, seq)
  ptr     INTEGER NOT NULL,
  size    INTEGER NOT NULL,
  usable  INTEGER NOT NULL,
  t       INTEGER NOT NULL,
  stream  INTEGER NOT NULL,
  seq     INTEGER NOT NULL,
  PRIMARY KEY (session, site, heap, caps)
) WITHOUT ROWID;

PRAGMA user_version = 4;
