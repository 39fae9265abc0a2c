package pipelines

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/ckm-dev/ckm/config"
	"github.com/ckm-dev/ckm/transforms/rfm"
	"github.com/ckm-dev/ckm/warehouse"
)

// output is one scored table waiting to replace its as_of partition.
type output struct {
	table  string
	rec    arrow.RecordBatch
	insert string // INSERT … SELECT from the registered view `scored`, binding (as_of, run_id)
}

type outputs []output

func (o outputs) release() {
	for _, out := range o {
		out.rec.Release()
	}
}

// write replaces each output's as_of partition; the caller holds the transaction.
func (o outputs) write(ctx context.Context, conn *warehouse.Conn, res *Result) (int64, error) {
	var total int64
	for _, out := range o {
		if _, err := conn.ExecContext(ctx, "DELETE FROM "+out.table+" WHERE as_of = ?", res.AsOf); err != nil {
			return 0, fmt.Errorf("replace %s for %s: %w", out.table, res.AsOf.Format(time.DateOnly), err)
		}
		reader, err := array.NewRecordReader(out.rec.Schema(), []arrow.RecordBatch{out.rec})
		if err != nil {
			return 0, err
		}
		release, err := conn.RegisterArrow(reader, "scored")
		if err != nil {
			reader.Release()
			return 0, err
		}
		r, err := conn.ExecContext(ctx, out.insert, res.AsOf, res.RunID)
		release()
		reader.Release()
		if err != nil {
			return 0, fmt.Errorf("write %s: %w", out.table, err)
		}
		n, _ := r.RowsAffected()
		total += n
	}
	return total, nil
}

// score runs the pipeline's transforms and returns their outputs, not yet written.
func (r *Runner) score(ctx context.Context, conn *warehouse.Conn, p *config.Pipeline, res *Result, log *slog.Logger) (outputs, error) {
	var outs outputs
	for _, t := range p.Transforms {
		switch t {
		case "rfm":
			out, err := r.scoreRFM(ctx, conn, res)
			if err != nil {
				outs.release()
				return nil, fmt.Errorf("transform rfm: %w", err)
			}
			outs = append(outs, out)
		}
	}
	return outs, nil
}

// RFMAggregateSQL is the per-customer aggregate RFM is scored from. Parameters: as_of (DATE),
// lookback days. Only completed orders count, with negative-amount returns netted into monetary;
// a purchase day is a day with a completed order of positive amount, in the configured zone.
func RFMAggregateSQL(zone string) string {
	z := warehouse.Quote(zone)
	return `WITH params AS (SELECT CAST(?::DATE AS DATE) AS as_of, CAST(? AS INTEGER) AS lookback),
counted AS (
  SELECT o.customer_id, CAST(timezone(` + z + `, o.order_ts) AS DATE) AS d, o.amount, p.as_of
  FROM orders o, params p
  WHERE (o.status = 'completed' OR (o.status = 'returned' AND o.amount < 0))
    AND o.order_ts >= timezone(` + z + `, CAST(p.as_of - p.lookback + 1 AS TIMESTAMP))
    AND o.order_ts <  timezone(` + z + `, CAST(p.as_of + 1 AS TIMESTAMP))
)
SELECT customer_id,
       CAST(any_value(as_of) - max(d) FILTER (WHERE status_purchase) AS INTEGER) AS recency_days,
       CAST(count(DISTINCT d) FILTER (WHERE status_purchase) AS INTEGER) AS frequency,
       CAST(sum(amount) AS DOUBLE) AS monetary
FROM (SELECT *, amount > 0 AS status_purchase FROM counted)
GROUP BY customer_id
HAVING count(*) FILTER (WHERE status_purchase) > 0`
}

func (r *Runner) scoreRFM(ctx context.Context, conn *warehouse.Conn, res *Result) (output, error) {
	done := r.step("score rfm")
	defer done()
	reader, err := conn.ArrowQuery(ctx, RFMAggregateSQL(r.Config.Timezone), res.AsOf.Format(time.DateOnly), r.Config.Scoring.LookbackDays)
	if err != nil {
		return output{}, err
	}
	defer reader.Release()
	var batches []arrow.RecordBatch
	for reader.Next() {
		b := reader.RecordBatch()
		b.Retain()
		batches = append(batches, b)
	}
	defer func() {
		for _, b := range batches {
			b.Release()
		}
	}()
	if err := reader.Err(); err != nil {
		return output{}, err
	}
	rec, err := rfm.Score(batches, r.Config.Scoring.RFM, memory.DefaultAllocator)
	if err != nil {
		return output{}, err
	}
	res.Customers = rec.NumRows()
	seg := rec.Column(rec.Schema().FieldIndices("segment")[0]).(*array.String)
	for i := 0; i < seg.Len(); i++ {
		res.Segments[seg.Value(i)]++
	}
	return output{table: "customer_rfm", rec: rec, insert: `INSERT INTO customer_rfm
		(as_of, customer_id, run_id, recency_days, frequency, monetary, r_score, f_score, m_score, rfm_cell, segment)
		SELECT CAST(? AS DATE), customer_id, ?, recency_days, frequency, monetary, r_score, f_score, m_score, rfm_cell, segment FROM scored`}, nil
}
