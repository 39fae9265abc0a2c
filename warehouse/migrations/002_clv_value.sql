-- Fitted model parameters per run, with standard errors.
CREATE TABLE model_fits (
    as_of          DATE NOT NULL,
    run_id         VARCHAR NOT NULL,
    model          VARCHAR NOT NULL,
    parameter      VARCHAR NOT NULL,
    estimate       DOUBLE,
    std_error      DOUBLE,
    log_likelihood DOUBLE,
    n_customers    BIGINT NOT NULL,
    converged      BOOLEAN NOT NULL,
    iterations     INTEGER NOT NULL,
    message        VARCHAR
);

CREATE TABLE customer_clv (
    as_of              DATE NOT NULL,
    customer_id        VARCHAR NOT NULL,
    run_id             VARCHAR NOT NULL,
    x                  DOUBLE NOT NULL,
    t_x                DOUBLE NOT NULL,
    t_cal              DOUBLE NOT NULL,
    avg_value          DOUBLE NOT NULL,
    p_alive            DOUBLE NOT NULL,
    expected_purchases DOUBLE NOT NULL,
    expected_avg_value DOUBLE NOT NULL,
    clv                DOUBLE NOT NULL
);

CREATE TABLE customer_value (
    as_of           DATE NOT NULL,
    customer_id     VARCHAR NOT NULL,
    run_id          VARCHAR NOT NULL,
    current_value   DOUBLE NOT NULL,
    potential_value DOUBLE NOT NULL,
    value_tier      VARCHAR NOT NULL,
    lifecycle_stage VARCHAR NOT NULL,
    trend           DOUBLE NOT NULL
);

-- Predicted vs actual repeat purchases over a holdout period, by calibration frequency.
CREATE TABLE clv_holdout (
    as_of          DATE NOT NULL,
    run_id         VARCHAR NOT NULL,
    holdout_end    DATE NOT NULL,
    frequency      VARCHAR NOT NULL,
    customers      BIGINT NOT NULL,
    expected_mean  DOUBLE NOT NULL,
    actual_mean    DOUBLE NOT NULL,
    mean_abs_error DOUBLE NOT NULL
);
