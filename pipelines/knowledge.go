package pipelines

import (
	"context"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/ckm-dev/ckm/connectors/mapping"
	"github.com/ckm-dev/ckm/transforms/clv"
	"github.com/ckm-dev/ckm/transforms/knowledge"
	"github.com/ckm-dev/ckm/warehouse"
)

// KnowledgeResult is what the knowledge transform reports to the run summary.
type KnowledgeResult struct {
	Customers      int64 // every customer with a CLV row or feedback in the window: customer_knowledge's rows
	Eligible       int64 // those with at least MinEvents knowledge events, the ranked population
	KeySources     int64
	ClassTierStage map[[3]string]int64 // (class, value tier, lifecycle stage) → customers; tier and stage "" without value
	Top            []KeySource         // the best-ranked key sources, at most 10
	Model          knowledge.Model
	MinEvents      int
}

// Count is the number of customers in class.
func (k *KnowledgeResult) Count(class string) int64 {
	var n int64
	for key, c := range k.ClassTierStage {
		if key[0] == class {
			n += c
		}
	}
	return n
}

// KeySource is one top-ranked key knowledge source.
type KeySource struct {
	Rank       int64
	CustomerID string
	KKSI       float64
	Class      string
	TopFactors string
}

// bitOf maps a column of a closed vocabulary to one bit per value, so that bit_count(bit_or(…))
// counts distinct values without the hash sets count(DISTINCT …) builds per group.
func bitOf(t mapping.Table, column string) string {
	c, _ := t.Column(column)
	var b strings.Builder
	b.WriteString("CASE " + column)
	for i, v := range c.Allowed {
		fmt.Fprintf(&b, " WHEN %s THEN %d", warehouse.Quote(v), uint64(1)<<i)
	}
	b.WriteString(" END")
	return b.String()
}

// knowledgeFeedbackSQL is the WITH clause both knowledge queries start from: per customer with
// feedback in the lookback window (fb), the counts the knowledge index is computed from. Windows
// end with as_of's day in zone; an event's age is the time from it to the end of as_of, in days.
// An event is acknowledged in time within ack_days × 24 hours: a duration, not calendar days, so
// that neither a change to summer time nor the session's time zone moves the deadline. It is
// compared in microseconds: adding an interval to a TIMESTAMPTZ goes through ICU (calendar days
// cost 3.7 of the 6 s these inputs took at 1M customers; hours still 0.4 s).
func knowledgeFeedbackSQL(zone Zone, asOf time.Time, lookback int, p knowledge.Params) string {
	a := "DATE '" + asOf.Format(time.DateOnly) + "'"
	var weight strings.Builder
	weight.WriteString("CASE kind")
	for _, kind := range slices.Sorted(maps.Keys(p.KindWeights)) {
		fmt.Fprintf(&weight, " WHEN %s THEN %s", warehouse.Quote(kind), strconv.FormatFloat(p.KindWeights[kind], 'g', -1, 64))
	}
	weight.WriteString(" ELSE 0 END")
	feedback, _ := mapping.TableNamed("feedback")
	return fmt.Sprintf(`WITH bounds AS (
  SELECT %[1]s AS as_of, %[5]s AS t0, %[6]s AS t1
),
events AS (
  SELECT f.customer_id, f.direction = 'inbound' AS inbound, f.kind, f.channel, f.department, f.rating, f.responded,
         f.knowledge_type, f.event_ts, f.acknowledged_at, f.converted_at, f.implemented_at, f.status, b.t1,
         (epoch(b.t1) - epoch(f.event_ts)) / 86400 AS age_days,
         CASE WHEN f.direction = 'inbound' THEN %[2]s ELSE 0 END AS weight
  FROM feedback_knowledge f, bounds b
  WHERE f.event_ts >= b.t0 AND f.event_ts < b.t1
),
fb AS (
  SELECT customer_id,
    count(*) FILTER (weight > 0) AS knowledge_events,
    coalesce(sum(CAST(round(weight * pow(0.5, age_days / %[3]g) * %[7]s) AS BIGINT)) FILTER (weight > 0), 0) / %[7]s AS innovation,
    count(*) FILTER (inbound) AS inbound_events,
    CAST(floor(max(age_days)) AS BIGINT) AS first_event_age,
    count(*) FILTER (NOT inbound) AS invited,
    count(*) FILTER (NOT inbound AND responded) AS accepted,
    count(*) FILTER (inbound AND kind IN ('survey_response', 'review') AND rating IS NOT NULL) AS rated_n,
    CAST(coalesce(sum((rating - 1) / 4.0) FILTER (inbound AND kind IN ('survey_response', 'review')), 0) AS DOUBLE) AS rated_sum,
    count(*) FILTER (inbound AND kind <> 'complaint' AND coalesce(rating, 5) >= 3) AS non_negative,
    CAST(bit_count(coalesce(bit_or(%[8]s) FILTER (weight > 0), 0)) AS BIGINT) AS channels,
    count(*) FILTER (weight > 0 AND acknowledged_at < t1 AND epoch_us(acknowledged_at) <= epoch_us(event_ts) + %[4]d) AS acknowledged,
    count(*) FILTER (weight > 0 AND (converted_at < t1 OR (converted_at IS NULL AND status IN ('converted', 'implemented'))))
      AS converted,
    count(*) FILTER (weight > 0 AND (implemented_at < t1 OR (implemented_at IS NULL AND status = 'implemented'))) AS implemented,
    CAST(bit_count(coalesce(bit_or(%[9]s) FILTER (weight > 0), 0)) AS BIGINT) AS departments,
    count(*) FILTER (knowledge_type = 'KAC') AS kac_events,
    count(*) FILTER (knowledge_type = 'KForC') AS kforc_events,
    count(*) FILTER (knowledge_type = 'KFC') AS kfc_events
  FROM events
  GROUP BY customer_id
)`, a, weight.String(), p.HalfLifeDays, int64(p.AckDays)*86_400_000_000, zone.DayStart(fmt.Sprintf("%s - %d + 1", a, lookback)),
		zone.DayStart(a+" + 1"), exact, bitOf(feedback, "channel"), bitOf(feedback, "department"))
}

