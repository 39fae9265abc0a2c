-- Where each source's streams stand, owned by the runtime rather than each connector: a position
-- is opaque text the connector returns with a batch (a Kafka offset, a file's version as JSON, a
-- PostgreSQL cursor), stored compare-and-set in the batch's transaction and handed back at the
-- next open. The counts are what the stream's current version delivered, for a batch that moves
-- one stream (a file); a batch over several streams (a Kafka fetch) counts per run only.
CREATE TABLE source_positions (
    source         VARCHAR NOT NULL,
    stream         VARCHAR NOT NULL,
    connector      VARCHAR NOT NULL,
    position       VARCHAR NOT NULL,
    rows_read      BIGINT NOT NULL DEFAULT 0,
    rows_loaded    BIGINT NOT NULL DEFAULT 0,
    dead_letters   BIGINT NOT NULL DEFAULT 0,
    rows_collapsed BIGINT NOT NULL DEFAULT 0,
    rows_skipped   BIGINT NOT NULL DEFAULT 0,
    updated_at     TIMESTAMPTZ NOT NULL,
    run_id         VARCHAR NOT NULL,
    PRIMARY KEY (source, stream)
);

INSERT INTO source_positions
SELECT source, path, 'file',
       json_object('size', size, 'modified_ns', modified_ns, 'checksum', checksum, 'damage', damage)::VARCHAR,
       coalesce(rows_read, rows_loaded + dead_letters), rows_loaded, dead_letters, coalesce(rows_collapsed, 0), coalesce(rows_skipped, 0),
       loaded_at, run_id
FROM ingest_files;

INSERT INTO source_positions (source, stream, connector, position, updated_at, run_id)
SELECT source, topic || '/' || "partition", 'kafka', next_offset::VARCHAR, updated_at, run_id
FROM ingest_offsets;

DROP TABLE ingest_files;
DROP TABLE ingest_offsets;

-- The tables operators' scripts know stay, as views over the positions.
CREATE VIEW ingest_files AS
SELECT source, stream AS path, CAST(position->>'size' AS BIGINT) AS size, CAST(position->>'modified_ns' AS BIGINT) AS modified_ns,
       position->>'checksum' AS checksum, rows_loaded, dead_letters, updated_at AS loaded_at, run_id,
       rows_read, rows_collapsed, rows_skipped, position->>'damage' AS damage
FROM source_positions WHERE connector = 'file';

CREATE VIEW ingest_offsets AS
SELECT source, regexp_extract(stream, '^(.*)/[0-9]+$', 1) AS topic, CAST(regexp_extract(stream, '/([0-9]+)$', 1) AS INTEGER) AS "partition",
       CAST(position AS BIGINT) AS next_offset, updated_at, run_id
FROM source_positions WHERE connector = 'kafka';
