package publish

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/jackc/pgx/v5"

	"github.com/ckm-dev/ckm/internal/pgconn"
	"github.com/ckm-dev/ckm/warehouse"
)

// PostgresOptions say where in PostgreSQL to publish.
type PostgresOptions struct {
	DSN    string // libpq keyword/value or URL form, TLS options included; never logged
	Schema string
	// CustomerColumns are the customers' columns BI tools may see (nil: DefaultCustomerColumns).
	CustomerColumns []string
	Log             *slog.Logger
}

// pgTable is an output table in PostgreSQL: its key, and the indexes BI filters use.
type pgTable struct {
	name    string
	key     []string   // primary key; nil: none (segment_transitions' values may be NULL)
	indexes [][]string // besides the key
}

// byAsOf: the table is partitioned by as_of, one partition per as_of published.
func (t pgTable) byAsOf() bool { return t.name != "customers" }

// pgTables are the tables published to PostgreSQL, each keeping every as_of in a partition of
// its own, so a filter on as_of reads only that partition. Keys lead with customer_id, which
// serves a customer's history; within a partition the other indexes need no as_of. customers
// holds the current customers (the columns BI may not see are NULL) for customer_scores.
var pgTables = []pgTable{
	{"customer_rfm", []string{"customer_id", "as_of"}, [][]string{{"segment"}}},
	{"customer_clv", []string{"customer_id", "as_of"}, nil},
	{"customer_value", []string{"customer_id", "as_of"}, [][]string{{"value_tier"}}},
	{"customer_knowledge", []string{"customer_id", "as_of"}, [][]string{{"is_key_source"}}},
	{"model_fits", []string{"as_of", "model", "parameter"}, nil},
	{"clv_holdout", []string{"as_of", "frequency"}, nil},
	{"customer_changes", []string{"customer_id", "dimension", "as_of"}, [][]string{{"dimension", "from_value", "to_value"}}},
	{"segment_transitions", nil, [][]string{{"dimension"}}},
	{"customers", []string{"customer_id"}, nil},
}

// publishedRuns is the table that says which run each as_of in PostgreSQL holds; it is written
// last in the swap, so a row there means its run's rows are all there.
const publishedRuns = "published_runs"

// PublishPostgres copies the run's partitions from DuckDB into temporary tables with COPY,
// streamed as Arrow batches (one batch in Go memory at a time), then swaps them into the
// output tables in one transaction: readers see the previous rows until it commits (MVCC, no
// lock a reader takes conflicts with it), and a failure or a kill before the commit leaves the
// previous state. Temporary tables die with the session, so a killed publish leaves nothing.
func PublishPostgres(ctx context.Context, conn *warehouse.Conn, opts PostgresOptions, run Run) (err error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.CustomerColumns == nil {
		opts.CustomerColumns = DefaultCustomerColumns
	}
	asOf := run.AsOf.Format(time.DateOnly)
	defer func() {
		if err != nil {
			err = fmt.Errorf("publish %s to PostgreSQL schema %s: %w", asOf, opts.Schema, err)
		}
	}()
	pg, err := pgconn.Connect(ctx, opts.DSN)
	if err != nil {
		return err
	}
	defer pg.Close(context.WithoutCancel(ctx))
	p := &publisher{conn: conn, opts: Options{CustomerColumns: opts.CustomerColumns}, run: run, asOf: asOf}
	w := &pgWriter{pg: pg, p: p, schema: opts.Schema}
	// One publisher per schema at a time (two warehouses may share one); the lock goes with
	// the session.
	if _, err := pg.Exec(ctx, `SELECT pg_advisory_lock(hashtext($1))`, "ckm publish "+opts.Schema); err != nil {
		return fmt.Errorf("wait for other publishers: %w", err)
	}
	// Index builds of a new as_of's partitions sort a million keys each: in memory, not on disk.
	if _, err := pg.Exec(ctx, `SET maintenance_work_mem = '512MB'`); err != nil {
		return err
	}
	start := time.Now()
	existing, err := w.ensureSchema(ctx)
	if err != nil {
		return err
	}
	staged, err := w.stage(ctx, existing)
	if err != nil {
		return err
	}
	copied := time.Since(start)
	if err := w.swap(ctx, staged); err != nil {
		return err
	}
	opts.Log.Debug("published to PostgreSQL", "schema", opts.Schema, "as_of", asOf, "copy", copied.Round(time.Millisecond).String(),
		"swap", (time.Since(start) - copied).Round(time.Millisecond).String())
	return nil
}

