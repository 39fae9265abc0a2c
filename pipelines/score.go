package pipelines

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"
	"unique"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/ckm-dev/ckm/config"
	"github.com/ckm-dev/ckm/connectors/mapping"
	"github.com/ckm-dev/ckm/transforms/rfm"
	"github.com/ckm-dev/ckm/warehouse"
)

// output is one table's rows for the run's as_of, computed but not yet written.
type output struct {
	table   string
	write   func(ctx context.Context, conn *warehouse.Conn, res *Result) (int64, error) // inserts the partition's rows
	release func()
}

type outputs []output

func (o outputs) release() {
	for _, out := range o {
		if out.release != nil {
			out.release()
		}
	}
}

// write replaces each output's as_of partition; the caller holds the transaction.
func (o outputs) write(ctx context.Context, conn *warehouse.Conn, res *Result) (int64, error) {
	var total int64
	cleared := map[string]bool{} // several outputs may share a table (model_fits)
	for _, out := range o {
		if !cleared[out.table] {
			if _, err := conn.ExecContext(ctx, "DELETE FROM "+out.table+" WHERE as_of = ?", res.AsOf); err != nil {
				return 0, fmt.Errorf("replace %s for %s: %w", out.table, res.AsOf.Format(time.DateOnly), err)
			}
			cleared[out.table] = true
		}
		n, err := out.write(ctx, conn, res)
		if err != nil {
			return 0, fmt.Errorf("write %s: %w", out.table, err)
		}
		total += n
	}
	return total, nil
}

// scored stands for the Arrow view of an output's rows in its INSERT statement.
const scored = "{scored}"

// arrowOutput writes a record batch through an Arrow view; insert is an INSERT … SELECT …
// FROM {scored} that binds (as_of, run_id).
func arrowOutput(table string, rec arrow.RecordBatch, insert string) output {
	return output{table: table, release: rec.Release,
		write: func(ctx context.Context, conn *warehouse.Conn, res *Result) (n int64, err error) {
			err = conn.WithArrowView(rec, func(view string) error {
				r, err := conn.ExecContext(ctx, strings.ReplaceAll(insert, scored, view), res.AsOf, res.RunID)
				if err != nil {
					return err
				}
				n, err = r.RowsAffected()
				return err
			})
			return n, err
		}}
}

// scoring carries what one transform hands to a later one within a run.
type scoring struct {
	conn *warehouse.Conn
	res  *Result
	log  *slog.Logger
	// mem is the memory transforms build their batches in; copy says batches read from DuckDB
	// are copied into it too (see Runner.Arrow).
	mem  memory.Allocator
	copy bool
	clv  *clvState
	// Rows of customer_clv and customer_value, owned by their outputs, for knowledge to join.
	clvScores, valueScores arrow.RecordBatch
	zone                   Zone // calendar days
}

// score runs the pipeline's transforms in their fixed order and returns their outputs, not yet written.
func (r *Runner) score(ctx context.Context, conn *warehouse.Conn, p *config.Pipeline, res *Result, log *slog.Logger) (outputs, error) {
	zone, err := CheckedZone(ctx, conn, r.Config.Timezone)
	if err != nil {
		return nil, err
	}
	if !zone.Fast() {
		log.Warn("Go's and DuckDB's time zone databases disagree on this zone; converting every timestamp with ICU (slower)", "zone", r.Config.Timezone)
	}
	st := r.newScoring(conn, res, log, zone)
	stages := map[string]func(context.Context, *scoring) (outputs, error){
		"rfm": func(ctx context.Context, st *scoring) (outputs, error) {
			out, err := r.scoreRFM(ctx, st)
			return outputs{out}, err
		},
		"clv":       r.scoreCLV,
		"value":     r.scoreValue,
		"knowledge": r.scoreKnowledge,
	}
	var outs outputs
	for _, name := range config.Transforms {
		if !slices.Contains(p.Transforms, name) {
			continue
		}
		o, err := stages[name](ctx, st)
		if err != nil {
			outs.release()
			if bad := unscoreable(context.WithoutCancel(ctx), conn); bad != nil {
				err = bad // the cause, named, rather than the cast that tripped over it
			}
			return nil, fmt.Errorf("transform %s: %w", name, err)
		}
		outs = append(outs, o...)
	}
	return outs, nil
}

// unscoreable names the first stored value no score can use (nil when there is none): the
// table, the record's position and source, and the value. ckm's ingest refuses such values, but
// a warehouse written by other tools or earlier versions may hold some.
func unscoreable(ctx context.Context, conn *warehouse.Conn) error {
	type check struct{ table, column string }
	var checks []check
	var parts []string
	for _, t := range mapping.Tables {
		for _, c := range t.Columns {
			if cond := c.Unusable(); cond != "" {
				parts = append(parts, fmt.Sprintf("SELECT %d AS k, _position, _source, CAST(%s AS VARCHAR) AS v FROM %s WHERE %s",
					len(checks), c.Name, t.Name, cond))
				checks = append(checks, check{t.Name, c.Name})
			}
		}
	}
	var k int
	var position, source, value string
	err := conn.QueryRowContext(ctx, "SELECT k, _position, _source, v FROM ("+strings.Join(parts, " UNION ALL ")+") ORDER BY k, _position LIMIT 1").
		Scan(&k, &position, &source, &value)
	if err != nil {
		return nil
	}
	c := checks[k]
	return fmt.Errorf("%s.%s holds %s at %s (source %s), which no score can use: ckm does not load such values, so another tool or an "+
		"earlier version wrote it; delete that row, or correct and reload its source", c.table, c.column, value, position, source)
}

