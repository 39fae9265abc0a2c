package pipelines

import (
	"context"
	"fmt"
	"time"

	"github.com/ckm-dev/ckm/warehouse"
)

// customerSummary is the temp table of every customer's summary of their orders (see
// CustomerSummarySQL), built once per run by the first transform that reads it.
const customerSummary = "customer_summary"

// CustomerSummarySQL is the one pass over orders that every order-based score reads: per
// customer with a purchase day up to the end of as_of, RFM's inputs over the lookback window, the
// calibration summary for CLV, and the inputs of value tiers and lifecycle stages.
//
// Days are calendar days in zone; a purchase day has a completed order; day amounts net in
// same-day refunds, summed exactly (see money). RFM: recency in days from the last purchase day
// in the window to as_of, frequency the purchase days in the window (0 for a customer who bought
// only before it), monetary the window's net amount. CLV: x = purchase days − 1; t_x and t_cal
// count from the first purchase day in units of unitDays; zbar is the mean amount of the repeat
// purchase days (0 without any).
//
// With wholeHistory false only the lookback window is read (all RFM needs): the CLV and value
// columns then describe the window alone and must not be used. Amounts and day sums are held
// in the decimal type amounts (narrowMoney or money).
func CustomerSummarySQL(zone Zone, asOf time.Time, unitDays float64, lookback, trendDays int, current string, wholeHistory bool, amounts string) string {
	a := "DATE '" + asOf.Format(time.DateOnly) + "'"
	since := ""
	if !wholeHistory {
		since = "AND order_ts >= " + zone.DayStart(fmt.Sprintf("%s - %d + 1", a, lookback))
	}
	return fmt.Sprintf(`WITH days AS (
  SELECT customer_id, %[1]s AS d, CAST(sum(CAST(amount AS %[7]s)) AS %[7]s) AS amount,
         CAST(sum(CAST(coalesce(margin, 0) AS %[7]s)) AS %[7]s) AS margin, bool_or(status = 'completed') AS purchase
  FROM orders
  WHERE (status = 'completed' OR (status = 'returned' AND amount < 0))
    AND order_ts < %[8]s %[9]s
  GROUP BY ALL
)
SELECT customer_id,
  CAST(%[2]s - max(d) FILTER (purchase AND d > %[2]s - %[4]d) AS INTEGER) AS recency_days,
  CAST(count(*) FILTER (purchase AND d > %[2]s - %[4]d) AS INTEGER) AS frequency,
  CAST(sum(amount) FILTER (d > %[2]s - %[4]d) AS DOUBLE) AS monetary,
  CAST(count(*) FILTER (purchase) - 1 AS DOUBLE) AS x,
  (max(d) FILTER (purchase) - min(d) FILTER (purchase)) / %[3]g AS t_x,
  (%[2]s - min(d) FILTER (purchase)) / %[3]g AS t_cal,
  CAST(coalesce((sum(amount) FILTER (purchase) - arg_min(amount, d) FILTER (purchase)) / nullif(count(*) FILTER (purchase) - 1, 0), 0) AS DOUBLE) AS zbar,
  CAST(coalesce(sum(%[6]s) FILTER (d > %[2]s - %[4]d), 0) AS DOUBLE) AS current_value,
  CAST(coalesce(bool_or(purchase AND d > %[2]s - %[4]d), false) AS INTEGER) AS active,
  %[2]s - min(d) FILTER (purchase) AS tenure_days,
  count(*) FILTER (purchase) AS purchase_days,
  CAST(coalesce(sum(amount) FILTER (d > %[2]s - %[5]d), 0) AS DOUBLE) AS recent_amount,
  CAST(coalesce(sum(amount) FILTER (d > %[2]s - 2 * %[5]d AND d <= %[2]s - %[5]d), 0) AS DOUBLE) AS before_amount
FROM days
GROUP BY customer_id
HAVING count(*) FILTER (purchase) > 0`, zone.LocalDate("order_ts"), a, unitDays, lookback, trendDays, current, amounts, zone.DayStart(a+" + 1"), since)
}

// narrowMoney is the decimal type the summary first sums amounts in. DuckDB casts a double to
// an 18-digit decimal (an int64) and adds those faster than 38-digit ones (128-bit): at 10M
// customers the summary took 83–87 s against 110 s, at 1M 0.5–1 s less. It holds amounts and
// day sums below 10^12; a larger one (ingest allows up to 10^15) makes DuckDB refuse the cast,
// never round it, and the summary is built again in money. Both sum exactly: the same summary.
const narrowMoney = "DECIMAL(18,6)"

// summarizeCustomers builds the run's customer summary unless it is there: over the whole
// history when the pipeline scores CLV, else over the lookback window.
func (r *Runner) summarizeCustomers(ctx context.Context, st *scoring) error {
	if st.summarized {
		return nil
	}
	unit, err := r.Config.Scoring.CLV.UnitDays()
	if err != nil {
		return err
	}
	st.dropAfterRun(customerSummary)
	summarize := func(amounts string) error {
		_, err := st.conn.ExecContext(ctx, "CREATE OR REPLACE TEMP TABLE "+customerSummary+" AS "+CustomerSummarySQL(st.zone, st.res.AsOf, unit,
			r.Config.Scoring.LookbackDays, r.Config.Scoring.Value.TrendDays, r.Config.Scoring.Value.Current, st.wholeHistory, amounts))
		return err
	}
	start := time.Now()
	err = summarize(narrowMoney)
	if warehouse.CastFailed(err) {
		st.log.Info("an amount or a day's sum of 10^12 or more: summing in 38-digit decimals", "error", err)
		err = summarize(money)
	}
	if err != nil {
		return fmt.Errorf("customer summary: %w", err)
	}
	st.res.CLVStats.Summary = time.Since(start)
	st.summarized = true
	return nil
}

// summaryReaders are the transforms that read the customer summary, in the order they run.
var summaryReaders = []string{"rfm", "clv", "value"}

// doneWithSummary drops the customer summary when transform is the last of the run's
// transforms to read it: what no later stage reads leaves DuckDB's memory to those to come.
func (st *scoring) doneWithSummary(ctx context.Context, transform string) {
	if transform == st.lastSummaryReader {
		st.drop(ctx, customerSummary)
		st.summarized = false
	}
}
