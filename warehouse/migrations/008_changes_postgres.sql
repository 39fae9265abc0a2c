-- Who moved since the previous successful as_of of the same pipeline. change: new (scored now,
-- not then), lost (scored then, not now; dimension 'customer', no values) or moved (a dimension's
-- value differs; both values known). run_id is the run whose outputs the as_of holds.
CREATE TABLE customer_changes (
    as_of          DATE NOT NULL,
    previous_as_of DATE NOT NULL,
    customer_id    VARCHAR NOT NULL,
    run_id         VARCHAR NOT NULL,
    change         VARCHAR NOT NULL,
    dimension      VARCHAR NOT NULL,
    from_value     VARCHAR,
    to_value       VARCHAR
);

-- Customers by (from, to) per dimension between the previous as_of and this one, stays
-- included; NULL: not scored (or not classed) at that as_of, so new and lost customers show too.
CREATE TABLE segment_transitions (
    as_of          DATE NOT NULL,
    previous_as_of DATE NOT NULL,
    run_id         VARCHAR NOT NULL,
    dimension      VARCHAR NOT NULL,
    from_value     VARCHAR,
    to_value       VARCHAR,
    customers      BIGINT NOT NULL
);

-- When this run's outputs were committed to the configured PostgreSQL output; NULL: not (yet).
ALTER TABLE pipeline_runs ADD COLUMN postgres_published_at TIMESTAMPTZ;
