package pipelines_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ckm-dev/ckm/internal/testutil"
	"github.com/ckm-dev/ckm/pipelines"
	"github.com/ckm-dev/ckm/transforms/knowledge"
)

// The run summary (what `ckm run` prints after the outputs committed and every batch was
// released) equals the warehouse. The run's Arrow memory is overwritten when freed, so a
// string kept past its batch shows up here as a wrong name or count, not as a crash later.
func TestRunSummaryOutlivesItsBatches(t *testing.T) {
	env := testutil.Open(t, filepath.Join(testutil.RepoRoot(), "config.yaml"))
	mem := testutil.NewPoisonAllocator()
	r := env.Runner()
	r.Arrow = mem
	res, err := r.Run(context.Background(), pipelines.Request{Pipeline: "nightly", AsOf: time.Date(2026, 6, 30, 0, 0, 0, 0, time.UTC)})
	require.NoError(t, err)
	require.Zero(t, mem.Size(), "every batch the run allocated was released")
	db := env.Warehouse.DB()

	segments := map[string]int64{}
	rows, err := db.Query(`SELECT segment, count(*) FROM customer_rfm GROUP BY segment`)
	require.NoError(t, err)
	for rows.Next() {
		var s string
		var n int64
		require.NoError(t, rows.Scan(&s, &n))
		segments[s] = n
	}
	require.NoError(t, rows.Close())
	require.Equal(t, segments, res.Segments)

	tierStage := map[[2]string]int64{}
	rows, err = db.Query(`SELECT value_tier, lifecycle_stage, count(*) FROM customer_value GROUP BY ALL`)
	require.NoError(t, err)
	for rows.Next() {
		var k [2]string
		var n int64
		require.NoError(t, rows.Scan(&k[0], &k[1], &n))
		tierStage[k] = n
	}
	require.NoError(t, rows.Close())
	require.Equal(t, tierStage, res.TierStage)

	// Classes of the ranked population by tier and stage; the rest are counted in one.
	classes := map[[3]string]int64{}
	rows, err = db.Query(`SELECT k.class, CASE WHEN k.knowledge_events >= 3 THEN coalesce(v.value_tier, '') ELSE '' END,
		CASE WHEN k.knowledge_events >= 3 THEN coalesce(v.lifecycle_stage, '') ELSE '' END, count(*)
		FROM customer_knowledge k LEFT JOIN customer_value v USING (as_of, customer_id) GROUP BY ALL`)
	require.NoError(t, err)
	for rows.Next() {
		var k [3]string
		var n int64
		require.NoError(t, rows.Scan(&k[0], &k[1], &k[2], &n))
		classes[k] += n
	}
	require.NoError(t, rows.Close())
	require.Equal(t, classes, res.Knowledge.ClassTierStage)

	var keySources int64
	require.NoError(t, db.QueryRow(`SELECT count(*) FROM customer_knowledge WHERE is_key_source`).Scan(&keySources))
	require.Equal(t, keySources, res.Knowledge.KeySources)
	require.Positive(t, keySources)
	rows, err = db.Query(`SELECT rank, customer_id, class, top_factors FROM customer_knowledge WHERE is_key_source ORDER BY rank, customer_id LIMIT 10`)
	require.NoError(t, err)
	var top []pipelines.KeySource
	for rows.Next() {
		var s pipelines.KeySource
		require.NoError(t, rows.Scan(&s.Rank, &s.CustomerID, &s.Class, &s.TopFactors))
		top = append(top, s)
	}
	require.NoError(t, rows.Close())
	require.Len(t, res.Knowledge.Top, len(top))
	for i, s := range res.Knowledge.Top {
		require.Equal(t, top[i].CustomerID, s.CustomerID)
		require.Equal(t, top[i].Rank, s.Rank)
		require.Contains(t, []string{knowledge.KeySource, knowledge.KeySourceCapabilityGap}, s.Class)
		require.Equal(t, top[i].TopFactors, s.TopFactors)
	}
}

// A value no score can use, written into the warehouse by another tool (ckm's ingest refuses
// it), fails the run with an error naming the table, the record and the value, not a cast.
func TestUnscoreableStoredValueIsNamed(t *testing.T) {
	env := testutil.Open(t, filepath.Join(testutil.RepoRoot(), "config.yaml"))
	env.Run(t, "nightly", "2026-06-30")
	_, err := env.Warehouse.DB().Exec(`INSERT INTO orders (order_id, customer_id, order_ts, amount, status, _source, _position, _loaded_at, _run_id, _stream, _seq)
		VALUES ('X1', 'C0000001', TIMESTAMPTZ '2026-06-01 10:00:00+00', 'inf', 'completed', 'other_tool', 'import.csv:7', now(), 'manual', 'import.csv', 7)`)
	require.NoError(t, err)
	_, err = env.Runner().Run(context.Background(), pipelines.Request{Pipeline: "nightly", AsOf: time.Date(2026, 6, 30, 0, 0, 0, 0, time.UTC)})
	require.Error(t, err)
	require.Contains(t, err.Error(), "orders.amount holds inf at import.csv:7 (source other_tool), which no score can use")
}