type pgWriter struct {
	pg      *pgx.Conn
	p       *publisher
	schema  string
	columns map[string][]pgColumn // each table's columns, as DuckDB has them
}

type pgColumn struct{ name, pgType string }

// ident is schema.name, quoted.
func (w *pgWriter) ident(name string) string { return pgx.Identifier{w.schema, name}.Sanitize() }

func quoteAll(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = pgx.Identifier{n}.Sanitize()
	}
	return strings.Join(q, ", ")
}

// source is the DuckDB query whose rows make a table's partition for asOf.
func (w *pgWriter) source(part Partition) string {
	if !pgTableNamed(part.Table).byAsOf() {
		return w.p.snapshotCustomers()
	}
	return "SELECT * FROM main." + part.Table + " WHERE as_of = " + warehouse.Quote(part.AsOf.Format(time.DateOnly)) + "::DATE"
}

// ensureSchema creates the schema, tables, indexes and views that are missing, and adds the
// columns a newer ckm has added to an output: DuckDB's columns are the contract.
func (w *pgWriter) ensureSchema(ctx context.Context) (existing map[string]bool, err error) {
	w.columns = map[string][]pgColumn{}
	if existing, err = w.existing(ctx); err != nil {
		return nil, err
	}
	var ddl []string
	// CREATE SCHEMA IF NOT EXISTS needs the right to create schemas even when the schema
	// exists, which a role given its schema by an administrator (README) does not have.
	var exists bool
	if err := w.pg.QueryRow(ctx, `SELECT to_regnamespace($1) IS NOT NULL`, pgx.Identifier{w.schema}.Sanitize()).Scan(&exists); err != nil {
		return nil, fmt.Errorf("look for the schema: %w", err)
	}
	if !exists {
		ddl = append(ddl, `CREATE SCHEMA IF NOT EXISTS `+pgx.Identifier{w.schema}.Sanitize())
	}
	for _, t := range pgTables {
		cols, err := w.duckColumns(ctx, t.name)
		if err != nil {
			return nil, err
		}
		w.columns[t.name] = cols
		defs := make([]string, len(cols))
		for i, c := range cols {
			defs[i] = pgx.Identifier{c.name}.Sanitize() + " " + c.pgType
		}
		// DDL only for what is missing: ALTER TABLE takes a lock that waits for every reader,
		// even when IF NOT EXISTS then finds the column there.
		switch {
		case !existing[t.name]:
			if t.key != nil {
				defs = append(defs, "PRIMARY KEY ("+quoteAll(t.key)+")")
			}
			partitioned := ""
			if t.byAsOf() {
				partitioned = " PARTITION BY LIST (as_of)"
			}
			ddl = append(ddl, fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (%s)%s`, w.ident(t.name), strings.Join(defs, ", "), partitioned))
		default:
			for i, c := range cols {
				if !existing[t.name+"."+c.name] {
					ddl = append(ddl, fmt.Sprintf(`ALTER TABLE %s ADD COLUMN IF NOT EXISTS %s`, w.ident(t.name), defs[i]))
				}
			}
		}
		for _, ix := range t.indexes {
			if name := indexName(t.name, ix); !existing[name] {
				ddl = append(ddl, fmt.Sprintf(`CREATE INDEX IF NOT EXISTS %s ON %s (%s)`, pgx.Identifier{name}.Sanitize(), w.ident(t.name), quoteAll(ix)))
			}
		}
	}
	if !existing[publishedRuns] {
		ddl = append(ddl, fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (as_of date PRIMARY KEY, run_id text NOT NULL, pipeline text NOT NULL,
			published_at timestamptz NOT NULL, rows jsonb NOT NULL)`, w.ident(publishedRuns)))
	}
	for _, q := range ddl {
		if _, err := w.pg.Exec(ctx, q); err != nil {
			return nil, fmt.Errorf("create the schema (%s): %w", firstWords(q), err)
		}
	}
	return existing, w.ensureViews(ctx, existing)
}

