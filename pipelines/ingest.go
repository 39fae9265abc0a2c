package pipelines

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/ckm-dev/ckm/config"
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
	// The lookup files' join order and columns, read and checked once per run, not per batch.
	lookupOrder   []string
	lookupColumns map[string][]string
}

// NewSourceWriter returns the writer a run hands the connector of source: for driving a
// connector directly. Each Write maps, dead-letters, merges and checkpoints one batch.
func NewSourceWriter(conn *warehouse.Conn, cfg *config.Config, source, runID string, log *slog.Logger) connectors.Writer {
	return newBatchWriter(conn, cfg, source, runID, log)
}

func newBatchWriter(conn *warehouse.Conn, cfg *config.Config, source, runID string, log *slog.Logger) *batchWriter {
	return &batchWriter{conn: conn, source: source, runID: runID, log: log, maxBadRatio: cfg.BadRatio(cfg.Sources[source]),
		spec: cfg.MappingSpec(source, false), jsonSpec: cfg.MappingSpec(source, true)}
}

func (w *batchWriter) Write(ctx context.Context, b connectors.Batch) (connectors.BatchStats, error) {
	spec := w.spec
	if b.JSON {
		spec = w.jsonSpec
	}
	if b.Records == nil {
		return w.write(ctx, b, spec)
	}
	var st connectors.BatchStats
	err := w.conn.WithArrowView(b.Records, func(view string) error {
		var err error
		b.Relation = "(SELECT * FROM " + view + ")"
		st, err = w.write(ctx, b, spec)
		return err
	})
	return st, err
}