// newScoring starts a run's scoring state.
func (r *Runner) newScoring(conn *warehouse.Conn, res *Result, log *slog.Logger, zone Zone) *scoring {
	st := &scoring{conn: conn, res: res, log: log, zone: zone, mem: memory.DefaultAllocator}
	if r.Arrow != nil {
		st.mem, st.copy = r.Arrow, true
	}
	return st
}

// batches runs a query and keeps all its record batches; release them when done.
func (st *scoring) batches(ctx context.Context, query string, args ...any) ([]arrow.RecordBatch, func(), error) {
	reader, err := st.conn.ArrowQuery(ctx, query, args...)
	if err != nil {
		return nil, nil, err
	}
	defer reader.Release()
	var batches []arrow.RecordBatch
	release := func() {
		for _, b := range batches {
			b.Release()
		}
	}
	for reader.Next() {
		b := reader.RecordBatch()
		if st.copy {
			b = copyBatch(b, st.mem) // the reader keeps and releases its own
		} else {
			b.Retain()
		}
		batches = append(batches, b)
	}
	if err := reader.Err(); err != nil {
		release()
		return nil, nil, err
	}
	return batches, release, nil
}

// money is the type amounts are summed in. DuckDB adds doubles in whatever order its threads
// finish, so a double sum can differ in the last bit between runs (seen on a rerun: 283.73 vs
// 283.72999999999996) and move a customer across a score tie; decimal sums are exact, so a
// rerun gives identical results. Amounts are kept to 6 decimals.
const money = "DECIMAL(38,6)"

// RFMAggregateSQL is the per-customer aggregate RFM is scored from. Parameters: as_of (DATE),
// lookback days. Only completed orders count, with negative-amount returns netted into monetary;
// a purchase day is a day with a completed order, in the configured zone.
func RFMAggregateSQL(zone Zone) string {
	return `WITH params AS (SELECT CAST(?::DATE AS DATE) AS as_of, CAST(? AS INTEGER) AS lookback),
counted AS (
  SELECT o.customer_id, ` + zone.LocalDate("o.order_ts") + ` AS d, o.amount, o.status = 'completed' AS purchase, p.as_of
  FROM orders o, params p
  WHERE (o.status = 'completed' OR (o.status = 'returned' AND o.amount < 0))
    AND o.order_ts >= ` + zone.DayStart("p.as_of - p.lookback + 1") + `
    AND o.order_ts <  ` + zone.DayStart("p.as_of + 1") + `
)
SELECT customer_id,
       CAST(any_value(as_of) - max(d) FILTER (WHERE purchase) AS INTEGER) AS recency_days,
       CAST(count(DISTINCT d) FILTER (WHERE purchase) AS INTEGER) AS frequency,
       CAST(sum(CAST(amount AS ` + money + `)) AS DOUBLE) AS monetary
FROM counted
GROUP BY customer_id
HAVING count(*) FILTER (WHERE purchase) > 0`
}

func (r *Runner) scoreRFM(ctx context.Context, st *scoring) (output, error) {
	res := st.res
	done := r.step("score rfm")
	defer done()
	batches, release, err := st.batches(ctx, RFMAggregateSQL(st.zone), res.AsOf.Format(time.DateOnly), r.Config.Scoring.LookbackDays)
	if err != nil {
		return output{}, err
	}
	defer release()
	rec, err := rfm.Score(batches, r.Config.Scoring.RFM, st.mem)
	if err != nil {
		return output{}, err
	}
	res.Customers = rec.NumRows()
	// The summary outlives the batch: segment names are interned (copied once).
	seg := rec.Column(rec.Schema().FieldIndices("segment")[0]).(*array.String)
	for i := 0; i < seg.Len(); i++ {
		res.Segments[unique.Make(seg.Value(i)).Value()]++
	}
	return arrowOutput("customer_rfm", rec, `INSERT INTO customer_rfm
		(as_of, customer_id, run_id, recency_days, frequency, monetary, r_score, f_score, m_score, rfm_cell, segment)
		SELECT CAST(? AS DATE), customer_id, ?, recency_days, frequency, monetary, r_score, f_score, m_score, rfm_cell, segment FROM `+scored), nil
}

// copyBatch copies rec into mem.
func copyBatch(rec arrow.RecordBatch, mem memory.Allocator) arrow.RecordBatch {
	cols := make([]arrow.Array, rec.NumCols())
	for i, c := range rec.Columns() {
		var err error
		if cols[i], err = array.Concatenate([]arrow.Array{c}, mem); err != nil {
			panic(fmt.Sprintf("copy arrow column %s: %v", rec.ColumnName(i), err)) // only a failing allocator gets here
		}
		defer cols[i].Release()
	}
	return array.NewRecordBatch(rec.Schema(), cols, rec.NumRows())
}