// exact scales the sums that feed percentiles to integers (units of 1e-9), so that a rerun,
// whatever order DuckDB's threads add in, ties customers identically (see money).
const exact = "1e9"

// KnowledgeInputSQL gives the knowledge index's inputs of the population it ranks: the customers
// with at least min_events knowledge events in the lookback window (so all with feedback there),
// with their CLV from the temp table clv_scores when they have a row there.
func KnowledgeInputSQL(zone Zone, asOf time.Time, lookback int, unitDays float64, p knowledge.Params, withValue bool) string {
	a := "DATE '" + asOf.Format(time.DateOnly) + "'"
	value := "'' AS value_tier, '' AS lifecycle_stage"
	valueJoin := ""
	if withValue {
		value = "coalesce(v.value_tier, '') AS value_tier, coalesce(v.lifecycle_stage, '') AS lifecycle_stage"
		valueJoin = "LEFT JOIN value_scores v ON v.customer_id = e.customer_id"
	}
	return knowledgeFeedbackSQL(zone, asOf, lookback, p) + fmt.Sprintf(`,
ranked AS (
  SELECT * FROM fb WHERE knowledge_events >= %[9]d
),
lead AS (
  -- Most lines are far from their launch: a zone-free test (with a day's margin) spares them
  -- the local date, the costliest expression here.
  SELECT customer_id,
    sum(CASE WHEN (epoch(order_ts) - epoch(CAST(product_launch_date AS TIMESTAMP))) / 86400 < %[6]d + 2
      THEN CAST(round(greatest(0, 1 - greatest(%[7]s - product_launch_date, 0) / %[6]d) * %[5]s) AS BIGINT) ELSE 0 END) / %[5]s AS lead_sum,
    count(*) AS lead_n
  FROM orders o, bounds b
  WHERE o.status = 'completed' AND o.product_launch_date IS NOT NULL AND o.order_ts >= b.t0 AND o.order_ts < b.t1
    AND o.customer_id IN (SELECT customer_id FROM ranked)
  GROUP BY customer_id
),
population AS (
  SELECT r.*, s.clv, round(s.t_cal * %[4]g) AS purchase_age
  FROM ranked r LEFT JOIN clv_scores s ON s.customer_id = r.customer_id
)
SELECT e.customer_id,
  CAST(e.clv IS NOT NULL AS BIGINT) AS has_clv, coalesce(e.clv, 0) AS clv,
  e.knowledge_events, e.innovation, e.inbound_events,
  CAST(least(%[2]d, greatest(e.purchase_age, e.first_event_age, %[1]s - c.signup_date, 0)) AS BIGINT) AS tenure_days,
  coalesce(l.lead_sum, 0) AS lead_sum, coalesce(l.lead_n, 0) AS lead_n,
  e.invited, e.accepted, e.rated_n, e.rated_sum,
  CASE WHEN c.contact_consent IS NULL THEN -1 WHEN c.contact_consent THEN 1 ELSE 0 END AS consent,
  e.non_negative, e.channels, e.acknowledged, e.converted, e.implemented, e.departments,
  e.kac_events, e.kforc_events, e.kfc_events,
  %[3]s
FROM population e
LEFT JOIN lead l ON l.customer_id = e.customer_id
LEFT JOIN customers c ON c.customer_id = e.customer_id
%[8]s`, a, lookback, value, unitDays, exact, p.LeadUserDays, zone.LocalDate("o.order_ts"), valueJoin, p.MinEvents)
}