func (w *batchWriter) write(ctx context.Context, b connectors.Batch, spec mapping.Spec) (connectors.BatchStats, error) {
	var st connectors.BatchStats
	// Map before the transaction opens: `mapped` is a temp table, not durable state, and DuckDB
	// reads a temp table created inside the open transaction markedly slower (measured 1.7×).
	if _, err := w.conn.ExecContext(ctx, "SET TimeZone = "+warehouse.Quote(spec.SessionZone())); err != nil {
		return st, fmt.Errorf("set time zone %s: %w", spec.SessionZone(), err)
	}
	relation := b.Relation
	if len(spec.Lookups) > 0 {
		var err error
		if relation, err = w.withLookups(ctx, b, spec.Lookups); err != nil {
			return st, fmt.Errorf("read %s: %w", b.Label, err)
		}
	}
	fields, err := w.fields(ctx, relation)
	if err != nil {
		return st, fmt.Errorf("read %s: %w", b.Label, err)
	}
	if missing := spec.MissingFields(fields); len(missing) > 0 {
		return st, fmt.Errorf("%s: mapping refers to %s, which the source does not have (it has %s)",
			b.Label, strings.Join(missing, ", "), strings.Join(fields, ", "))
	}
	if _, err := w.exec(ctx, "map", "CREATE OR REPLACE TEMP TABLE mapped AS "+spec.Compile(relation, b.Position, fields)); err != nil {
		return st, fmt.Errorf("read %s: %w", b.Label, err)
	}
	defer w.conn.ExecContext(context.WithoutCancel(ctx), "DROP TABLE IF EXISTS temp.mapped")
	err = w.conn.Tx(ctx, func(ctx context.Context) error {
		st = connectors.BatchStats{}
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
		if _, err := w.exec(ctx, "dead-letter", `INSERT INTO dead_letters (run_id, source, position, reason, payload, received_at)
			SELECT ?, ?, _position, _reason, _payload, now() FROM mapped WHERE _reason IS NOT NULL`, w.runID, w.source); err != nil {
			return fmt.Errorf("dead-letter %s: %w", b.Label, err)
		}
		if b.ReplacePrefix != "" {
			if _, err := w.exec(ctx, "replace", fmt.Sprintf(`DELETE FROM %s WHERE _source = ? AND starts_with(_position, ?)`, spec.Table.Name),
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

// withLookups joins the source's lookup files onto a batch of tabular records. A lookup key
// that is not unique would double records, so it fails the batch, naming the key.
func (w *batchWriter) withLookups(ctx context.Context, b connectors.Batch, lookups map[string]mapping.Lookup) (string, error) {
	if b.JSON {
		return "", fmt.Errorf("lookups need tabular records (CSV, Parquet); these are JSON documents")
	}
	if w.lookupColumns == nil {
		if err := w.resolveLookups(ctx, lookups); err != nil {
			return "", err
		}
	}
	return mapping.WithLookups(b.Relation, lookups, w.lookupOrder, w.lookupColumns), nil
}

// resolveLookups orders the lookups and reads each file's columns, checking its key is unique.
func (w *batchWriter) resolveLookups(ctx context.Context, lookups map[string]mapping.Lookup) error {
	order, err := mapping.OrderLookups(lookups)
	if err != nil {
		return err
	}
	columns := map[string][]string{}
	for _, name := range order {
		l := lookups[name]
		if columns[name], err = w.fields(ctx, l.Relation()); err != nil {
			return fmt.Errorf("lookup %s: %w", name, err)
		}
		if !slices.Contains(columns[name], l.Key) {
			return fmt.Errorf("lookup %s: %s has no column %s (it has %s)", name, l.File, l.Key, strings.Join(columns[name], ", "))
		}
		var dup sql.NullString
		var n int64
		err := w.conn.QueryRowContext(ctx, fmt.Sprintf(`SELECT any_value(k), count(*) FROM (SELECT %[1]s AS k FROM %[2]s
			GROUP BY %[1]s HAVING count(*) > 1)`, warehouse.Ident(l.Key), l.Relation())).Scan(&dup, &n)
		if err != nil {
			return fmt.Errorf("lookup %s: %w", name, err)
		}
		if n > 0 {
			return fmt.Errorf("lookup %s: key %s is not unique in %s (%d keys repeat, e.g. %q)", name, l.Key, l.File, n, dup.String)
		}
	}
	w.lookupOrder, w.lookupColumns = order, columns
	return nil
}

// fields lists the source fields of a batch relation (all but _ordinal). For files DuckDB
// only sniffs the header to answer.
func (w *batchWriter) fields(ctx context.Context, relation string) ([]string, error) {
	rows, err := w.conn.QueryContext(ctx, "DESCRIBE SELECT * FROM "+relation)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var name, typ string
		var null, key, def, extra sql.NullString
		if err := rows.Scan(&name, &typ, &null, &key, &def, &extra); err != nil {
			return nil, err
		}
		if name != "_ordinal" {
			out = append(out, name)
		}
	}
	return out, rows.Err()
}

// exec runs one statement of a batch, logging its duration at debug level for tuning.
func (w *batchWriter) exec(ctx context.Context, step, query string, args ...any) (sql.Result, error) {
	start := time.Now()
	res, err := w.conn.ExecContext(ctx, query, args...)
	w.log.Debug("batch step", "step", step, "elapsed", time.Since(start).Round(time.Microsecond).String())
	return res, err
}

// merge moves the good rows of `mapped` into the canonical table, one row per key, and
// returns how many went in. Without a version column the newest record wins; with one, the
// latest version wins and a record older than the stored one is ignored.
func (w *batchWriter) merge(ctx context.Context, t mapping.Table) (int64, error) {
	key := t.Key
	cols := strings.Join(t.ColumnNames(), ", ")
	const plain = "(SELECT * FROM mapped WHERE _reason IS NULL)"
	rows := plain
	switch {
	case w.spec.RollupLines:
		rows = w.rollup(t)
	case t.Version != "":
		rows = fmt.Sprintf(`(SELECT * FROM mapped WHERE _reason IS NULL
			QUALIFY row_number() OVER (PARTITION BY %s ORDER BY %s DESC NULLS LAST, _ordinal DESC) = 1)`, key, t.Version)
	default:
		// Duplicates inside one batch are rare; counting keys is far cheaper than always ranking them.
		var dups int64
		if err := w.conn.QueryRowContext(ctx, fmt.Sprintf(`SELECT count(*) - count(DISTINCT %s) FROM mapped WHERE _reason IS NULL`, key)).Scan(&dups); err != nil {
			return 0, err
		}
		if dups > 0 {
			rows = fmt.Sprintf(`(SELECT * FROM mapped WHERE _reason IS NULL
				QUALIFY row_number() OVER (PARTITION BY %s ORDER BY _ordinal DESC) = 1)`, key)
		}
	}
	if rows != plain {
		// A ranked or rolled-up selection is read twice below: compute it once.
		if _, err := w.exec(ctx, "stage", "CREATE OR REPLACE TEMP TABLE merge_rows AS SELECT * FROM "+rows+" m"); err != nil {
			return 0, err
		}
		defer w.conn.ExecContext(context.WithoutCancel(ctx), "DROP TABLE IF EXISTS temp.merge_rows")
		rows = "merge_rows"
	}
	replace := fmt.Sprintf(`DELETE FROM %s t USING %s m WHERE t.%s = m.%s`, t.Name, rows, key, key)
	newer := "" // without a version every stored row with a batch key is replaced
	if t.Version != "" {
		replace += fmt.Sprintf(" AND (m.%[1]s >= t.%[1]s OR t.%[1]s IS NULL)", t.Version)
		newer = fmt.Sprintf("WHERE NOT EXISTS (SELECT 1 FROM %s t WHERE t.%s = m.%s)", t.Name, key, key)
	}
	if _, err := w.exec(ctx, "replace keys", replace); err != nil {
		return 0, err
	}
	// Lineage constants are inlined: DuckDB then stores them as constant segments, where a bound
	// parameter is materialised row by row.
	res, err := w.exec(ctx, "insert", fmt.Sprintf(`INSERT INTO %s (%s, _source, _position, _loaded_at, _run_id, _extra)
		SELECT %s, %s, _position, now(), %s, _extra FROM %s m %s`, t.Name, cols, cols, warehouse.Quote(w.source), warehouse.Quote(w.runID), rows, newer))
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// rollup sums the lines of one record: additive columns add up, the rest come from the first line.
func (w *batchWriter) rollup(t mapping.Table) string {
	aggs := []string{t.Key}
	for _, c := range t.Columns {
		switch {
		case c.Name == t.Key:
		case c.Additive:
			aggs = append(aggs, fmt.Sprintf("sum(%[1]s) AS %[1]s", c.Name))
		default:
			aggs = append(aggs, fmt.Sprintf("arg_min(%[1]s, _ordinal) AS %[1]s", c.Name))
		}
	}
	return fmt.Sprintf(`(SELECT %s, arg_min(_position, _ordinal) AS _position, min(_ordinal) AS _ordinal, arg_min(_extra, _ordinal) AS _extra
		FROM mapped WHERE _reason IS NULL GROUP BY %s)`, strings.Join(aggs, ", "), t.Key)
}
