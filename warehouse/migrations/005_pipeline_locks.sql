-- The lock that keeps two runs of one pipeline apart: a row while a run goes on, taken and
-- released in the same transactions that start and end the run. A row left by a process that
-- died is taken over (and its run marked abandoned) by the next run of the pipeline.
CREATE TABLE pipeline_locks (
    pipeline    VARCHAR PRIMARY KEY,
    run_id      VARCHAR NOT NULL,
    owner       VARCHAR NOT NULL, -- host:pid:nonce of the process running it
    acquired_at TIMESTAMPTZ NOT NULL
);
