package pipelines_test

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ckm-dev/ckm/generate"
	"github.com/ckm-dev/ckm/internal/testutil"
	"github.com/ckm-dev/ckm/pipelines"
	"github.com/ckm-dev/ckm/transforms/knowledge"
	"github.com/ckm-dev/ckm/warehouse"
)

const knowledgeConfig = `warehouse: {path: ckm.duckdb}
timezone: Europe/Berlin
sources:
  crm:
    table: customers
    file: {paths: [customers.csv]}
    mapping: {customer_id: customer_id, signup_date: signup_date, contact_consent: contact_consent, updated_at: updated_at}
  shop:
    table: orders
    file: {paths: [orders.csv]}
    mapping: {order_id: order_id, customer_id: customer_id, order_ts: order_ts, amount: amount, status: status,
              product_launch_date: product_launch_date}
  events:
    table: feedback
    file: {paths: [feedback.jsonl]}
    mapping: {event_id: id, customer_id: customer, event_ts: ts, direction: direction, kind: kind, channel: channel,
              rating: rating, department: department, responded: responded, status: status,
              acknowledged_at: acknowledged_at, converted_at: converted_at, implemented_at: implemented_at}
pipelines:
  p: {transforms: [clv, knowledge]}
`

// Customers A, B and C below, worked by hand for as_of 2026-06-30 in Europe/Berlin (window
// 2025-07-01 … 2026-06-30).
const handFeedback = `{"id":"e1","customer":"A","ts":"2026-06-30T10:00:00+02:00","direction":"inbound","kind":"co_design","channel":"web","department":"rnd","status":"implemented","acknowledged_at":"2026-06-30T11:00:00+02:00","converted_at":"2026-06-30T12:00:00+02:00","implemented_at":"2026-06-30T13:00:00+02:00"}
{"id":"e2","customer":"A","ts":"2026-01-01T12:00:00+01:00","direction":"inbound","kind":"suggestion","channel":"email","department":"sales","status":"acknowledged","acknowledged_at":"2026-01-10T12:00:00+01:00"}
{"id":"e3","customer":"A","ts":"2026-03-01T12:00:00+01:00","direction":"inbound","kind":"complaint","channel":"web","department":"service","rating":2,"status":"new"}
{"id":"e4","customer":"A","ts":"2026-06-29T12:00:00+02:00","direction":"inbound","kind":"review","channel":"review_site","department":"marketing","rating":5,"status":"converted","acknowledged_at":"2026-06-30T09:00:00+02:00"}
{"id":"e5","customer":"A","ts":"2026-05-01T12:00:00+02:00","direction":"inbound","kind":"praise","channel":"app","department":"service","status":"new"}
{"id":"e6","customer":"A","ts":"2026-05-03T12:00:00+02:00","direction":"inbound","kind":"survey_response","channel":"survey","department":"marketing","rating":4,"status":"acknowledged"}
{"id":"e7","customer":"A","ts":"2026-05-01T09:00:00+02:00","direction":"outbound","kind":"survey_invite","channel":"email","department":"marketing","responded":true,"status":"new"}
{"id":"e8","customer":"A","ts":"2026-04-01T09:00:00+02:00","direction":"outbound","kind":"survey_invite","channel":"email","department":"marketing","responded":false,"status":"new"}
{"id":"e9","customer":"A","ts":"2025-06-30T23:30:00+02:00","direction":"inbound","kind":"suggestion","channel":"web","department":"rnd","status":"new"}
{"id":"e10","customer":"A","ts":"2026-02-01T12:00:00+01:00","direction":"inbound","kind":"question","channel":"phone","department":"service","status":"new"}
{"id":"e11","customer":"B","ts":"2026-06-01T12:00:00+02:00","direction":"outbound","kind":"survey_invite","channel":"email","department":"marketing","responded":false,"status":"new"}
{"id":"e12","customer":"B","ts":"2026-06-15T12:00:00+02:00","direction":"inbound","kind":"complaint","channel":"phone","department":"service","rating":1,"status":"new"}
{"id":"e13","customer":"C","ts":"2026-06-10T12:00:00+02:00","direction":"inbound","kind":"suggestion","channel":"community","department":"rnd","status":"acknowledged","acknowledged_at":"2026-06-12T12:00:00+02:00"}
{"id":"e14","customer":"A","ts":"2026-07-01T00:30:00+02:00","direction":"inbound","kind":"co_design","channel":"visit","department":"rnd","status":"new"}
{"id":"e15","customer":"D","ts":"2026-03-27T12:00:00+01:00","direction":"inbound","kind":"suggestion","channel":"web","department":"rnd","status":"acknowledged","acknowledged_at":"2026-04-03T12:30:00+02:00"}
{"id":"e16","customer":"D","ts":"2026-03-27T12:00:00+01:00","direction":"inbound","kind":"suggestion","channel":"web","department":"rnd","status":"acknowledged","acknowledged_at":"2026-04-03T13:30:00+02:00"}
`