// Scoring reads customers a chunk at a time and keeps what ranks need as compact numbers in row
// order: the outputs must not depend on where the chunks split. The sample's 2,000 customers
// scored 257 at a time (chunks that split every batch) equal the sample scored at once, row for
// row, and every batch is released.
func TestScoresDoNotDependOnHowManyCustomersCrossAtATime(t *testing.T) {
	asOf := time.Date(2026, 6, 30, 0, 0, 0, 0, time.UTC)
	digests := func(chunkRows int) map[string]string {
		env := testutil.Open(t, filepath.Join(testutil.RepoRoot(), "config.yaml"))
		mem := testutil.NewPoisonAllocator()
		r := env.Runner()
		r.Arrow, r.ChunkRows = mem, chunkRows
		res, err := r.Run(context.Background(), pipelines.Request{Pipeline: "nightly", AsOf: asOf})
		require.NoError(t, err)
		require.Zero(t, mem.Size(), "every batch the run allocated was released")
		require.Greater(t, res.Customers, int64(4*257), "several chunks")
		out := map[string]string{}
		for _, table := range []string{"customer_rfm", "customer_clv", "customer_value", "customer_knowledge", "model_fits", "knowledge_mix"} {
			var digest string
			require.NoError(t, env.Warehouse.DB().QueryRow(`SELECT md5(string_agg(row, '|' ORDER BY row)) FROM (
				SELECT concat_ws(',', *COLUMNS(* EXCLUDE (run_id))) AS row FROM `+table+`)`).Scan(&digest))
			out[table] = digest
		}
		return out
	}
	require.Equal(t, digests(0), digests(257))
}

// The summary sums amounts in 18-digit decimals, which hold less than 10^12; ingest allows
// amounts up to 10^15. An amount past the narrow type, and a day whose orders sum past it,
// are summed exactly all the same (in 38 digits), equal to the plain-SQL reference.
func TestAmountsPastTwelveDigitsAreSummedExactly(t *testing.T) {
	env := testutil.Open(t, filepath.Join(testutil.RepoRoot(), "config.yaml"))
	env.Run(t, "nightly", "2026-06-30")
	_, err := env.Warehouse.DB().Exec(`INSERT INTO orders (order_id, customer_id, order_ts, amount, status, _source, _position, _loaded_at, _run_id, _stream, _seq)
		VALUES ('BIG1', 'CBIG1', TIMESTAMPTZ '2026-06-01 10:00:00+00', 5e12, 'completed', 'test', 'big:1', now(), 'manual', 'big', 1),
		       ('BIG2', 'CBIG1', TIMESTAMPTZ '2026-06-02 10:00:00+00', 0.01, 'completed', 'test', 'big:2', now(), 'manual', 'big', 2),
		       ('BIG3', 'CBIG2', TIMESTAMPTZ '2026-06-03 10:00:00+00', 6e11, 'completed', 'test', 'big:3', now(), 'manual', 'big', 3),
		       ('BIG4', 'CBIG2', TIMESTAMPTZ '2026-06-03 11:00:00+00', 6e11, 'completed', 'test', 'big:4', now(), 'manual', 'big', 4)`)
	require.NoError(t, err)
	env.Run(t, "nightly", "2026-06-30")
	requireRFMMatchesSQL(t, env, "2026-06-30", 1000)
	db := env.Warehouse.DB()
	var monetary1, monetary2, avgValue1 float64
	require.NoError(t, db.QueryRow(`SELECT monetary FROM customer_rfm WHERE customer_id = 'CBIG1' AND as_of = DATE '2026-06-30'`).Scan(&monetary1))
	require.NoError(t, db.QueryRow(`SELECT monetary FROM customer_rfm WHERE customer_id = 'CBIG2' AND as_of = DATE '2026-06-30'`).Scan(&monetary2))
	require.NoError(t, db.QueryRow(`SELECT avg_value FROM customer_clv WHERE customer_id = 'CBIG1' AND as_of = DATE '2026-06-30'`).Scan(&avgValue1))
	require.Equal(t, 5000000000000.01, monetary1)
	require.Equal(t, 1.2e12, monetary2, "one purchase day of two orders")
	require.Positive(t, avgValue1)
}
