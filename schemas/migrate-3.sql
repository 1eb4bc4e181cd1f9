-- heaptrace store, schema version 2 -> 3: packed event chunks.
--
-- No table changes: event_chunks.codec gains the value 3, events packed
-- with predictions into compressed columns (daemon/pack.h), which is what
-- the daemon writes from this version on. The version moves so that an
-- older heaptraced or heapctl, which cannot read such chunks, refuses the
-- database with a clear message instead of calling its chunks damaged.
-- Chunks of codecs 0 to 2 stay as they are and are still read.
PRAGMA user_version = 3;
