package pipelines_test

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ckm-dev/ckm/internal/testutil"
)

// rfmReferenceSQL scores RFM in plain DuckDB SQL straight from the orders table, written
// independently of ckm's aggregate and Go scoring: rank() for the scores (1 + floor(5 × (rank −
// 1) / n), docs/design.md), fScore for F when it is binned, and the segment table as a CASE. It
// returns one row: customers in either result, and how many differ in any column.
func rfmReferenceSQL(zone, asOf string, lookback int, fScore string) string {
	if fScore == "" {
		fScore = "CAST(1 + floor(5 * (rank() OVER (ORDER BY frequency) - 1) / count(*) OVER ()) AS INTEGER)"
	}
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
         CAST(sum(CAST(amount AS DECIMAL(38, 6))) AS DOUBLE) AS monetary -- exact, as ckm documents: ties stay ties
  FROM window_orders GROUP BY customer_id
  HAVING count(*) FILTER (WHERE status = 'completed') > 0
), scored AS (
  SELECT *,
         CAST(1 + floor(5 * (rank() OVER (ORDER BY recency_days DESC) - 1) / count(*) OVER ()) AS INTEGER) AS r,
         %[4]s AS f,
         CAST(1 + floor(5 * (rank() OVER (ORDER BY monetary) - 1) / count(*) OVER ()) AS INTEGER) AS m
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
FROM ref FULL JOIN ckm USING (customer_id)`, zone, asOf, lookback, fScore)
}

func requireRFMMatchesSQL(t *testing.T, env *testutil.Env, asOf string, minCustomers int) {
	requireRFMMatchesSQLWithF(t, env, asOf, minCustomers, "")
}

func requireRFMMatchesSQLWithF(t *testing.T, env *testutil.Env, asOf string, minCustomers int, fScore string) {
	var customers, mismatches int
	q := rfmReferenceSQL(env.Config.Timezone, asOf, env.Config.Scoring.LookbackDays, fScore)
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

	// Fixed frequency bins (upper bounds of scores 1–4) instead of ranks.
	env.Config.Scoring.RFM.Bins.Frequency = []float64{1, 2, 3, 5}
	env.Run(t, "nightly", "2026-06-30")
	requireRFMMatchesSQLWithF(t, env, "2026-06-30", 1000,
		"CASE WHEN frequency <= 1 THEN 1 WHEN frequency <= 2 THEN 2 WHEN frequency <= 3 THEN 3 WHEN frequency <= 5 THEN 4 ELSE 5 END")
}

// On Olist 97% of the people bought once. Those ties sit at the bottom of the range they span:
// every one-time buyer is F = 1, so none of them shows as a loyal customer, champion or one the
// firm "can't lose"; the repeat buyers are F = 5.
func TestRFMOnOlistKeepsOneTimeBuyersAtTheBottom(t *testing.T) {
	env := testutil.Open(t, testutil.Example(t, "olist/config.yaml"))
	env.Run(t, "olist", "2018-08-31")
	requireRFMMatchesSQL(t, env, "2018-08-31", 5000)
	var oneTime, oneTimeF1, repeat, repeatF5, oneTimeLoyal int
	require.NoError(t, env.Warehouse.DB().QueryRow(`SELECT count(*) FILTER (frequency = 1), count(*) FILTER (frequency = 1 AND f_score = 1),
		count(*) FILTER (frequency > 1), count(*) FILTER (frequency > 1 AND f_score = 5),
		count(*) FILTER (frequency = 1 AND segment IN ('Loyal Customers', 'Champions', 'Can''t Lose'))
		FROM customer_rfm WHERE as_of = DATE '2018-08-31'`).Scan(&oneTime, &oneTimeF1, &repeat, &repeatF5, &oneTimeLoyal))
	t.Logf("%d one-time buyers, %d repeat buyers", oneTime, repeat)
	require.Greater(t, oneTime, 20*repeat, "the data: almost everyone bought once")
	require.Equal(t, oneTime, oneTimeF1)
	require.Equal(t, repeat, repeatF5)
	require.Zero(t, oneTimeLoyal)
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