// existing names what the schema has: tables and indexes by name, columns as table.column.
func (w *pgWriter) existing(ctx context.Context) (map[string]bool, error) {
	rows, err := w.pg.Query(ctx, `SELECT relname FROM pg_class WHERE relnamespace = to_regnamespace($1)
		UNION ALL SELECT table_name || '.' || column_name FROM information_schema.columns WHERE table_schema = $2`,
		pgx.Identifier{w.schema}.Sanitize(), w.schema)
	if err != nil {
		return nil, fmt.Errorf("read the schema: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("read the schema: %w", err)
	}
	out := make(map[string]bool, len(names))
	for _, n := range names {
		out[n] = true
	}
	return out, nil
}

// ensureViews creates customer_scores, from the same definition as in DuckDB, and
// customer_scores_latest (the newest as_of published), when they are missing: replacing a view
// takes a lock that would wait for every BI query reading it.
func (w *pgWriter) ensureViews(ctx context.Context, existing map[string]bool) error {
	views, err := w.p.viewDefinitions(ctx)
	if err != nil {
		return err
	}
	scores, ok := views["customer_scores"]
	if !ok {
		return errors.New("DuckDB has no customer_scores view")
	}
	_, body, ok := strings.Cut(scores, " AS ")
	if !ok {
		return fmt.Errorf("read the customer_scores view: unexpected definition %q", firstWords(scores))
	}
	body = strings.TrimSuffix(strings.TrimSpace(body), ";")
	// The latest view filters each output before the joins, so only the newest as_of's
	// partitions are read (the join's merged as_of could not be pushed down).
	latest := body
	for _, t := range []string{"customer_clv", "customer_rfm", "customer_knowledge", "customer_value"} {
		from := " " + t + " AS "
		if !strings.Contains(latest, from) {
			return fmt.Errorf("read the customer_scores view: %s not found in %q", t, firstWords(body))
		}
		latest = strings.Replace(latest, from, " (SELECT * FROM "+t+" WHERE as_of = (SELECT max(as_of) FROM "+publishedRuns+")) AS ", 1)
	}
	want := map[string]string{"customer_scores": body, "customer_scores_latest": latest}
	for _, name := range []string{"customer_scores", "customer_scores_latest"} {
		if existing[name] {
			continue
		}
		// The view's unqualified names bind to the schema's tables, as in DuckDB.
		err := pgx.BeginFunc(ctx, w.pg, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SELECT set_config('search_path', $1, true)`, pgx.Identifier{w.schema}.Sanitize()); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `CREATE VIEW `+w.ident(name)+` AS `+want[name])
			return err
		})
		if err != nil {
			return fmt.Errorf("create view %s: %w", name, err)
		}
	}
	return nil
}

// duckColumns are table's columns in DuckDB (for customers: those of the published query),
// each with its PostgreSQL type.
func (w *pgWriter) duckColumns(ctx context.Context, table string) ([]pgColumn, error) {
	rows, err := w.p.conn.QueryContext(ctx, `SELECT column_name, column_type FROM (DESCRIBE `+w.source(Partition{Table: table})+`)`)
	if err != nil {
		return nil, fmt.Errorf("read the columns of %s: %w", table, err)
	}
	defer rows.Close()
	var cols []pgColumn
	for rows.Next() {
		var name, duck string
		if err := rows.Scan(&name, &duck); err != nil {
			return nil, err
		}
		pgType, ok := pgTypes[duck]
		if !ok {
			return nil, fmt.Errorf("%s.%s: DuckDB type %s has no PostgreSQL type here", table, name, duck)
		}
		cols = append(cols, pgColumn{name, pgType})
	}
	return cols, rows.Err()
}

// pgTypes maps the DuckDB types of the outputs onto PostgreSQL's.
var pgTypes = map[string]string{
	"VARCHAR": "text", "DOUBLE": "double precision", "FLOAT": "real", "BIGINT": "bigint", "INTEGER": "integer",
	"SMALLINT": "smallint", "TINYINT": "smallint", "UTINYINT": "smallint", "USMALLINT": "integer", "UINTEGER": "bigint",
	"BOOLEAN": "boolean", "DATE": "date", "TIMESTAMP": "timestamp", "TIMESTAMP WITH TIME ZONE": "timestamptz",
}

// stagedPartition is one partition's rows, copied and waiting to be swapped in.
type stagedPartition struct {
	Partition
	table  pgTable
	stage  pgx.Identifier
	rows   int64
	attach string // the partition's name once attached; "" when an existing one is replaced
}

// stagePrefix starts the name of every staging table in the schema.
const stagePrefix = "ckm_stage_"

// partitionName is the name of table's partition for asOf.
func partitionName(table string, asOf time.Time) string { return table + "_" + asOf.Format("20060102") }

// stage copies every partition of the run into its own table. A new as_of's partition gets its
// keys and indexes here, built in bulk, and is attached in the swap as it is; an as_of already
// published is replaced row by row in the swap instead (detaching a partition would take a
// lock that waits for every BI query). customers, replaced whole, waits in a temporary table.
func (w *pgWriter) stage(ctx context.Context, existing map[string]bool) ([]stagedPartition, error) {
	if err := w.dropLeftovers(ctx); err != nil {
		return nil, err
	}
	var staged []stagedPartition
	for _, part := range w.p.run.Partitions(pgTableNames()) {
		t := pgTableNamed(part.Table)
		s := stagedPartition{Partition: part, table: t, stage: pgx.Identifier{w.schema, stagePrefix + partitionName(t.name, part.AsOf)}}
		create := fmt.Sprintf(`CREATE TABLE %s (LIKE %s, CHECK (as_of = '%s'::date))`, s.stage.Sanitize(), w.ident(t.name), part.AsOf.Format(time.DateOnly))
		if !t.byAsOf() {
			s.stage = pgx.Identifier{stagePrefix + t.name}
			create = fmt.Sprintf(`CREATE TEMP TABLE %s (LIKE %s)`, s.stage.Sanitize(), w.ident(t.name))
		} else if name := partitionName(t.name, part.AsOf); !existing[name] {
			s.attach = name
		}
		if _, err := w.pg.Exec(ctx, create); err != nil {
			return nil, fmt.Errorf("stage %s: %w", part.Table, err)
		}
		n, err := w.copyPartition(ctx, s.stage, part, w.columns[t.name])
		if err != nil {
			return nil, fmt.Errorf("copy %s for %s: %w", part.Table, part.AsOf.Format(time.DateOnly), err)
		}
		s.rows = n
		if s.attach != "" {
			if err := w.indexLikeItsTable(ctx, s); err != nil {
				return nil, err
			}
		}
		staged = append(staged, s)
	}
	return staged, nil
}

// indexLikeItsTable builds the staged partition's key and indexes, those of its table: the
// attach then adopts them instead of building them under its lock.
func (w *pgWriter) indexLikeItsTable(ctx context.Context, s stagedPartition) error {
	var ddl []string // named for the partition the staged table becomes
	if s.table.key != nil {
		ddl = append(ddl, fmt.Sprintf(`ALTER TABLE %s ADD CONSTRAINT %s PRIMARY KEY (%s)`, s.stage.Sanitize(),
			pgx.Identifier{s.attach + "_pkey"}.Sanitize(), quoteAll(s.table.key)))
	}
	for _, ix := range s.table.indexes {
		ddl = append(ddl, fmt.Sprintf(`CREATE INDEX %s ON %s (%s)`, pgx.Identifier{indexName(s.attach, ix)}.Sanitize(), s.stage.Sanitize(), quoteAll(ix)))
	}
	for _, q := range ddl {
		if _, err := w.pg.Exec(ctx, q); err != nil {
			return fmt.Errorf("index %s for %s: %w", s.Table, s.AsOf.Format(time.DateOnly), err)
		}
	}
	return nil
}

// dropLeftovers drops the staging tables of a publish that was killed: publishers hold the
// schema's advisory lock, so none is another's in progress.
func (w *pgWriter) dropLeftovers(ctx context.Context) error {
	rows, err := w.pg.Query(ctx, `SELECT relname FROM pg_class WHERE relnamespace = to_regnamespace($1) AND relkind IN ('r', 'p')
		AND starts_with(relname, $2)`, pgx.Identifier{w.schema}.Sanitize(), stagePrefix)
	if err != nil {
		return fmt.Errorf("find leftover staging tables: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("find leftover staging tables: %w", err)
	}
	for _, n := range names {
		if _, err := w.pg.Exec(ctx, `DROP TABLE `+w.ident(n)); err != nil {
			return fmt.Errorf("drop leftover staging table %s: %w", n, err)
		}
	}
	return nil
}

func pgTableNamed(name string) pgTable {
	for _, t := range pgTables {
		if t.name == name {
			return t
		}
	}
	panic("no PostgreSQL table " + name)
}

// copyPartition streams a partition from DuckDB into a staging table with COPY.
func (w *pgWriter) copyPartition(ctx context.Context, stage pgx.Identifier, part Partition, cols []pgColumn) (int64, error) {
	names := make([]string, len(cols))
	for i, c := range cols {
		names[i] = c.name
	}
	rr, err := w.p.conn.ArrowQuery(ctx, w.source(part))
	if err != nil {
		return 0, err
	}
	defer rr.Release()
	src := &arrowRows{rr: rr, table: part.Table}
	n, err := w.pg.CopyFrom(ctx, stage, names, src)
	return n, errors.Join(err, src.err)
}

// swap puts each staged partition in place and records the run, in one transaction: a new
// as_of's partition is attached (a lock readers do not wait for), an existing one has its rows
// replaced; published_runs is written last.
func (w *pgWriter) swap(ctx context.Context, staged []stagedPartition) error {
	rows := map[time.Time]map[string]int64{} // as_of → table → rows
	err := pgx.BeginFunc(ctx, w.pg, func(tx pgx.Tx) error {
		for _, s := range staged {
			var stmts []string
			switch {
			case s.attach != "":
				stmts = []string{
					fmt.Sprintf(`ALTER TABLE %s ATTACH PARTITION %s FOR VALUES IN ('%s')`, w.ident(s.Table), s.stage.Sanitize(), s.AsOf.Format(time.DateOnly)),
					fmt.Sprintf(`ALTER TABLE %s RENAME TO %s`, s.stage.Sanitize(), pgx.Identifier{s.attach}.Sanitize()),
				}
			case s.table.byAsOf():
				stmts = []string{
					fmt.Sprintf(`DELETE FROM %s WHERE as_of = '%s'`, w.ident(s.Table), s.AsOf.Format(time.DateOnly)),
					fmt.Sprintf(`INSERT INTO %s SELECT * FROM %s%s`, w.ident(s.Table), s.stage.Sanitize(), orderBy(s.table.key)),
				}
			default:
				// Only the customers that changed, came or went: most are as they were.
				stmts = []string{
					fmt.Sprintf(`DELETE FROM %s c WHERE NOT EXISTS (SELECT FROM %s s WHERE s.customer_id = c.customer_id AND (s.*) IS NOT DISTINCT FROM (c.*))`,
						w.ident(s.Table), s.stage.Sanitize()),
					fmt.Sprintf(`INSERT INTO %s SELECT * FROM %s s WHERE NOT EXISTS (SELECT FROM %[1]s c WHERE c.customer_id = s.customer_id)`,
						w.ident(s.Table), s.stage.Sanitize()),
				}
			}
			for _, q := range stmts {
				if _, err := tx.Exec(ctx, q); err != nil {
					return fmt.Errorf("replace %s for %s: %w", s.Table, s.AsOf.Format(time.DateOnly), err)
				}
			}
			if rows[s.AsOf] == nil {
				rows[s.AsOf] = map[string]int64{}
			}
			rows[s.AsOf][s.Table] = s.rows
		}
		// The next as_of's changes were replaced too: its counts follow.
		for asOf, counts := range rows {
			if asOf.Equal(w.p.run.AsOf) {
				continue
			}
			b, err := json.Marshal(counts)
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `UPDATE `+w.ident(publishedRuns)+` SET rows = rows || $2 WHERE as_of = $1`, asOf, b); err != nil {
				return fmt.Errorf("record the published run: %w", err)
			}
		}
		counts, err := json.Marshal(rows[w.p.run.AsOf])
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO `+w.ident(publishedRuns)+` (as_of, run_id, pipeline, published_at, rows) VALUES ($1, $2, $3, now(), $4)
			ON CONFLICT (as_of) DO UPDATE SET run_id = excluded.run_id, pipeline = excluded.pipeline, published_at = excluded.published_at, rows = excluded.rows`,
			w.p.run.AsOf, w.p.run.RunID, w.p.run.Pipeline, counts)
		if err != nil {
			return fmt.Errorf("record the published run: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	// What was not attached has been copied out of its staging table; fresh statistics, so BI
	// queries on the new as_of are planned for its rows (autovacuum waits until a tenth of a
	// table changed, which one as_of of many never is). Neither takes a lock readers wait for.
	for _, s := range staged {
		q := `DROP TABLE ` + s.stage.Sanitize()
		if s.attach != "" {
			q = `ANALYZE ` + w.ident(s.attach)
		} else if !s.table.byAsOf() {
			q = `ANALYZE ` + w.ident(s.Table)
		}
		if _, err := w.pg.Exec(ctx, q); err != nil {
			return fmt.Errorf("after publishing %s: %w", s.Table, err)
		}
	}
	return nil
}

// indexName names table's index on columns.
func indexName(table string, columns []string) string {
	return table + "_" + strings.Join(columns, "_") + "_idx"
}

// orderBy sorts rows by key before they go in: index entries then arrive in order, each next
// to the last, instead of on one random page each.
func orderBy(key []string) string {
	if key == nil {
		return ""
	}
	return " ORDER BY " + quoteAll(key)
}

// firstWords shortens a statement for an error message.
func firstWords(q string) string {
	q = strings.Join(strings.Fields(q), " ")
	if len(q) > 60 {
		return q[:60] + "…"
	}
	return q
}

// arrowRows feeds COPY from a DuckDB query's Arrow batches. pgx encodes each row before it
// asks for the next, so values read from a batch are used while the batch lives; the reader
// keeps one batch at a time.
type arrowRows struct {
	rr     array.RecordReader
	table  string
	rec    arrow.RecordBatch
	row    int
	cells  []func(row int) (any, error)
	values []any
	err    error
}

func (a *arrowRows) Next() bool {
	for a.rec == nil || a.row+1 >= int(a.rec.NumRows()) {
		if !a.rr.Next() {
			a.err = a.rr.Err()
			return false
		}
		a.rec, a.row = a.rr.RecordBatch(), -1
		if a.err = a.bind(); a.err != nil {
			return false
		}
	}
	a.row++
	return true
}

func (a *arrowRows) Values() ([]any, error) {
	for i, cell := range a.cells {
		v, err := cell(a.row)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", a.rec.ColumnName(i), err)
		}
		a.values[i] = v
	}
	return a.values, nil
}

func (a *arrowRows) Err() error { return a.err }

// bind makes a reader for each column of the current batch.
func (a *arrowRows) bind() error {
	a.cells = a.cells[:0]
	a.values = make([]any, a.rec.NumCols())
	for i, col := range a.rec.Columns() {
		cell, err := cellReader(col)
		if err != nil {
			return fmt.Errorf("%s.%s: %w", a.table, a.rec.ColumnName(i), err)
		}
		a.cells = append(a.cells, func(row int) (any, error) {
			if col.IsNull(row) {
				return nil, nil
			}
			return cell(row)
		})
	}
	return nil
}

// cellReader reads one column's non-NULL values as the Go values pgx encodes.
func cellReader(col arrow.Array) (func(int) (any, error), error) {
	switch c := col.(type) {
	case *array.String:
		return func(i int) (any, error) { return pgText(c.Value(i)) }, nil
	case *array.LargeString:
		return func(i int) (any, error) { return pgText(c.Value(i)) }, nil
	case *array.StringView:
		return func(i int) (any, error) { return pgText(c.Value(i)) }, nil
	case *array.Float64:
		return func(i int) (any, error) { return c.Value(i), nil }, nil
	case *array.Float32:
		return func(i int) (any, error) { return c.Value(i), nil }, nil
	case *array.Int64:
		return func(i int) (any, error) { return c.Value(i), nil }, nil
	case *array.Int32:
		return func(i int) (any, error) { return int64(c.Value(i)), nil }, nil
	case *array.Int16:
		return func(i int) (any, error) { return int64(c.Value(i)), nil }, nil
	case *array.Int8:
		return func(i int) (any, error) { return int64(c.Value(i)), nil }, nil
	case *array.Uint8:
		return func(i int) (any, error) { return int64(c.Value(i)), nil }, nil
	case *array.Uint16:
		return func(i int) (any, error) { return int64(c.Value(i)), nil }, nil
	case *array.Uint32:
		return func(i int) (any, error) { return int64(c.Value(i)), nil }, nil
	case *array.Boolean:
		return func(i int) (any, error) { return c.Value(i), nil }, nil
	case *array.Date32:
		return func(i int) (any, error) { return c.Value(i).ToTime(), nil }, nil
	case *array.Timestamp:
		unit := c.DataType().(*arrow.TimestampType).Unit
		return func(i int) (any, error) { return c.Value(i).ToTime(unit), nil }, nil
	}
	return nil, fmt.Errorf("no PostgreSQL encoding for Arrow type %s", col.DataType())
}

// pgText refuses what PostgreSQL text cannot hold: a NUL byte (DuckDB's VARCHAR can).
func pgText(s string) (any, error) {
	if i := strings.IndexByte(s, 0); i >= 0 {
		return nil, fmt.Errorf("a NUL byte at offset %d of %q, which PostgreSQL text cannot hold", i, strings.ReplaceAll(s, "\x00", `\x00`))
	}
	return s, nil
}

// BareCopyPostgres is the reference the PostgreSQL publish is measured against: the same
// partitions' rows, rendered as CSV by DuckDB beforehand and held in memory, sent with a bare
// COPY FROM STDIN into tables of the same columns (no keys, no indexes, no swap), in schema.
// Only the COPYs are timed.
func BareCopyPostgres(ctx context.Context, conn *warehouse.Conn, dsn, schema, from string, run Run, scratchDir string) (time.Duration, error) {
	pg, err := pgconn.Connect(ctx, dsn)
	if err != nil {
		return 0, err
	}
	defer pg.Close(context.WithoutCancel(ctx))
	w := &pgWriter{pg: pg, p: &publisher{conn: conn, opts: Options{CustomerColumns: DefaultCustomerColumns}, run: run}, schema: schema}
	var took time.Duration
	for i, part := range run.Partitions(pgTableNames()) {
		path := fmt.Sprintf("%s/bare-copy-%d.csv", scratchDir, i)
		q := `COPY (` + w.source(part) + `) TO ` + warehouse.Quote(path) + ` (FORMAT csv, HEADER false)`
		if _, err := conn.ExecContext(ctx, q); err != nil {
			return 0, fmt.Errorf("bare copy: render %s: %w", part.Table, err)
		}
		data, err := os.ReadFile(path)
		os.Remove(path)
		if err != nil {
			return 0, err
		}
		target := pgx.Identifier{schema, "bare_" + part.Table}.Sanitize()
		if _, err := pg.Exec(ctx, fmt.Sprintf(`DROP TABLE IF EXISTS %s; CREATE TABLE %[1]s (LIKE %s)`, target, pgx.Identifier{from, part.Table}.Sanitize())); err != nil {
			return 0, fmt.Errorf("bare copy: %w", err)
		}
		start := time.Now()
		if _, err := pg.PgConn().CopyFrom(ctx, bytes.NewReader(data), `COPY `+target+` FROM STDIN (FORMAT csv)`); err != nil {
			return 0, fmt.Errorf("bare copy %s: %w", part.Table, err)
		}
		took += time.Since(start)
	}
	return took, nil
}

func pgTableNames() []string {
	names := make([]string, len(pgTables))
	for i, t := range pgTables {
		names[i] = t.name
	}
	return names
}
