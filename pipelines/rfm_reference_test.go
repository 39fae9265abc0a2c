package pipelines_test

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ckm-dev/ckm/internal/testutil"
)

// rfmReferenceSQL scores RFM in plain DuckDB SQL straight from the orders table, written
// independently of ckm's aggregate and Go scoring: window functions for the scores and the
// DESIGN.md segment table as a CASE. It returns one row: customers in either result, and
// how many differ in any column.
func rfmReferenceSQL(zone, asOf string, lookback int) string {
	return fmt.Sprintf(`
WITH days AS (
  SELECT customer_id, CAST(order_ts AT TIME ZONE '%[1]s' AS DATE) AS day, amount, status FROM orders
), window_orders AS (
  SELECT * FROM days
  WHERE day > DATE '%[2]s' - %[3]d AND day <= DATE '%[2]s'
    AND (status = 'completed' OR (status = 'returned' AND amount < 0))
), per_customer AS (
  SELECT customer_id,
         DATE '%[2]s' - max(day) FILTER (WHERE status = 'completed') AS recency_days,
         count(DISTINCT day) FILTER (WHERE status = 'completed') AS frequency,
         sum(amount) AS monetary
  FROM window_orders GROUP BY customer_id
  HAVING count(*) FILTER (WHERE status = 'completed') > 0
), scored AS (
  SELECT *,
         CAST(ceil(5 * cume_dist() OVER (ORDER BY recency_days DESC)) AS INTEGER) AS r,
         CAST(ceil(5 * cume_dist() OVER (ORDER BY frequency)) AS INTEGER) AS f,
         CAST(ceil(5 * cume_dist() OVER (ORDER BY monetary)) AS INTEGER) AS m
  FROM per_customer
), ref AS (
  SELECT *, CASE
      WHEN r = 5 AND f >= 4 THEN 'Champions'
      WHEN r IN (3, 4) AND f >= 4 THEN 'Loyal Customers'
      WHEN r >= 4 AND f IN (2, 3) THEN 'Potential Loyalists'
      WHEN r = 5 AND f = 1 THEN 'New Customers'
      WHEN r = 4 AND f = 1 THEN 'Promising'
      WHEN r = 3 AND f = 3 THEN 'Need Attention'
      WHEN r = 3 AND f <= 2 THEN 'About to Sleep'
      WHEN r <= 2 AND f = 5 THEN 'Can''t Lose'
      WHEN r <= 2 AND f IN (3, 4) THEN 'At Risk'
      WHEN r <= 2 AND f <= 2 THEN 'Hibernating' END AS segment
  FROM scored
), ckm AS (SELECT * FROM customer_rfm WHERE as_of = DATE '%[2]s')
SELECT count(*) AS customers,
       count(*) FILTER (WHERE ref.customer_id IS NULL OR ckm.customer_id IS NULL
         OR ckm.recency_days <> ref.recency_days OR ckm.frequency <> ref.frequency
         OR abs(ckm.monetary - ref.monetary) > 1e-6 * greatest(1, abs(ref.monetary))
         OR ckm.r_score <> ref.r OR ckm.f_score <> ref.f OR ckm.m_score <> ref.m
         OR ckm.rfm_cell <> concat(ref.r, ref.f, ref.m) OR ckm.segment <> ref.segment) AS mismatches
FROM ref FULL JOIN ckm USING (customer_id)`, zone, asOf, lookback)
}

func requireRFMMatchesSQL(t *testing.T, env *testutil.Env, asOf string, minCustomers int) {
	var customers, mismatches int
	q := rfmReferenceSQL(env.Config.Timezone, asOf, env.Config.Scoring.LookbackDays)
	require.NoError(t, env.Warehouse.DB().QueryRow(q).Scan(&customers, &mismatches))
	require.GreaterOrEqual(t, customers, minCustomers)
	require.Zero(t, mismatches, "customers whose RFM differs from the plain-SQL reference")
}

func TestRFMMatchesSQLOnSampleData(t *testing.T) {
	env := testutil.Open(t, filepath.Join(testutil.RepoRoot(), "config.yaml"))
	res := env.Run(t, "nightly", "2026-06-30")
	requireRFMMatchesSQL(t, env, "2026-06-30", 1000)
	var rfmRows int64
	require.NoError(t, env.Warehouse.DB().QueryRow(`SELECT count(*) FROM customer_rfm WHERE as_of = DATE '2026-06-30'`).Scan(&rfmRows))
	require.Equal(t, res.Customers, rfmRows)
	// An earlier as_of with a window that cuts through the data scores a different population.
	env.Run(t, "nightly", "2025-03-15")
	requireRFMMatchesSQL(t, env, "2025-03-15", 500)
}

func TestRFMMatchesSQLOnOnlineRetail(t *testing.T) {
	env := testutil.Open(t, testutil.Example(t, "online_retail/config.yaml"))
	res := env.Run(t, "retail", "2011-12-09")
	requireRFMMatchesSQL(t, env, "2011-12-09", 4000)

	// Nothing is lost silently: every line is an order line or a dead letter, and the counts
	// match the published description of the file (examples/online_retail/README.md).
	src := res.Sources[0]
	require.EqualValues(t, 541909, src.Read)
	require.EqualValues(t, 135080, src.DeadLettered, "lines without a CustomerID")
	db := env.Warehouse.DB()
	var deadLetters, missingCustomer int
	require.NoError(t, db.QueryRow(`SELECT count(*), count(*) FILTER (reason = 'missing customer_id') FROM dead_letters`).Scan(&deadLetters, &missingCustomer))
	require.Equal(t, 135080, deadLetters)
	require.Equal(t, 135080, missingCustomer)

	// The rolled-up orders equal an aggregate computed straight from the raw file.
	file := testutil.Example(t, "online_retail/data/online_retail.csv.gz")
	var invoices, customers int
	var total, loadedTotal float64
	require.NoError(t, db.QueryRow(`SELECT count(DISTINCT InvoiceNo), count(DISTINCT CustomerID), sum(Quantity * UnitPrice)
		FROM read_csv(?) WHERE CustomerID IS NOT NULL`, file).Scan(&invoices, &customers, &total))
	require.Equal(t, 4372, customers)
	var orders, loadedCustomers int
	require.NoError(t, db.QueryRow(`SELECT count(*), count(DISTINCT customer_id), sum(amount) FROM orders`).Scan(&orders, &loadedCustomers, &loadedTotal))
	require.Equal(t, invoices, orders)
	require.Equal(t, customers, loadedCustomers)
	require.InDelta(t, total, loadedTotal, 1e-6*total)
}
