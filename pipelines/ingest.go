package pipelines

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/ckm-dev/ckm/connectors"
	"github.com/ckm-dev/ckm/connectors/mapping"
	"github.com/ckm-dev/ckm/warehouse"
)

// BadRatioError is returned when a batch has more unreadable records than the source allows.
type BadRatioError struct {
	Source, Label string
	Bad, Read     int64
	Max           float64
	FirstPosition string
	FirstReason   string
}

func (e *BadRatioError) Error() string {
	return fmt.Sprintf("at %s: %d of %d records so far (%.1f%%) could not be loaded, above max_bad_ratio %.1f%%; first at %s: %s",
		e.Label, e.Bad, e.Read, 100*float64(e.Bad)/float64(e.Read), 100*e.Max, e.FirstPosition, e.FirstReason)
}

// batchWriter maps each batch onto its canonical table and commits it, its dead letters
// and its checkpoint in one transaction: a batch is either wholly in or wholly out.
type batchWriter struct {
	conn        *warehouse.Conn
	source      string
	runID       string
	spec        mapping.Spec // for sources of columns
	jsonSpec    mapping.Spec // the same mapping, for sources of JSON documents
	maxBadRatio float64
	log         *slog.Logger
	total       connectors.BatchStats
}

func (w *batchWriter) Write(ctx context.Context, b connectors.Batch) (connectors.BatchStats, error) {
	var st connectors.BatchStats
	spec := w.spec
	if b.JSON {
		spec = w.jsonSpec
	}
	err := w.conn.Tx(ctx, func(ctx context.Context) error {
		st = connectors.BatchStats{}
		if _, err := w.conn.ExecContext(ctx, "CREATE OR REPLACE TEMP TABLE mapped AS "+spec.Compile(b.Relation, b.Position)); err != nil {
			return fmt.Errorf("read %s: %w", b.Label, err)
		}
		defer w.conn.ExecContext(context.WithoutCancel(ctx), "DROP TABLE IF EXISTS temp.mapped")
		if b.AfterScan != nil {
			n, err := b.AfterScan(ctx, w.conn, "mapped")
			if err != nil {
				return fmt.Errorf("read %s: %w", b.Label, err)
			}
			st.DeadLettered += n
			st.Read += n
		}
		var read, bad int64
		if err := w.conn.QueryRowContext(ctx, `SELECT count(*), count(_reason) FROM mapped`).Scan(&read, &bad); err != nil {
			return fmt.Errorf("count %s: %w", b.Label, err)
		}
		st.Read += read
		st.DeadLettered += bad
		// The ratio is the source's over the whole run; the batch that crosses it is rolled back.
		runRead, runBad := w.total.Read+st.Read, w.total.DeadLettered+st.DeadLettered
		if runRead > 0 && float64(runBad)/float64(runRead) > w.maxBadRatio {
			e := &BadRatioError{Source: w.source, Label: b.Label, Bad: runBad, Read: runRead, Max: w.maxBadRatio}
			_ = w.conn.QueryRowContext(ctx, `SELECT position, reason FROM (
				SELECT _position AS position, _reason AS reason, _ordinal AS o FROM mapped WHERE _reason IS NOT NULL
				UNION ALL SELECT position, reason, -1 FROM dead_letters WHERE run_id = ? AND source = ?)
				ORDER BY o, length(position), position LIMIT 1`,
				w.runID, w.source).Scan(&e.FirstPosition, &e.FirstReason)
			return e
		}
		if _, err := w.conn.ExecContext(ctx, `INSERT INTO dead_letters (run_id, source, position, reason, payload, received_at)
			SELECT ?, ?, _position, _reason, _payload, now() FROM mapped WHERE _reason IS NOT NULL`, w.runID, w.source); err != nil {
			return fmt.Errorf("dead-letter %s: %w", b.Label, err)
		}
		if b.ReplacePrefix != "" {
			if _, err := w.conn.ExecContext(ctx, fmt.Sprintf(`DELETE FROM %s WHERE _source = ? AND starts_with(_position, ?)`, spec.Table.Name),
				w.source, b.ReplacePrefix); err != nil {
				return fmt.Errorf("replace earlier rows of %s: %w", b.Label, err)
			}
		}
		loaded, err := w.merge(ctx, spec.Table)
		if err != nil {
			return fmt.Errorf("merge %s into %s: %w", b.Label, spec.Table.Name, err)
		}
		st.Loaded = loaded
		if b.Checkpoint != nil {
			if err := b.Checkpoint(ctx, w.conn, st); err != nil {
				return fmt.Errorf("checkpoint %s: %w", b.Label, err)
			}
		}
		return nil
	})
	if err != nil {
		return st, err
	}
	w.total.Read += st.Read
	w.total.Loaded += st.Loaded
	w.total.DeadLettered += st.DeadLettered
	w.log.Debug("batch committed", "source", w.source, "batch", b.Label, "read", st.Read, "loaded", st.Loaded, "dead_letters", st.DeadLettered)
	return st, nil
}

