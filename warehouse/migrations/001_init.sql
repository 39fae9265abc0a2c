-- Canonical tables. Every row carries lineage: which source, where in it, when and by which run.
CREATE TABLE customers (
    customer_id     VARCHAR NOT NULL,
    name            VARCHAR,
    segment         VARCHAR,
    region          VARCHAR,
    signup_date     DATE,
    contact_consent BOOLEAN,
    updated_at      TIMESTAMPTZ,
    _source         VARCHAR NOT NULL,
    _position       VARCHAR NOT NULL,
    _loaded_at      TIMESTAMPTZ NOT NULL,
    _run_id         VARCHAR NOT NULL
);

CREATE TABLE orders (
    order_id            VARCHAR NOT NULL,
    customer_id         VARCHAR NOT NULL,
    order_ts            TIMESTAMPTZ NOT NULL,
    amount              DOUBLE NOT NULL,
    margin              DOUBLE,
    quantity            DOUBLE,
    product_id          VARCHAR,
    category            VARCHAR,
    product_launch_date DATE,
    status              VARCHAR NOT NULL,
    _source             VARCHAR NOT NULL,
    _position           VARCHAR NOT NULL,
    _loaded_at          TIMESTAMPTZ NOT NULL,
    _run_id             VARCHAR NOT NULL
);

CREATE TABLE feedback (
    event_id        VARCHAR NOT NULL,
    customer_id     VARCHAR NOT NULL,
    event_ts        TIMESTAMPTZ NOT NULL,
    direction       VARCHAR NOT NULL,
    kind            VARCHAR NOT NULL,
    channel         VARCHAR,
    product_id      VARCHAR,
    category        VARCHAR,
    rating          INTEGER,
    text            VARCHAR,
    department      VARCHAR,
    responded       BOOLEAN,
    status          VARCHAR,
    acknowledged_at TIMESTAMPTZ,
    converted_at    TIMESTAMPTZ,
    implemented_at  TIMESTAMPTZ,
    _source         VARCHAR NOT NULL,
    _position       VARCHAR NOT NULL,
    _loaded_at      TIMESTAMPTZ NOT NULL,
    _run_id         VARCHAR NOT NULL
);

-- Records that could not be read or mapped, with the reason; never silently dropped.
CREATE TABLE dead_letters (
    run_id      VARCHAR NOT NULL,
    source      VARCHAR NOT NULL,
    position    VARCHAR NOT NULL,
    reason      VARCHAR NOT NULL,
    payload     VARCHAR,
    received_at TIMESTAMPTZ NOT NULL
);

-- One row per loaded file: a file with the same size and checksum is not loaded again.
CREATE TABLE ingest_files (
    source       VARCHAR NOT NULL,
    path         VARCHAR NOT NULL,
    size         BIGINT NOT NULL,
    checksum     VARCHAR NOT NULL,
    rows_loaded  BIGINT NOT NULL,
    dead_letters BIGINT NOT NULL,
    loaded_at    TIMESTAMPTZ NOT NULL,
    run_id       VARCHAR NOT NULL,
    PRIMARY KEY (source, path)
);

-- Next offset to read per Kafka partition, written in the same transaction as the rows.
CREATE TABLE ingest_offsets (
    source      VARCHAR NOT NULL,
    topic       VARCHAR NOT NULL,
    "partition" INTEGER NOT NULL,
    next_offset BIGINT NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    run_id      VARCHAR NOT NULL,
    PRIMARY KEY (source, topic, "partition")
);

CREATE TABLE pipeline_runs (
    run_id        VARCHAR PRIMARY KEY,
    pipeline      VARCHAR NOT NULL,
    as_of         DATE NOT NULL,
    trigger       VARCHAR NOT NULL,
    scheduled_for TIMESTAMPTZ,
    started_at    TIMESTAMPTZ NOT NULL,
    finished_at   TIMESTAMPTZ,
    status        VARCHAR NOT NULL,
    rows_in       BIGINT NOT NULL DEFAULT 0,
    rows_out      BIGINT NOT NULL DEFAULT 0,
    dead_letters  BIGINT NOT NULL DEFAULT 0,
    error         VARCHAR
);

-- Output: one as_of partition per run date, replaced atomically.
CREATE TABLE customer_rfm (
    as_of        DATE NOT NULL,
    customer_id  VARCHAR NOT NULL,
    run_id       VARCHAR NOT NULL,
    recency_days INTEGER NOT NULL,
    frequency    INTEGER NOT NULL,
    monetary     DOUBLE NOT NULL,
    r_score      TINYINT NOT NULL,
    f_score      TINYINT NOT NULL,
    m_score      TINYINT NOT NULL,
    rfm_cell     VARCHAR NOT NULL,
    segment      VARCHAR NOT NULL
);