// KnowledgeUnrankedSQL gives the customers the index does not rank, those with a CLV row in
// clv_scores or feedback in the lookback window but fewer than min_events knowledge events, with
// the counts customer_knowledge shows for them.
func KnowledgeUnrankedSQL(zone Zone, asOf time.Time, lookback int, p knowledge.Params) string {
	return knowledgeFeedbackSQL(zone, asOf, lookback, p) + fmt.Sprintf(`
SELECT coalesce(s.customer_id, fb.customer_id) AS customer_id, coalesce(fb.knowledge_events, 0) AS knowledge_events,
  coalesce(fb.kac_events, 0) AS kac_events, coalesce(fb.kforc_events, 0) AS kforc_events, coalesce(fb.kfc_events, 0) AS kfc_events
FROM clv_scores s FULL JOIN fb ON fb.customer_id = s.customer_id
WHERE coalesce(fb.knowledge_events, 0) < %d`, p.MinEvents)
}

// knowledgeInputs and knowledgeUnranked are the temp tables holding, during a run, the ranked
// population's knowledge inputs and the other customers' counts.
const knowledgeInputs, knowledgeUnranked = "knowledge_inputs", "knowledge_unranked"

func (r *Runner) scoreKnowledge(ctx context.Context, st *scoring) (outputs, error) {
	done := r.step("score knowledge")
	defer done()
	if !st.clvStaged {
		return nil, fmt.Errorf("needs the clv transform in the same pipeline")
	}
	unit, err := r.Config.Scoring.CLV.UnitDays()
	if err != nil {
		return nil, err
	}
	p := r.Config.Scoring.Knowledge
	lookback := r.Config.Scoring.LookbackDays
	start := time.Now()
	// Only the ranked population, the eligible customers, crosses into Go, and only they need
	// every input. The others (usually most customers: few ever give feedback) keep four counts
	// in DuckDB and are written from there as insufficient_evidence. Joining every customer's
	// inputs took 2.9 of the 4.4 s these tables take at 1M customers, and five times the memory.
	// The outputs outlive the scoring state: they keep the connection, not st (and with it every
	// customer's CLV) alive until the run has written them.
	conn := st.conn
	dropInputs := func() {
		conn.ExecContext(context.WithoutCancel(ctx), "DROP TABLE IF EXISTS temp."+knowledgeInputs+"; DROP TABLE IF EXISTS temp."+knowledgeUnranked)
	}
	handedOver := false // to the output that writes from the tables, which drops them when released
	defer func() {
		if !handedOver {
			dropInputs()
		}
	}()
	for table, query := range map[string]string{
		knowledgeInputs:   KnowledgeInputSQL(st.zone, st.res.AsOf, lookback, unit, p, st.valueStaged),
		knowledgeUnranked: KnowledgeUnrankedSQL(st.zone, st.res.AsOf, lookback, p),
	} {
		if _, err := st.conn.ExecContext(ctx, "CREATE OR REPLACE TEMP TABLE "+table+" AS "+query); err != nil {
			return nil, fmt.Errorf("knowledge inputs: %w", err)
		}
	}
	kr := &KnowledgeResult{ClassTierStage: map[[3]string]int64{}, MinEvents: p.MinEvents}
	err = st.conn.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM `+knowledgeInputs+`), (SELECT count(*) FROM `+knowledgeUnranked+`)`).
		Scan(&kr.Eligible, &kr.Customers)
	if err != nil {
		return nil, fmt.Errorf("knowledge inputs: %w", err)
	}
	kr.Customers += kr.Eligible
	batches, release, err := st.batches(ctx, `SELECT `+strings.Join(knowledge.InputColumns, ", ")+` FROM `+knowledgeInputs+` ORDER BY customer_id`)
	if err != nil {
		return nil, fmt.Errorf("knowledge inputs: %w", err)
	}
	in, err := knowledge.ReadInputs(batches)
	release()
	if err != nil {
		return nil, fmt.Errorf("knowledge inputs: %w", err)
	}
	inputs := time.Since(start)
	schema := knowledge.OutputSchema()
	staged, err := st.stager(ctx, "customer_knowledge", schema)
	if err != nil {
		return nil, err
	}
	model, err := knowledge.Score(in, p, st.mem, int(st.chunkRows), func(rec arrow.RecordBatch) error { return staged.add(ctx, rec) })
	if err != nil {
		staged.release()
		return nil, err
	}
	var names []string
	for _, f := range schema.Fields() {
		names = append(names, warehouse.Ident(f.Name))
	}
	columns := strings.Join(names, ", ")
	scoredRows, err := staged.output(ctx, `INSERT INTO customer_knowledge (as_of, run_id, `+columns+`)
			SELECT CAST(? AS DATE), ?, `+columns+` FROM `+scored)
	if err != nil {
		return nil, err
	}
	st.log.Debug("knowledge scored", "inputs", inputs.Round(time.Millisecond).String(),
		"index", (time.Since(start) - inputs).Round(time.Millisecond).String(), "customers", kr.Customers, "eligible", kr.Eligible)
	if err := summarizeKnowledge(ctx, st.conn, kr, staged.temp, model); err != nil {
		scoredRows.release()
		return nil, err
	}
	kr.ClassTierStage[[3]string{knowledge.InsufficientEvidence, "", ""}] += kr.Customers - kr.Eligible
	st.res.Knowledge = kr
	if kr.Customers > 0 && kr.Eligible == 0 {
		st.res.Warnings = append(st.res.Warnings, fmt.Sprintf("knowledge: no customer has %d or more knowledge events in the lookback window, so none is classed (is a feedback source loaded?)", p.MinEvents))
	}
	// The customers outside the population: their counts, no scores, nothing imputed.
	var imputedFlags []string
	for _, in := range knowledge.Indicators {
		if in.Imputable {
			imputedFlags = append(imputedFlags, in.Column()+"_imputed")
		}
	}
	unranked := `INSERT INTO customer_knowledge (as_of, run_id, customer_id, ` + strings.Join(imputedFlags, ", ") + `,
			knowledge_events, class, is_key_source, kac_events, kforc_events, kfc_events)
		SELECT CAST(? AS DATE), ?, customer_id` + strings.Repeat(", false", len(imputedFlags)) + `,
			knowledge_events, ` + warehouse.Quote(knowledge.InsufficientEvidence) + `, false, kac_events, kforc_events, kfc_events
		FROM ` + knowledgeUnranked
	knowledgeRows := output{table: "customer_knowledge",
		release: func() { scoredRows.release(); dropInputs() },
		write: func(ctx context.Context, conn *warehouse.Conn, res *Result) (int64, error) {
			n, err := scoredRows.write(ctx, conn, res)
			if err != nil {
				return 0, err
			}
			r, err := conn.ExecContext(ctx, unranked, res.AsOf, res.RunID)
			if err != nil {
				return 0, err
			}
			m, err := r.RowsAffected()
			return n + m, err
		}}
	window := "FROM feedback_knowledge WHERE event_ts >= " + st.zone.DayStart("CAST(? AS DATE) - "+strconv.Itoa(r.Config.Scoring.LookbackDays)+" + 1") +
		" AND event_ts < " + st.zone.DayStart("CAST(? AS DATE) + 1")
	mix := output{table: "knowledge_mix", write: func(ctx context.Context, conn *warehouse.Conn, res *Result) (int64, error) {
		r, err := conn.ExecContext(ctx, `INSERT INTO knowledge_mix (as_of, run_id, department, knowledge_type, events, customers)
			SELECT CAST(? AS DATE), ?, department, knowledge_type, count(*), count(DISTINCT customer_id) `+window+`
			GROUP BY department, knowledge_type ORDER BY department, knowledge_type`, res.AsOf, res.RunID, res.AsOf, res.AsOf)
		if err != nil {
			return 0, err
		}
		return r.RowsAffected()
	}}
	handedOver = true
	return outputs{knowledgeRows, fitsOutput(knowledgeFits(model)), mix}, nil
}

// knowledgeFits records the weights and priors a run used, as model_fits rows.
func knowledgeFits(m knowledge.Model) []clv.Fit {
	weights := clv.Fit{Model: "knowledge_weights", Customers: m.Customers, Converged: true}
	add := func(f *clv.Fit, name string, v float64) {
		f.Params = append(f.Params, clv.Estimate{Name: name, Value: v, StdError: math.NaN()})
	}
	for d, dim := range knowledge.Dimensions {
		add(&weights, dim, m.DimensionWeights[d])
	}
	for d, dim := range knowledge.Dimensions {
		add(&weights, "ahp."+dim, m.AHPWeights[d])
	}
	add(&weights, "ahp.consistency_ratio", m.ConsistencyRatio)
	for d, dim := range m.EntropyWeights {
		add(&weights, "entropy."+knowledge.Dimensions[d], dim)
	}
	for k, in := range knowledge.Indicators {
		add(&weights, in.Column(), m.IndicatorWeights[k])
	}
	priors := clv.Fit{Model: "knowledge_priors", Customers: m.Customers, Converged: true}
	for _, name := range slices.Sorted(maps.Keys(m.Priors)) {
		add(&priors, name+".alpha", m.Priors[name].Alpha)
		add(&priors, name+".beta", m.Priors[name].Beta)
	}
	return []clv.Fit{weights, priors}
}

// summarizeKnowledge fills in kr from the eligible customers' rows staged in table: customers
// per (class, value tier, lifecycle stage), the key sources, and the ten best ranked.
func summarizeKnowledge(ctx context.Context, conn *warehouse.Conn, kr *KnowledgeResult, table string, m knowledge.Model) error {
	kr.Model = m
	rows, err := conn.QueryContext(ctx, `SELECT k.class, i.value_tier, i.lifecycle_stage, count(*), count(*) FILTER (k.is_key_source)
		FROM `+table+` k JOIN `+knowledgeInputs+` i USING (customer_id) GROUP BY ALL`)
	if err != nil {
		return fmt.Errorf("summarize knowledge: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var key [3]string
		var n, keySources int64
		if err := rows.Scan(&key[0], &key[1], &key[2], &n, &keySources); err != nil {
			return fmt.Errorf("summarize knowledge: %w", err)
		}
		kr.ClassTierStage[key] += n
		kr.KeySources += keySources
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("summarize knowledge: %w", err)
	}
	top, err := conn.QueryContext(ctx, `SELECT rank, customer_id, kksi, class, coalesce(top_factors, '') FROM `+table+`
		WHERE is_key_source ORDER BY rank, customer_id LIMIT 10`)
	if err != nil {
		return fmt.Errorf("summarize knowledge: %w", err)
	}
	defer top.Close()
	for top.Next() {
		var s KeySource
		if err := top.Scan(&s.Rank, &s.CustomerID, &s.KKSI, &s.Class, &s.TopFactors); err != nil {
			return fmt.Errorf("summarize knowledge: %w", err)
		}
		kr.Top = append(kr.Top, s)
	}
	return top.Err()
}
