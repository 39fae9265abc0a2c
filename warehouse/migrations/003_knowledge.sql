-- Key customer knowledge sources (see DESIGN.md). Sub-indicator columns hold percentiles among
-- the run's eligible customers; *_imputed marks rates that had no denominator.
CREATE TABLE customer_knowledge (
    as_of                  DATE NOT NULL,
    customer_id            VARCHAR NOT NULL,
    run_id                 VARCHAR NOT NULL,
    kv                     DOUBLE,
    w                      DOUBLE,
    ac                     DOUBLE,
    kv_clv                 DOUBLE,
    kv_innovation          DOUBLE,
    kv_lead_user           DOUBLE,
    w_active_contact       DOUBLE,
    w_acceptance           DOUBLE,
    w_benefit              DOUBLE,
    w_trust                DOUBLE,
    ac_acquire             DOUBLE,
    ac_assimilate          DOUBLE,
    ac_transform           DOUBLE,
    ac_exploit             DOUBLE,
    kv_lead_user_imputed   BOOLEAN NOT NULL,
    w_acceptance_imputed   BOOLEAN NOT NULL,
    w_benefit_imputed      BOOLEAN NOT NULL,
    w_trust_imputed        BOOLEAN NOT NULL,
    ac_acquire_imputed     BOOLEAN NOT NULL,
    ac_assimilate_imputed  BOOLEAN NOT NULL,
    ac_transform_imputed   BOOLEAN NOT NULL,
    ac_exploit_imputed     BOOLEAN NOT NULL,
    knowledge_events       BIGINT NOT NULL,
    kksi                   DOUBLE,
    class                  VARCHAR NOT NULL,
    is_key_source          BOOLEAN NOT NULL,
    rank                   BIGINT,
    top_factors            VARCHAR,
    kac_events             BIGINT NOT NULL,
    kforc_events           BIGINT NOT NULL,
    kfc_events             BIGINT NOT NULL
);

-- Each feedback event tagged with the knowledge it carries (Gebert et al.'s CKM types):
-- KForC, knowledge for the customer: everything the firm initiates, and questions it answers;
-- KFC, knowledge from the customer: the customer's own product and usage knowledge;
-- KAC, knowledge about the customer: needs and satisfaction (praise, survey answers, the rest).
CREATE VIEW feedback_knowledge AS
SELECT f.*,
       CASE WHEN f.direction = 'outbound' OR f.kind IN ('question', 'survey_invite') THEN 'KForC'
            WHEN f.kind IN ('co_design', 'suggestion', 'feature_request', 'complaint', 'review') THEN 'KFC'
            ELSE 'KAC' END AS knowledge_type
FROM feedback f;

-- The knowledge-type mix per department over the run's lookback window.
CREATE TABLE knowledge_mix (
    as_of          DATE NOT NULL,
    run_id         VARCHAR NOT NULL,
    department     VARCHAR,
    knowledge_type VARCHAR NOT NULL,
    events         BIGINT NOT NULL,
    customers      BIGINT NOT NULL
);

-- One row per (as_of, customer) for BI: RFM, CLV, value and knowledge side by side, with the
-- customer's CRM attributes.
CREATE VIEW customer_scores AS
SELECT as_of, customer_id,
       c.name, c.segment AS crm_segment, c.region,
       r.recency_days, r.frequency, r.monetary, r.r_score, r.f_score, r.m_score, r.rfm_cell, r.segment AS rfm_segment,
       l.x, l.t_x, l.t_cal, l.avg_value, l.p_alive, l.expected_purchases, l.expected_avg_value, l.clv,
       v.current_value, v.potential_value, v.value_tier, v.lifecycle_stage, v.trend,
       k.kv, k.w, k.ac, k.kksi, k.class AS knowledge_class, k.is_key_source, k.rank AS knowledge_rank, k.top_factors,
       k.knowledge_events
FROM customer_clv l
FULL JOIN customer_rfm r USING (as_of, customer_id)
FULL JOIN customer_knowledge k USING (as_of, customer_id)
LEFT JOIN customer_value v USING (as_of, customer_id)
LEFT JOIN customers c USING (customer_id);
