package pipelines

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"strings"
	"time"
	"unique"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/ckm-dev/ckm/config"
	"github.com/ckm-dev/ckm/connectors/mapping"
	"github.com/ckm-dev/ckm/transforms/arrowutil"
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

// scored stands for the staged rows of an output in its INSERT statement.
const scored = "{scored}"

// stagingTable is the temp table an output's rows wait in until they are written (customer_clv:
// clv_scores), where later transforms of the run can join them.
func stagingTable(table string) string {
	return strings.TrimPrefix(table, "customer_") + "_scores"
}

// stager collects an output's rows in its staging table in DuckDB as they are computed: the Go
// side holds no output past the batch that computed it, and DuckDB keeps the rows within its
// memory_limit (spilling if it must) until the run writes them.
type stager struct {
	conn    *warehouse.Conn
	table   string // the output table
	temp    string // its staging table
	pending []arrow.RecordBatch
	rows    int64 // in pending
	flushAt int64
}

// stager creates the output's empty staging table with the columns of schema.
func (st *scoring) stager(ctx context.Context, table string, schema *arrow.Schema) (*stager, error) {
	s := &stager{conn: st.conn, table: table, temp: "temp." + stagingTable(table), flushAt: st.chunkRows}
	cols := make([]arrow.Array, schema.NumFields())
	for i, f := range schema.Fields() {
		cols[i] = array.MakeArrayOfNull(st.mem, f.Type, 0)
		defer cols[i].Release()
	}
	empty := array.NewRecordBatch(schema, cols, 0)
	defer empty.Release()
	err := st.conn.WithArrowView(empty, func(view string) error {
		_, err := st.conn.ExecContext(ctx, "CREATE OR REPLACE TEMP TABLE "+stagingTable(table)+" AS SELECT * FROM "+view)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("stage %s: %w", table, err)
	}
	return s, nil
}

// add appends rec's rows to the staging table, a chunk's worth at a time (one INSERT per
// DuckDB batch of 2,048 rows cost more than the scoring), and takes over rec.
func (s *stager) add(ctx context.Context, rec arrow.RecordBatch) error {
	s.pending = append(s.pending, rec)
	s.rows += rec.NumRows()
	if s.rows < s.flushAt {
		return nil
	}
	return s.flush(ctx)
}

// flush inserts the pending batches and releases them.
func (s *stager) flush(ctx context.Context) error {
	if len(s.pending) == 0 {
		return nil
	}
	defer func() {
		for _, rec := range s.pending {
			rec.Release()
		}
		s.pending, s.rows = nil, 0
	}()
	err := s.conn.WithArrowViews(s.pending, func(view string) error {
		_, err := s.conn.ExecContext(ctx, "INSERT INTO "+s.temp+" SELECT * FROM "+view)
		return err
	})
	if err != nil {
		return fmt.Errorf("stage %s: %w", s.table, err)
	}
	return nil
}

// release drops the staging table and what is pending.
func (s *stager) release() {
	for _, rec := range s.pending {
		rec.Release()
	}
	s.pending = nil
	s.conn.ExecContext(context.Background(), "DROP TABLE IF EXISTS "+s.temp)
}

// output stages what is pending and returns the output that writes the staged rows with
// insert, an INSERT … SELECT … FROM {scored} that binds (as_of, run_id), and drops the staging
// table when released.
func (s *stager) output(ctx context.Context, insert string) (output, error) {
	if err := s.flush(ctx); err != nil {
		s.release()
		return output{}, err
	}
	return output{table: s.table, release: s.release,
		write: func(ctx context.Context, conn *warehouse.Conn, res *Result) (int64, error) {
			r, err := conn.ExecContext(ctx, strings.ReplaceAll(insert, scored, s.temp), res.AsOf, res.RunID)
			if err != nil {
				return 0, err
			}
			return r.RowsAffected()
		}}, nil
}

// stageChunks stages table's rows, computed by score from the rows of the temp table from a
// chunk at a time (see chunks and stager), and returns the output that writes them with insert.
// score borrows its input batch and hands over the batch it returns.
func (st *scoring) stageChunks(ctx context.Context, table string, schema *arrow.Schema, from, columns string,
	score func(arrow.RecordBatch) (arrow.RecordBatch, error), insert string) (output, error) {
	staged, err := st.stager(ctx, table, schema)
	if err != nil {
		return output{}, err
	}
	err = st.chunks(ctx, from, columns, func(rec arrow.RecordBatch) error {
		out, err := score(rec)
		if err != nil {
			return err
		}
		return staged.add(ctx, out)
	})
	if err != nil {
		staged.release()
		return output{}, err
	}
	return staged.output(ctx, insert)
}

// DefaultChunkRows is how many customers cross into Go at a time (see chunks): enough that the
// per-chunk scans cost little, few enough that a chunk's batches stay far below a GB.
const DefaultChunkRows = 1 << 20

// chunks hands fn the rows of a temp table in rowid order, a chunk of batches at a time, so that
// a transform over every customer holds one chunk in Go, not every customer. fn borrows each
// batch: it is released after fn returns.
func (st *scoring) chunks(ctx context.Context, table, columns string, fn func(arrow.RecordBatch) error) error {
	n, err := st.rowCount(ctx, table)
	if err != nil {
		return err
	}
	for lo := int64(0); lo < int64(n); lo += st.chunkRows {
		// A plain scan keeps the table's order (DuckDB's preserve_insertion_order, on by default).
		batches, release, err := st.batches(ctx, "SELECT "+columns+" FROM temp."+table+" WHERE rowid >= ? AND rowid < ?", lo, lo+st.chunkRows)
		if err != nil {
			return fmt.Errorf("read %s: %w", table, err)
		}
		for _, b := range batches {
			if err = fn(b); err != nil {
				break
			}
		}
		release()
		if err != nil {
			return err
		}
	}
	return nil
}

// rowCount counts the rows of a temp table: what a transform keeps of every customer is
// allocated once at that size (growing it chunk by chunk moved every value several times).
func (st *scoring) rowCount(ctx context.Context, table string) (int, error) {
	var n int
	if err := st.conn.QueryRowContext(ctx, "SELECT count(*) FROM temp."+table).Scan(&n); err != nil {
		return 0, fmt.Errorf("count %s: %w", table, err)
	}
	return n, nil
}

// dropAfterRun drops the temp tables when the run's scoring ends.
func (st *scoring) dropAfterRun(tables ...string) { st.temps = append(st.temps, tables...) }

// drop drops temp tables now: what no later stage reads leaves DuckDB's memory for the stages
// still to come.
func (st *scoring) drop(ctx context.Context, tables ...string) {
	for _, t := range tables {
		st.conn.ExecContext(context.WithoutCancel(ctx), "DROP TABLE IF EXISTS temp."+t)
	}
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
	clv  *clvState // every customer's CLV values, until value has read them
	// clvStaged and valueStaged say the CLV and value rows wait in clv_scores and value_scores
	// for knowledge to join.
	clvStaged, valueStaged bool
	zone                   Zone     // calendar days
	temps                  []string // temp tables the run's scoring drops when it ends
	chunkRows              int64
	// summarized says the temp table customer_summary is there, over the whole history when
	// wholeHistory (the run scores CLV), else over the lookback window.
	summarized, wholeHistory bool
	lastSummaryReader        string // the transform after which no stage reads the summary
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
	st := r.newScoring(conn, res, log, zone, p.Transforms)
	defer func() { st.drop(ctx, st.temps...) }()
	stages := map[string]func(context.Context, *scoring) (outputs, error){
		"rfm": func(ctx context.Context, st *scoring) (outputs, error) {
			out, err := r.scoreRFM(ctx, st)
			return outputs{out}, err
		},
		"clv":       r.scoreCLV,
		"value":     r.scoreValue,
		"knowledge": r.scoreKnowledge,
	}
	// Loading left its last batches in Go's heap (a JSON Lines batch is hundreds of MB), garbage
	// by now: hand it back before the first stage grows DuckDB to its limit. A whole run held it
	// through the shared pass: 1M customers with memory_limit 1GB peaked there at 2.18 GB,
	// against 1.11 GB when scoring the same warehouse in a fresh process.
	debug.FreeOSMemory()
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
		// Only value reads every customer's CLV and P(alive): once it ran, or when it does not
		// run, they are garbage (at 10M customers, 160 MB through the knowledge stage).
		if name == "value" || !slices.Contains(p.Transforms, "value") {
			st.clv = nil
		}
		// What the stage held in Go (ranks and percentiles over every customer) is garbage now:
		// hand it back before DuckDB grows into the next stage, so that Go's peak and DuckDB's do
		// not add up (at 10M customers writing the outputs reached memory_limit + 2.4 GB).
		debug.FreeOSMemory()
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

// newScoring starts the scoring state of a run of transforms.
func (r *Runner) newScoring(conn *warehouse.Conn, res *Result, log *slog.Logger, zone Zone, transforms []string) *scoring {
	st := &scoring{conn: conn, res: res, log: log, zone: zone, mem: memory.DefaultAllocator, chunkRows: int64(cmp.Or(r.ChunkRows, DefaultChunkRows)),
		wholeHistory: slices.Contains(transforms, "clv")}
	for _, t := range summaryReaders {
		if slices.Contains(transforms, t) {
			st.lastSummaryReader = t
		}
	}
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

func (r *Runner) scoreRFM(ctx context.Context, st *scoring) (output, error) {
	res := st.res
	done := r.step("score rfm")
	defer done()
	if err := r.summarizeCustomers(ctx, st); err != nil {
		return output{}, err
	}
	// RFM scores the customers with a purchase day in the lookback window.
	const inputs = "rfm_inputs"
	defer st.drop(ctx, inputs)
	if _, err := st.conn.ExecContext(ctx, "CREATE OR REPLACE TEMP TABLE "+inputs+" AS SELECT customer_id, recency_days, frequency, monetary FROM "+
		customerSummary+" WHERE frequency > 0"); err != nil {
		return output{}, fmt.Errorf("rfm inputs: %w", err)
	}
	st.doneWithSummary(ctx, "rfm")
	// Ranks need every customer's three values; the customers themselves cross a chunk at a time.
	n, err := st.rowCount(ctx, inputs)
	if err != nil {
		return output{}, err
	}
	recency, frequency, monetary := make([]int64, 0, n), make([]int64, 0, n), make([]float64, 0, n)
	err = st.chunks(ctx, inputs, "recency_days, frequency, monetary", func(rec arrow.RecordBatch) error {
		var err error
		if recency, err = arrowutil.Int64s(recency, rec, "recency_days"); err != nil {
			return err
		}
		if frequency, err = arrowutil.Int64s(frequency, rec, "frequency"); err != nil {
			return err
		}
		monetary, err = arrowutil.Float64s(monetary, rec, "monetary")
		return err
	})
	if err != nil {
		return output{}, err
	}
	scores := rfm.ScoreDimensions(recency, frequency, monetary, r.Config.Scoring.RFM.Bins)
	scorer, err := rfm.NewScorer(r.Config.Scoring.RFM)
	if err != nil {
		return output{}, err
	}
	row := 0
	out, err := st.stageChunks(ctx, "customer_rfm", rfm.OutputSchema, inputs, "customer_id, recency_days, frequency, monetary",
		func(rec arrow.RecordBatch) (arrow.RecordBatch, error) {
			n := int(rec.NumRows())
			out, err := scorer.Score(rec, scores.Slice(row, row+n), st.mem)
			if err != nil {
				return nil, err
			}
			row += n
			// The summary outlives the batch: segment names are interned (copied once).
			seg := out.Column(out.Schema().FieldIndices("segment")[0]).(*array.String)
			for i := 0; i < seg.Len(); i++ {
				res.Segments[unique.Make(seg.Value(i)).Value()]++
			}
			return out, nil
		}, `INSERT INTO customer_rfm
		(as_of, customer_id, run_id, recency_days, frequency, monetary, r_score, f_score, m_score, rfm_cell, segment)
		SELECT CAST(? AS DATE), customer_id, ?, recency_days, frequency, monetary, r_score, f_score, m_score, rfm_cell, segment FROM `+scored)
	res.Customers = int64(row)
	return out, err
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