func writeHandData(t *testing.T, dir string) {
	customers := "customer_id,signup_date,contact_consent,updated_at\nA,2026-01-01,true,2026-01-01T00:00:00Z\nB,2025-01-01,false,2025-01-01T00:00:00Z\n"
	// Generated customers who only buy, so that the CLV models have a population to fit.
	p := generate.Defaults().ExactBGNBD()
	p.Customers, p.Seed = 300, 2
	_, err := generate.Write(filepath.Join(dir, "gen"), p)
	require.NoError(t, err)
	generated, err := os.ReadFile(filepath.Join(dir, "gen", "orders.csv"))
	require.NoError(t, err)
	// Columns: order_id,customer_id,order_ts,amount,margin,quantity,unit_price,product_id,category,product_launch_date,status.
	// A: launched 30 days before (1 − 30/90), launched long ago (0), launch unknown (not counted).
	// B: before the window (not counted), then on launch day (1).
	orders := string(generated) + `a1,A,2026-06-01 10:00:00,50,,1,50,P1,audio,2026-05-02,completed
a2,A,2026-06-20 10:00:00,40,,1,40,P2,audio,2025-01-01,completed
a3,A,2026-06-25 10:00:00,30,,1,30,P3,audio,,completed
b1,B,2025-03-01 10:00:00,20,,1,20,P4,audio,2025-02-27,completed
b2,B,2026-03-01 10:00:00,25,,1,25,P5,audio,2026-03-01,completed
`
	for name, body := range map[string]string{"customers.csv": customers, "orders.csv": orders, "feedback.jsonl": handFeedback, "config.yaml": knowledgeConfig} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644))
	}
}

