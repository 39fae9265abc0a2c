package pipelines_test

import (
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ckm-dev/ckm/internal/testutil"
)

// oneValue is one dimension's value per customer at an as_of, as plain SQL over one output.
var oneValue = map[string]string{
	"rfm_segment":     `SELECT customer_id, segment AS v FROM customer_rfm WHERE as_of = '%s'`,
	"value_tier":      `SELECT customer_id, value_tier AS v FROM customer_value WHERE as_of = '%s'`,
	"lifecycle_stage": `SELECT customer_id, lifecycle_stage AS v FROM customer_value WHERE as_of = '%s'`,
	"knowledge_class": `SELECT customer_id, class AS v FROM customer_knowledge WHERE as_of = '%s'`,
}

// expectedChanges is customer_changes for cur against prev, written independently of the
// pipeline's query: one join per dimension, new and lost by NOT IN.
func expectedChanges(cur, prev string) string {
	q := fmt.Sprintf(`SELECT customer_id, 'new' AS change, 'customer' AS dimension, NULL AS from_value, NULL AS to_value
		FROM customer_rfm WHERE as_of = '%[1]s' AND customer_id NOT IN (SELECT customer_id FROM customer_rfm WHERE as_of = '%[2]s')
		UNION ALL SELECT customer_id, 'lost', 'customer', NULL, NULL
		FROM customer_rfm WHERE as_of = '%[2]s' AND customer_id NOT IN (SELECT customer_id FROM customer_rfm WHERE as_of = '%[1]s')`, cur, prev)
	for dim, one := range oneValue {
		q += fmt.Sprintf(` UNION ALL SELECT b.customer_id, 'moved', '%s', a.v, b.v FROM (%s) a JOIN (%s) b ON a.customer_id = b.customer_id WHERE a.v != b.v`,
			dim, fmt.Sprintf(one, prev), fmt.Sprintf(one, cur))
	}
	return q
}

// countRows runs a count(*) query.
func countRows(t *testing.T, db *sql.DB, q string, args ...any) int64 {
	t.Helper()
	var n int64
	require.NoError(t, db.QueryRow(q, args...).Scan(&n), q)
	return n
}

// requireChangesAgainst checks cur's changes and transitions against prev with plain SQL.
func requireChangesAgainst(t *testing.T, db *sql.DB, cur, prev string) {
	t.Helper()
	got := fmt.Sprintf(`SELECT customer_id, change, dimension, from_value, to_value FROM customer_changes WHERE as_of = '%s'`, cur)
	want := expectedChanges(cur, prev)
	require.Zero(t, countRows(t, db, `SELECT count(*) FROM ((`+got+`) EXCEPT ALL (`+want+`))`), "rows of customer_changes not expected")
	require.Zero(t, countRows(t, db, `SELECT count(*) FROM ((`+want+`) EXCEPT ALL (`+got+`))`), "expected changes missing")
	require.Equal(t, int64(0), countRows(t, db, `SELECT count(*) FROM customer_changes WHERE as_of = ? AND previous_as_of != ?`, cur, prev))
	for _, dim := range []string{"rfm_segment", "value_tier", "lifecycle_stage"} {
		require.Positive(t, countRows(t, db, `SELECT count(*) FROM customer_changes WHERE as_of = ? AND dimension = ?`, cur, dim),
			"customers moved %s between %s and %s: the comparison is not vacuous", dim, prev, cur)
	}
	// Each transition cell counts the customers with that (from, to), NULL for "not scored then".
	for dim, one := range oneValue {
		cells := fmt.Sprintf(`SELECT a.v AS from_value, b.v AS to_value, count(*) AS customers
			FROM (%s) a FULL OUTER JOIN (%s) b ON a.customer_id = b.customer_id GROUP BY 1, 2`, fmt.Sprintf(one, prev), fmt.Sprintf(one, cur))
		got := fmt.Sprintf(`SELECT from_value, to_value, customers FROM segment_transitions WHERE as_of = '%s' AND dimension = '%s'`, cur, dim)
		require.Zero(t, countRows(t, db, `SELECT count(*) FROM ((`+got+`) EXCEPT ALL (`+cells+`))`), dim)
		require.Zero(t, countRows(t, db, `SELECT count(*) FROM ((`+cells+`) EXCEPT ALL (`+got+`))`), dim)
	}
}

// A two-date backfill of the sample: the second date's changes and transitions equal plain SQL
// over the two dates' outputs; an earlier date run afterwards becomes what the later one moved
// from; a rerun changes nothing.
func TestChangesBetweenAsOfsEqualPlainSQL(t *testing.T) {
	env := testutil.Open(t, filepath.Join(testutil.RepoRoot(), "config.yaml"))
	db := env.Warehouse.DB()
	env.Run(t, "nightly", "2026-05-31")
	require.Zero(t, countRows(t, db, `SELECT count(*) FROM customer_changes`), "the first as_of has nothing to compare with")
	require.Zero(t, countRows(t, db, `SELECT count(*) FROM segment_transitions`))

	env.Run(t, "nightly", "2026-06-30")
	requireChangesAgainst(t, db, "2026-06-30", "2026-05-31")
	require.Positive(t, countRows(t, db, `SELECT count(*) FROM customer_changes WHERE change = 'new'`), "customers who first bought in June are new")
	var runID string
	require.NoError(t, db.QueryRow(`SELECT any_value(run_id) FROM customer_rfm WHERE as_of = '2026-06-30'`).Scan(&runID))
	require.Zero(t, countRows(t, db, `SELECT count(*) FROM customer_changes WHERE as_of = '2026-06-30' AND run_id != ?`, runID))

	// A date in between, run later, is what 2026-06-30 now moved from.
	env.Run(t, "nightly", "2026-06-15")
	requireChangesAgainst(t, db, "2026-06-15", "2026-05-31")
	requireChangesAgainst(t, db, "2026-06-30", "2026-06-15")

	snapshot := `SELECT count(*), sum(hash(as_of, previous_as_of, customer_id, change, dimension, from_value, to_value))::VARCHAR FROM customer_changes`
	var n1, n2 int64
	var h1, h2 sql.NullString
	require.NoError(t, db.QueryRow(snapshot).Scan(&n1, &h1))
	env.Run(t, "nightly", "2026-06-15")
	require.NoError(t, db.QueryRow(snapshot).Scan(&n2, &h2))
	require.Equal(t, n1, n2)
	require.Equal(t, h1, h2, "a rerun recomputes the same changes")
}
