-- Lineage exact enough to order records and to match a file's rows: _stream is where a record
-- came from (a file's path, a Kafka topic/partition), _seq its number there (line, row, offset).
-- When several records carry one key, the record that ranks highest by (version column, _source,
-- _stream, _seq) is current; the others are kept in <table>_superseded, so that the current
-- record never depends on the order files were loaded in, and a record whose file changed can
-- give way to the next best.
ALTER TABLE customers ADD COLUMN _stream VARCHAR;
ALTER TABLE customers ADD COLUMN _seq BIGINT;
ALTER TABLE orders ADD COLUMN _stream VARCHAR;
ALTER TABLE orders ADD COLUMN _seq BIGINT;
ALTER TABLE feedback ADD COLUMN _stream VARCHAR;
ALTER TABLE feedback ADD COLUMN _seq BIGINT;

-- Rows loaded before this migration: the stream and number are read back from _position
-- (topic/partition@offset, file:line, file:row N).
UPDATE customers SET _stream = coalesce(nullif(regexp_extract(_position, '^(.+/[0-9]+)@[0-9]+$', 1), ''), regexp_extract(_position, '^(.*):(row )?[0-9]+$', 1)),
    _seq = TRY_CAST(regexp_extract(_position, '([0-9]+)$', 1) AS BIGINT);
UPDATE orders SET _stream = coalesce(nullif(regexp_extract(_position, '^(.+/[0-9]+)@[0-9]+$', 1), ''), regexp_extract(_position, '^(.*):(row )?[0-9]+$', 1)),
    _seq = TRY_CAST(regexp_extract(_position, '([0-9]+)$', 1) AS BIGINT);
UPDATE feedback SET _stream = coalesce(nullif(regexp_extract(_position, '^(.+/[0-9]+)@[0-9]+$', 1), ''), regexp_extract(_position, '^(.*):(row )?[0-9]+$', 1)),
    _seq = TRY_CAST(regexp_extract(_position, '([0-9]+)$', 1) AS BIGINT);

CREATE TABLE customers_superseded AS SELECT * FROM customers LIMIT 0;
CREATE TABLE orders_superseded AS SELECT * FROM orders LIMIT 0;
CREATE TABLE feedback_superseded AS SELECT * FROM feedback LIMIT 0;

-- Dead letters name their stream too, and a dead letter of a file that was since fixed and
-- loaded again is marked superseded by the run that loaded the new version.
ALTER TABLE dead_letters ADD COLUMN stream VARCHAR;
ALTER TABLE dead_letters ADD COLUMN superseded_by VARCHAR;
UPDATE dead_letters SET stream = coalesce(nullif(regexp_extract(position, '^(.+/[0-9]+)@[0-9]+$', 1), ''), regexp_extract(position, '^(.*):(row )?[0-9]+$', 1), position);

-- Every record read is accounted for: loaded, dead-lettered, collapsed into another record with
-- the same key (an older version, a line rolled up into its order) or skipped (a filter, a blank
-- record). Per file version, per run and per source in a run.
ALTER TABLE ingest_files ADD COLUMN rows_read BIGINT;
ALTER TABLE ingest_files ADD COLUMN rows_collapsed BIGINT;
ALTER TABLE ingest_files ADD COLUMN rows_skipped BIGINT;
-- Why a file could not be read (truncated, corrupt): it is read again once it changes.
ALTER TABLE ingest_files ADD COLUMN damage VARCHAR;
ALTER TABLE pipeline_runs ADD COLUMN rows_loaded BIGINT;
ALTER TABLE pipeline_runs ADD COLUMN rows_collapsed BIGINT;
ALTER TABLE pipeline_runs ADD COLUMN rows_skipped BIGINT;
CREATE TABLE pipeline_run_sources (
    run_id        VARCHAR NOT NULL,
    source        VARCHAR NOT NULL,
    "table"       VARCHAR NOT NULL,
    rows_read     BIGINT NOT NULL,
    rows_loaded   BIGINT NOT NULL,
    dead_letters  BIGINT NOT NULL,
    rows_collapsed BIGINT NOT NULL,
    rows_skipped  BIGINT NOT NULL,
    rows_replaced BIGINT NOT NULL, -- stored records this run's records took the place of
    PRIMARY KEY (run_id, source)
);

-- Numbers that cannot be scored (NaN, ±Inf, beyond ±1e15) and infinite dates and times, which
-- earlier versions let in, leave the canonical tables for dead_letters: kept, named, not scored.
INSERT INTO dead_letters (run_id, source, position, reason, payload, received_at, stream)
SELECT 'migration-006', _source, _position,
       concat_ws('; ',
         CASE WHEN NOT isfinite(amount) OR abs(amount) > 1e15 THEN 'amount: ' || amount || ' is not a finite number within ±1e15' END,
         CASE WHEN NOT isfinite(margin) OR abs(margin) > 1e15 THEN 'margin: ' || margin || ' is not a finite number within ±1e15' END,
         CASE WHEN NOT isfinite(quantity) OR abs(quantity) > 1e15 THEN 'quantity: ' || quantity || ' is not a finite number within ±1e15' END,
         CASE WHEN NOT isfinite(order_ts) THEN 'order_ts: ' || order_ts || ' is not a finite timestamp' END,
         CASE WHEN NOT isfinite(product_launch_date) THEN 'product_launch_date: ' || product_launch_date || ' is not a finite date' END)
         || ' (moved out of orders by migration 006)',
       to_json(o), now(), _stream
FROM orders o
WHERE NOT isfinite(amount) OR abs(amount) > 1e15 OR NOT isfinite(margin) OR abs(margin) > 1e15
   OR NOT isfinite(quantity) OR abs(quantity) > 1e15 OR NOT isfinite(order_ts) OR NOT isfinite(product_launch_date);
DELETE FROM orders WHERE NOT isfinite(amount) OR abs(amount) > 1e15 OR NOT isfinite(margin) OR abs(margin) > 1e15
   OR NOT isfinite(quantity) OR abs(quantity) > 1e15 OR NOT isfinite(order_ts) OR NOT isfinite(product_launch_date);

INSERT INTO dead_letters (run_id, source, position, reason, payload, received_at, stream)
SELECT 'migration-006', _source, _position, 'a timestamp or date is not finite (moved out of feedback by migration 006)', to_json(f), now(), _stream
FROM feedback f
WHERE NOT isfinite(event_ts) OR NOT isfinite(acknowledged_at) OR NOT isfinite(converted_at) OR NOT isfinite(implemented_at);
DELETE FROM feedback WHERE NOT isfinite(event_ts) OR NOT isfinite(acknowledged_at) OR NOT isfinite(converted_at) OR NOT isfinite(implemented_at);

INSERT INTO dead_letters (run_id, source, position, reason, payload, received_at, stream)
SELECT 'migration-006', _source, _position, 'a timestamp or date is not finite (moved out of customers by migration 006)', to_json(c), now(), _stream
FROM customers c
WHERE NOT isfinite(signup_date) OR NOT isfinite(updated_at);
DELETE FROM customers WHERE NOT isfinite(signup_date) OR NOT isfinite(updated_at);