// merge moves the good rows of `mapped` into the canonical table, one row per key.
// Without a version column the newest record wins; with one, the latest version wins
// and a record older than the stored one is ignored.
func (w *batchWriter) merge(ctx context.Context, t mapping.Table) (int64, error) {
	key := t.Key
	order := "_ordinal DESC"
	if t.Version != "" {
		order = t.Version + " DESC NULLS LAST, _ordinal DESC"
	}
	cols := strings.Join(t.ColumnNames(), ", ")
	pick := fmt.Sprintf(`CREATE OR REPLACE TEMP TABLE merge_rows AS SELECT * FROM mapped WHERE _reason IS NULL
			QUALIFY row_number() OVER (PARTITION BY %s ORDER BY %s) = 1`, key, order)
	if w.spec.RollupLines {
		aggs := []string{key}
		for _, c := range t.Columns {
			switch {
			case c.Name == key:
			case c.Additive:
				aggs = append(aggs, fmt.Sprintf("sum(%[1]s) AS %[1]s", c.Name))
			default:
				aggs = append(aggs, fmt.Sprintf("arg_min(%[1]s, _ordinal) AS %[1]s", c.Name))
			}
		}
		pick = fmt.Sprintf(`CREATE OR REPLACE TEMP TABLE merge_rows AS SELECT %s, arg_min(_position, _ordinal) AS _position,
			min(_ordinal) AS _ordinal FROM mapped WHERE _reason IS NULL GROUP BY %s`, strings.Join(aggs, ", "), key)
	}
	stmts := []string{pick}
	if t.Version == "" {
		stmts = append(stmts, fmt.Sprintf(`DELETE FROM %s t USING merge_rows m WHERE t.%s = m.%s`, t.Name, key, key))
	} else {
		stmts = append(stmts, fmt.Sprintf(`DELETE FROM %[1]s t USING merge_rows m WHERE t.%[2]s = m.%[2]s
			AND (m.%[3]s >= t.%[3]s OR t.%[3]s IS NULL)`, t.Name, key, t.Version))
	}
	for _, s := range stmts {
		if _, err := w.conn.ExecContext(ctx, s); err != nil {
			return 0, err
		}
	}
	defer w.conn.ExecContext(context.WithoutCancel(ctx), "DROP TABLE IF EXISTS temp.merge_rows")
	newer := "" // without a version every key was just deleted, so every row goes in
	if t.Version != "" {
		newer = fmt.Sprintf("WHERE NOT EXISTS (SELECT 1 FROM %s t WHERE t.%s = m.%s)", t.Name, key, key)
	}
	res, err := w.conn.ExecContext(ctx, fmt.Sprintf(`INSERT INTO %s (%s, _source, _position, _loaded_at, _run_id)
		SELECT %s, ?, _position, now(), ? FROM merge_rows m %s`, t.Name, cols, cols, newer), w.source, w.runID)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}
