-- A file's modification time (nanoseconds since the epoch) beside its size: a file whose size
-- and modification time both match what was loaded is recognised as unchanged without reading it;
-- only when either differs is it hashed. NULL (files loaded before): hashed once more, then kept.
ALTER TABLE ingest_files ADD COLUMN modified_ns BIGINT;