// Every aggregate a sub-indicator is computed from, checked against the events above by hand.
func TestKnowledgeInputsByHand(t *testing.T) {
	dir := t.TempDir()
	writeHandData(t, dir)
	env := testutil.Open(t, filepath.Join(dir, "config.yaml"))
	res := env.Run(t, "p", "2026-06-30")
	require.NotNil(t, res.Knowledge)

	ctx := context.Background()
	conn, err := env.Warehouse.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.ExecContext(ctx, `CREATE TEMP TABLE clv_scores AS SELECT * FROM customer_clv WHERE as_of = DATE '2026-06-30'`)
	require.NoError(t, err)
	p := env.Config.Scoring.Knowledge
	asOf := time.Date(2026, 6, 30, 0, 0, 0, 0, time.UTC)
	zone, err := pipelines.CheckedZone(ctx, conn, "Europe/Berlin")
	require.NoError(t, err)
	require.True(t, zone.Fast())
	// The inputs do not depend on the session's time zone, which is whatever the last source
	// loaded on the connection set (or the process's zone when nothing was loaded).
	p.MinEvents = 1 // all four ranked, so that every input of each is computed
	var got map[string]map[string]float64
	for _, session := range []string{"Europe/Berlin", "UTC", "America/New_York"} {
		_, err = conn.ExecContext(ctx, "SET TimeZone = '"+session+"'")
		require.NoError(t, err)
		inZone := knowledgeInputs(t, conn, pipelines.KnowledgeInputSQL(zone, asOf, 365, 7, p, false))
		if got != nil {
			require.Equal(t, got, inZone, "session time zone %s", session)
		}
		got = inZone
	}
	require.Len(t, got, 4, "A and B bought, C and D only gave feedback: all have a knowledge event")

	decay := func(days float64) float64 { return math.Pow(0.5, days/180) }
	want := map[string]map[string]float64{
		// e1–e4 are knowledge events (e9 is a day before the window, e14 a day after as_of);
		// innovation, ages counted to the end of as_of (midnight, 22:00 UTC): co_design 3 at 14
		// hours, suggestion 2 at 180 days 11 hours (UTC+1 in winter), complaint 1 at 121 days 11
		// hours, review ½ at 1½ days.
		"A": {"has_clv": 1, "knowledge_events": 4, "innovation": 3*decay(14.0/24) + 2*decay(180+11.0/24) + decay(121+11.0/24) + 0.5*decay(1.5),
			"inbound_events": 7, "invited": 2, "accepted": 1, "rated_n": 2, "rated_sum": 1 + 0.75, "non_negative": 6,
			"channels": 3, "acknowledged": 2, "converted": 2, "implemented": 1, "departments": 4,
			"lead_sum": 2.0 / 3, "lead_n": 2, "consent": 1, "tenure_days": 180,
			"kac_events": 2, "kforc_events": 3, "kfc_events": 4},
		"B": {"has_clv": 1, "knowledge_events": 1, "innovation": decay(15.5), "inbound_events": 1, "invited": 1, "accepted": 0,
			"rated_n": 0, "non_negative": 0, "channels": 1, "acknowledged": 0, "converted": 0, "implemented": 0,
			"departments": 1, "lead_sum": 1, "lead_n": 1, "consent": 0, "tenure_days": 365,
			"kac_events": 0, "kforc_events": 1, "kfc_events": 1},
		"C": {"has_clv": 0, "clv": 0, "knowledge_events": 1, "innovation": 2 * decay(20.5), "inbound_events": 1, "channels": 1,
			"acknowledged": 1, "departments": 1, "lead_n": 0, "consent": -1, "tenure_days": 20, "kfc_events": 1},
		// Acknowledged within ack_days (7) of 24 hours: e15 after 167½ hours, e16 after 168½
		// (across the change to summer time: 7 calendar days in Berlin end at 167 hours).
		"D": {"knowledge_events": 2, "acknowledged": 1},
	}
	for id, cols := range want {
		for col, v := range cols {
			require.InDelta(t, v, got[id][col], 2e-9, "%s of %s", col, id) // sums are kept to 1e-9
		}
	}
	var clvA float64
	require.NoError(t, env.Warehouse.DB().QueryRow(`SELECT clv FROM customer_clv WHERE customer_id = 'A'`).Scan(&clvA))
	require.InDelta(t, clvA, got["A"]["clv"], 1e-12)

	// With min_events 3, and 4 (A's events exactly), only A is ranked. B, C, D and the customers
	// who only bought are not, with their counts: every customer with a CLV row or feedback is in
	// one of the two, once.
	for _, minEvents := range []int{3, 4} {
		p.MinEvents = minEvents
		rankedSQL, unrankedSQL := pipelines.KnowledgeInputSQL(zone, asOf, 365, 7, p, false), pipelines.KnowledgeUnrankedSQL(zone, asOf, 365, p)
		ranked := knowledgeInputs(t, conn, rankedSQL)
		require.Len(t, ranked, 1)
		require.Equal(t, got["A"], ranked["A"])
		unranked := knowledgeInputs(t, conn, unrankedSQL)
		require.Equal(t, map[string]map[string]float64{
			"B": {"knowledge_events": 1, "kac_events": 0, "kforc_events": 1, "kfc_events": 1},
			"C": {"knowledge_events": 1, "kac_events": 0, "kforc_events": 0, "kfc_events": 1},
			"D": {"knowledge_events": 2, "kac_events": 0, "kforc_events": 0, "kfc_events": 2},
		}, unranked)
		var population, inEither, inBoth int
		require.NoError(t, conn.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM (SELECT customer_id FROM clv_scores UNION SELECT 'C' UNION SELECT 'D')),
			(SELECT count(DISTINCT customer_id) FROM (SELECT customer_id FROM (`+rankedSQL+`) UNION ALL SELECT customer_id FROM (`+unrankedSQL+`))),
			(SELECT count(*) FROM (SELECT customer_id FROM (`+rankedSQL+`) INTERSECT SELECT customer_id FROM (`+unrankedSQL+`)))`).
			Scan(&population, &inEither, &inBoth))
		require.Greater(t, population, 300)
		require.Equal(t, population, inEither)
		require.Zero(t, inBoth)
	}

	// Types per department, from the same events (e9 and e14 outside the window; D's two in rnd).
	var mix string
	require.NoError(t, env.Warehouse.DB().QueryRow(`SELECT string_agg(department || ':' || knowledge_type || '=' || events, ' '
		ORDER BY department, knowledge_type) FROM knowledge_mix`).Scan(&mix))
	require.Equal(t, "marketing:KAC=1 marketing:KFC=1 marketing:KForC=3 rnd:KFC=4 sales:KFC=1 service:KAC=1 service:KFC=2 service:KForC=1", mix)
}

// knowledgeInputs reads the knowledge inputs of customers A–D by column.
func knowledgeInputs(t *testing.T, conn *warehouse.Conn, inputs string) map[string]map[string]float64 {
	rows, err := conn.QueryContext(context.Background(), `SELECT * FROM (`+inputs+`) WHERE customer_id IN ('A', 'B', 'C', 'D')`)
	require.NoError(t, err)
	defer rows.Close()
	cols, err := rows.Columns()
	require.NoError(t, err)
	got := map[string]map[string]float64{}
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		require.NoError(t, rows.Scan(ptrs...))
		row := map[string]float64{}
		for i, c := range cols {
			switch v := vals[i].(type) {
			case int64:
				row[c] = float64(v)
			case int32:
				row[c] = float64(v)
			case float64:
				row[c] = v
			}
		}
		got[vals[0].(string)] = row
	}
	require.NoError(t, rows.Err())
	return got
}

// Who the index ranks among matters: most customers never give feedback, and only those with
// enough knowledge events are compared. Among 20,000 generated customers (the shipped config
// reading what `ckm generate` wrote, through CKM_DATA), ckm generate plants, beside ordinary
// customers, key sources, valuable customers unwilling to share, willing customers of little
// value, loud complainers and ordinary customers who speak a few times a year. Each archetype,
// where it has enough events to be judged, gets the class docs/design.md gives it, and those
// flagged as key sources are mostly the planted ones.
func TestKnowledgeClassesGeneratedArchetypes(t *testing.T) {
	dir := t.TempDir()
	p := generate.Defaults()
	p.Customers, p.Seed = 20_000, 5
	_, err := generate.Write(filepath.Join(dir, "gen"), p)
	require.NoError(t, err)
	t.Setenv("CKM_DATA", filepath.Join(dir, "gen"))
	env := testutil.Open(t, filepath.Join(testutil.RepoRoot(), "config.yaml"))
	res := env.Run(t, "nightly", p.End.Format(time.DateOnly))

	rows, err := env.Warehouse.DB().Query(`WITH truth AS (SELECT customer_id, archetype FROM read_csv(?, header = true))
		SELECT archetype, count(*) FILTER (k.knowledge_events >= 3), count(*) FILTER (k.knowledge_events >= 3 AND k.class = CASE archetype
		    WHEN 'key_source' THEN 'key_source' WHEN 'valuable_unwilling' THEN 'incentivise' WHEN 'willing_low_value' THEN 'nurture'
		    ELSE 'not_a_source' END),
		  count(*) FILTER (k.is_key_source), count(*)
		FROM truth LEFT JOIN customer_knowledge k USING (customer_id) GROUP BY archetype ORDER BY archetype`, filepath.Join(dir, "gen", "truth.csv"))
	require.NoError(t, err)
	defer rows.Close()
	flagged, flaggedPlanted := 0, 0
	judged := map[string][2]int{}
	for rows.Next() {
		var archetype string
		var eligible, expected, keys, all int
		require.NoError(t, rows.Scan(&archetype, &eligible, &expected, &keys, &all))
		t.Logf("%-18s %5d customers, %5d judged, %5d of them in the expected class, %4d flagged key sources", archetype, all, eligible, expected, keys)
		judged[archetype] = [2]int{eligible, expected}
		flagged += keys
		if archetype == string(generate.KeySource) {
			flaggedPlanted = keys
		}
		if archetype != string(generate.Ordinary) {
			require.Greater(t, eligible, 400, "%s: enough planted customers have the events to be judged", archetype)
		}
	}
	require.NoError(t, rows.Err())
	require.Len(t, judged, 6)
	// Ordinary customers with a few events, whether planted as chatty or not, are ordinary.
	ordinary := [2]int{judged["chatty"][0] + judged["ordinary"][0], judged["chatty"][1] + judged["ordinary"][1]}
	for name, counts := range map[string][2]int{"key_source": judged["key_source"], "valuable_unwilling": judged["valuable_unwilling"],
		"willing_low_value": judged["willing_low_value"], "complainer": judged["complainer"], "ordinary with a few events": ordinary} {
		share := float64(counts[1]) / float64(counts[0])
		require.GreaterOrEqual(t, share, 0.7, "%s: share in its expected class", name)
	}
	precision := float64(flaggedPlanted) / float64(flagged)
	t.Logf("key-source precision %.3f (%d of %d flagged were planted)", precision, flaggedPlanted, flagged)
	require.GreaterOrEqual(t, precision, 0.8)
	require.EqualValues(t, flagged, res.Knowledge.KeySources)
	require.Len(t, res.Knowledge.Top, 10)
	require.EqualValues(t, 1, res.Knowledge.Top[0].Rank)

	// The weights in use are recorded with the run.
	var kv, cr float64
	require.NoError(t, env.Warehouse.DB().QueryRow(`SELECT max(estimate) FILTER (parameter = 'kv'), max(estimate) FILTER (parameter = 'ahp.consistency_ratio')
		FROM model_fits WHERE model = 'knowledge_weights' AND run_id = ?`, res.RunID).Scan(&kv, &cr))
	require.InDelta(t, 0.540, kv, 0.0005)
	require.InDelta(t, 0.008, cr, 0.0005)

	// customer_scores has one row per scored customer, joining all four outputs.
	var scoreRows, distinct, withAll int
	require.NoError(t, env.Warehouse.DB().QueryRow(`SELECT count(*), count(DISTINCT customer_id),
		count(*) FILTER (rfm_segment IS NOT NULL AND clv IS NOT NULL AND value_tier IS NOT NULL AND knowledge_class IS NOT NULL)
		FROM customer_scores`).Scan(&scoreRows, &distinct, &withAll))
	require.Equal(t, scoreRows, distinct)
	require.Greater(t, withAll, 10_000)
	var classes, unrankedScored int
	require.NoError(t, env.Warehouse.DB().QueryRow(`SELECT count(DISTINCT class), count(*) FILTER (class = 'insufficient_evidence' AND (kksi IS NOT NULL OR rank IS NOT NULL OR kv_clv IS NOT NULL))
		FROM customer_knowledge`).Scan(&classes, &unrankedScored))
	require.Equal(t, len(knowledge.Classes), classes, "every class occurs in this population")
	require.Zero(t, unrankedScored, "customers outside the ranked population have no scores")
	var rowsWritten, eligible int64
	require.NoError(t, env.Warehouse.DB().QueryRow(`SELECT count(*), count(*) FILTER (knowledge_events >= 3) FROM customer_knowledge`).Scan(&rowsWritten, &eligible))
	require.Equal(t, res.Knowledge.Customers, rowsWritten)
	require.Equal(t, res.Knowledge.Eligible, eligible)
}

// The Olist sample runs end to end through config only, and no review goes missing: each is in
// feedback (once per review id: Olist repeats some across orders) or in dead_letters with a
// reason, and lands on the person a direct join of the three files names.
func TestOlistReviewsAsFeedback(t *testing.T) {
	env := testutil.Open(t, testutil.Example(t, "olist/config.yaml"))
	res := env.Run(t, "olist", "2018-08-31")
	require.NotNil(t, res.Knowledge)
	dir := testutil.Example(t, "olist/data")
	file := func(name string) string { return "read_csv('" + filepath.Join(dir, name) + "', all_varchar = true)" }
	db := env.Warehouse.DB()

	var reviews, inFeedback, deadLetters, unaccounted int
	require.NoError(t, db.QueryRow(`WITH r AS (SELECT DISTINCT review_id FROM `+file("olist_order_reviews_dataset.csv.gz")+`)
		SELECT (SELECT count(*) FROM r),
		       (SELECT count(*) FROM feedback WHERE _source = 'olist_reviews'),
		       (SELECT count(*) FROM dead_letters WHERE source = 'olist_reviews' AND reason IS NOT NULL),
		       (SELECT count(*) FROM r WHERE review_id NOT IN (SELECT event_id FROM feedback)
		          AND NOT EXISTS (SELECT 1 FROM dead_letters d WHERE d.source = 'olist_reviews' AND contains(d.payload, r.review_id)))`).
		Scan(&reviews, &inFeedback, &deadLetters, &unaccounted))
	t.Logf("%d distinct reviews: %d in feedback, %d dead letters", reviews, inFeedback, deadLetters)
	require.Zero(t, unaccounted)
	require.Equal(t, reviews, inFeedback+deadLetters)

	var wrongPerson, orders int
	var amount, want float64
	require.NoError(t, db.QueryRow(`WITH ref AS (
		  SELECT r.review_id, c.customer_unique_id FROM `+file("olist_order_reviews_dataset.csv.gz")+` r
		  JOIN `+file("olist_orders_dataset.csv.gz")+` o USING (order_id) JOIN `+file("olist_customers_dataset.csv.gz")+` c USING (customer_id))
		SELECT count(*) FROM feedback f WHERE NOT EXISTS (SELECT 1 FROM ref WHERE ref.review_id = f.event_id AND ref.customer_unique_id = f.customer_id)`).
		Scan(&wrongPerson))
	require.Zero(t, wrongPerson, "every review lands on the person the files name")
	// Orders are the items rolled up: the amounts equal a direct sum of price + freight.
	require.NoError(t, db.QueryRow(`SELECT count(*), sum(amount), (SELECT sum(CAST(price AS DOUBLE) + CAST(freight_value AS DOUBLE))
		FROM `+file("olist_order_items_dataset.csv.gz")+`) FROM orders`).Scan(&orders, &amount, &want))
	require.InDelta(t, want, amount, 1e-6*want)
	require.Greater(t, orders, 7000)
}

// Without any feedback nobody can be classed: the run says so instead of failing.
func TestKnowledgeWithoutFeedbackWarns(t *testing.T) {
	env := testutil.Open(t, filepath.Join(testutil.RepoRoot(), "examples", "cdnow", "config.yaml"))
	env.Config.Pipelines["cdnow"].Transforms = append(env.Config.Pipelines["cdnow"].Transforms, "knowledge")
	res := env.Run(t, "cdnow", "1997-09-30")
	require.EqualValues(t, 2357, res.Knowledge.Customers)
	require.EqualValues(t, 2357, res.Knowledge.Count(knowledge.InsufficientEvidence))
	require.Zero(t, res.Knowledge.KeySources)
	require.Contains(t, strings.Join(res.Warnings, "\n"), "no customer has 3 or more knowledge events")
}
