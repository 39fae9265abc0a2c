// Package warehouse owns the embedded DuckDB file: opening it with safe settings,
// migrating its schema, and the single writer connection that runs every transaction.
package warehouse

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	duckdb "github.com/duckdb/duckdb-go/v2"
	"github.com/google/uuid"
)

// Options configure how the warehouse file is opened.
type Options struct {
	Path        string // DuckDB file; its directory also holds extensions and temp files
	MemoryLimit string // DuckDB memory_limit, e.g. "4GB"; empty keeps DuckDB's default
	Threads     int    // 0 keeps DuckDB's default (all cores)
	// TempDirectory is where DuckDB spills what does not fit in MemoryLimit; empty: .duckdb_tmp
	// next to Path.
	TempDirectory string
	ReadOnly      bool
	// Sandbox shuts DuckDB's doors to everything but the warehouse (no files read or written,
	// no other databases attached, no settings changed), for queries users type (`ckm sql`).
	Sandbox bool
	// LockWait is how long Open keeps trying while another process holds the file (DuckDB lets
	// one process write, and a writer also keeps readers of other processes out). 0: fail at once.
	LockWait time.Duration
	// Waiting, when set, is told at once and then every waitNotice while Open waits for the
	// process that holds the file, and how long it has waited.
	Waiting func(h Holder, waited time.Duration)
}

// waitNotice is how often Options.Waiting hears that Open still waits.
const waitNotice = 15 * time.Second

// Warehouse is an open DuckDB database.
type Warehouse struct {
	db      *sql.DB
	path    string
	tempDir string // where DuckDB spills
}

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Open opens (creating if needed) the DuckDB file and, unless read-only, applies pending migrations.
func Open(ctx context.Context, opts Options) (*Warehouse, error) {
	if opts.Path == "" {
		return nil, errors.New("open warehouse: no path configured")
	}
	dir := filepath.Dir(opts.Path)
	if !opts.ReadOnly {
		// The warehouse keeps raw records (dead_letters): only its user may read it.
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("open warehouse %s: %w", opts.Path, err)
		}
	} else if _, err := os.Stat(opts.Path); err != nil {
		return nil, fmt.Errorf("open warehouse %s read-only: %w (run `ckm run` first)", opts.Path, err)
	}
	dsn, err := dsnFor(opts)
	if err != nil {
		return nil, err
	}
	connector, err := connect(ctx, dsn, opts)
	var inUse *InUseError
	if errors.As(err, &inUse) {
		return nil, err // says itself which warehouse
	}
	if err != nil {
		return nil, fmt.Errorf("open warehouse %s: %w", opts.Path, err)
	}
	db := sql.OpenDB(connector)
	w := &Warehouse{db: db, path: opts.Path, tempDir: tempDirectory(opts)}
	if opts.Sandbox {
		// Set once the database is open, on the whole instance: the DSN's settings apply in no
		// fixed order, and a locked configuration refuses the ones that come after it.
		if _, err := db.ExecContext(ctx, `SET GLOBAL enable_external_access = false; SET GLOBAL lock_configuration = true`); err != nil {
			db.Close()
			return nil, fmt.Errorf("open warehouse %s: sandbox: %w", opts.Path, err)
		}
	}
	if !opts.ReadOnly {
		if err := errors.Join(os.Chmod(opts.Path, 0o600), writeHolder(opts.Path)); err != nil {
			db.Close()
			return nil, fmt.Errorf("open warehouse %s: %w", opts.Path, err)
		}
		err := w.migrate(ctx)
		if err == nil {
			err = w.dropStaleArrowViews(ctx)
		}
		if err != nil {
			db.Close()
			return nil, err
		}
	}
	return w, nil
}

// OpenScratch opens an empty in-memory DuckDB with the warehouse's safe settings, for work that
// needs DuckDB but not the warehouse (sniffing files while another process writes it).
func OpenScratch(ctx context.Context) (*Warehouse, error) {
	dir := filepath.Join(os.TempDir(), "ckm-scratch")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open scratch DuckDB: %w", err)
	}
	c, err := duckdb.NewConnector("?"+offline(dir).Encode(), nil)
	if err != nil {
		return nil, fmt.Errorf("open scratch DuckDB: %w", err)
	}
	return &Warehouse{db: sql.OpenDB(c), path: ":memory:"}, nil
}

// ErrInUse reports that another process holds the warehouse file.
var ErrInUse = errors.New("another process holds the warehouse")

// connect opens the database, retrying with backoff for up to opts.LockWait while another
// process holds it, and telling opts.Waiting who that is.
func connect(ctx context.Context, dsn string, opts Options) (*duckdb.Connector, error) {
	start := time.Now()
	deadline := start.Add(opts.LockWait)
	delay := 50 * time.Millisecond
	var told time.Time
	for {
		c, err := duckdb.NewConnector(dsn, nil)
		if err == nil {
			return c, nil
		}
		if !strings.Contains(err.Error(), "Could not set lock on file") {
			return nil, err
		}
		holder := holderOf(opts.Path, err)
		if time.Now().Add(delay).After(deadline) {
			return nil, &InUseError{Path: opts.Path, Holder: holder, Waited: opts.LockWait}
		}
		if opts.Waiting != nil && time.Since(told) >= waitNotice {
			opts.Waiting(holder, time.Since(start))
			told = time.Now()
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (%w)", &InUseError{Path: opts.Path, Holder: holder, Waited: time.Since(start)}, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(2*delay, 2*time.Second)
	}
}

// offline are the DuckDB settings every database ckm opens has: extension autoloading off and
// the extension directory under dir, so nothing is fetched from the network or written to $HOME.
func offline(dir string) url.Values {
	q := url.Values{}
	q.Set("autoload_known_extensions", "false")
	q.Set("autoinstall_known_extensions", "false")
	q.Set("extension_directory", filepath.Join(dir, ".duckdb_extensions"))
	return q
}

// dsnFor turns options into a DuckDB DSN, offline, with its spill files next to the warehouse.
func dsnFor(opts Options) (string, error) {
	abs, err := filepath.Abs(opts.Path)
	if err != nil {
		return "", fmt.Errorf("warehouse path %s: %w", opts.Path, err)
	}
	dir := filepath.Dir(abs)
	q := offline(dir)
	q.Set("temp_directory", tempDirectory(opts))
	// At the default 16 MB every ingest batch's commit also checkpointed the file (measured:
	// 60% of a 100k-message commit). The WAL is still written at each commit, so a crash
	// loses nothing; only its replay after one is longer.
	q.Set("checkpoint_threshold", "256MB")
	// DuckDB's default, set so nothing turns it off: a table created from a scan keeps the
	// scan's order, which numbers ingested records (rowid) and hands customers over in chunks.
	q.Set("preserve_insertion_order", "true")
	// memory_limit bounds DuckDB's buffer pool, not what its allocator keeps of freed memory:
	// background purging returned it in a 10M-customer rescoring (peak RSS 9.44 → 9.14 GB, with
	// memory_limit 8GB; the knowledge stage 9.44 → 8.74 GB sampled).
	q.Set("allocator_background_threads", "true")
	// A bulk free larger than this (a dropped temp table, a finished hash table) hands the
	// allocator's cached pages back to the system; at DuckDB's default 512 MiB they stayed
	// cached: loading 10M customers with memory_limit 8GB peaked at 9.11–9.14 GB, against 8.24 GB
	// at 128 MiB and 8.06 GB at 16 MiB. At 16 MiB a CSV reader's buffers freed mid-query hand
	// them back too, and the next pages fault in again: mapping a 128 MiB piece of orders took
	// 2.8–3.0 s against 2.0–2.3 s at 64 MiB (the same query alternated, 2026-11-28); a whole
	// 10M run still peaked within memory_limit + 1 GB (8.67 GB).
	q.Set("allocator_bulk_deallocation_flush_threshold", "64MB")
	// A checkpoint merges a table's partly filled row groups, and every row group after one
	// moves: at DuckDB's default of 100 merge tasks, the checkpoint after loading the 1M bench's
	// orders in 26 batches rewrote the whole table (15 s, peak RSS 0.8 → 3.4 GB). A few tasks per
	// checkpoint still compact what deletes leave, a little each time.
	q.Set("max_vacuum_tasks", "4")
	if opts.MemoryLimit != "" {
		q.Set("memory_limit", opts.MemoryLimit)
	}
	if opts.Threads > 0 {
		q.Set("threads", strconv.Itoa(opts.Threads))
	}
	if opts.ReadOnly {
		q.Set("access_mode", "read_only")
	}
	return abs + "?" + q.Encode(), nil
}

// Path is the DuckDB file.
func (w *Warehouse) Path() string { return w.path }

// DB is the connection pool, for read queries.
func (w *Warehouse) DB() *sql.DB { return w.db }

// Close closes the database and checkpoints its WAL.
func (w *Warehouse) Close() error {
	err := w.db.Close()
	removeHolder(w.path)
	return err
}

// Conn reserves one connection: temp tables, registered Arrow views and explicit
// transactions all live on a single connection, so every write goes through one.
func (w *Warehouse) Conn(ctx context.Context) (*Conn, error) {
	c, err := w.db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("warehouse connection: %w", err)
	}
	return &Conn{Conn: c}, nil
}

// Conn is one DuckDB connection with explicit transactions and Arrow access.
type Conn struct {
	*sql.Conn
}

// ExecContext runs one statement. DuckDB reports a statement it stopped because ctx ended as
// "INTERRUPT Error"; the error then also wraps ctx's, so callers tell a stop from a failure.
func (c *Conn) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	res, err := c.Conn.ExecContext(ctx, query, args...)
	return res, Stopped(ctx, err)
}

// QueryContext runs a query; see ExecContext for how a stop is reported.
func (c *Conn) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	rows, err := c.Conn.QueryContext(ctx, query, args...)
	return rows, Stopped(ctx, err)
}

// Stopped returns err, wrapping ctx's error too when ctx has ended, so that a statement DuckDB
// interrupted ("INTERRUPT Error") reads as the stop it is. ExecContext and QueryContext do this
// themselves; QueryRowContext's error comes from Scan, and its callers do it.
func Stopped(ctx context.Context, err error) error {
	if err == nil || ctx.Err() == nil || errors.Is(err, ctx.Err()) {
		return err
	}
	return fmt.Errorf("%w (%w)", err, ctx.Err())
}

// Tx runs fn inside BEGIN … COMMIT, rolling back when fn fails or ctx ends.
// DuckDB's WAL makes the commit all-or-nothing even if the process dies mid-way.
func (c *Conn) Tx(ctx context.Context, fn func(ctx context.Context) error) (err error) {
	if _, err := c.ExecContext(ctx, "BEGIN TRANSACTION"); err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	defer func() {
		if err != nil {
			// The context may already be cancelled; the rollback must still run. A commit that
			// failed has rolled back already: DuckDB answers that no transaction is active.
			if _, rbErr := c.ExecContext(context.WithoutCancel(ctx), "ROLLBACK"); rbErr != nil && !strings.Contains(rbErr.Error(), "no transaction is active") {
				err = errors.Join(err, fmt.Errorf("rollback: %w", rbErr))
			}
		}
	}()
	if err = fn(ctx); err != nil {
		return err
	}
	// Once fn has succeeded the commit runs to the end even if ctx ends meanwhile, so the caller
	// learns truthfully whether the transaction landed.
	if _, err = c.ExecContext(context.WithoutCancel(ctx), "COMMIT"); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// ArrowQuery runs a query and streams its result as Arrow record batches.
// The caller must Release the reader.
func (c *Conn) ArrowQuery(ctx context.Context, query string, args ...any) (array.RecordReader, error) {
	var rr array.RecordReader
	err := c.Raw(func(dc any) error {
		a, err := duckdb.NewArrowFromConn(dc.(driver.Conn))
		if err != nil {
			return err
		}
		rr, err = a.QueryContext(ctx, query, args...)
		return Stopped(ctx, err)
	})
	if err != nil {
		return nil, fmt.Errorf("arrow query: %w", err)
	}
	return rr, nil
}

// RegisterArrow exposes record batches to SQL as a view called name on this connection.
// release must be called once the view has been consumed.
func (c *Conn) RegisterArrow(reader array.RecordReader, name string) (release func(), err error) {
	err = c.Raw(func(dc any) error {
		a, err := duckdb.NewArrowFromConn(dc.(driver.Conn))
		if err != nil {
			return err
		}
		release, err = a.RegisterView(reader, name)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("register arrow view %s: %w", name, err)
	}
	return release, nil
}

// WithArrowView exposes rec to SQL as a view while fn runs; fn gets the view's name, unique to
// this call (DuckDB's Arrow views are visible across connections, so a fixed name would let
// two concurrent writers read each other's rows). A query must read every column in schema
// order, or run through ExecReadingArrowView: DuckDB pushes a column projection into the
// exported stream, which cannot project, and then reads the wrong columns (seen: a crash
// reading doubles as strings; duckdb/duckdb-go#24).
func (c *Conn) WithArrowView(rec arrow.RecordBatch, fn func(view string) error) error {
	return c.WithArrowViews([]arrow.RecordBatch{rec}, fn)
}

// WithArrowViews is WithArrowView over several batches of one schema, read as one relation in order.
func (c *Conn) WithArrowViews(recs []arrow.RecordBatch, fn func(view string) error) error {
	if len(recs) == 0 {
		return errors.New("arrow view: no batch")
	}
	var rows int64
	for _, rec := range recs {
		rows += rec.NumRows()
	}
	// DuckDB's threads share the scan a slice at a time; one big batch is read by one thread.
	// Slices are a row group (122,880 rows) at most and an eighth of the rows at least, so a
	// small batch is shared too, in multiples of DuckDB's 2,048-row vectors.
	chunk := min(122_880, max(2048, (rows/8+2047)/2048*2048))
	var chunks []arrow.RecordBatch
	for _, rec := range recs {
		for lo := int64(0); lo < rec.NumRows() || (lo == 0 && rows == 0); lo += chunk {
			c := rec.NewSlice(lo, min(lo+chunk, rec.NumRows()))
			defer c.Release()
			chunks = append(chunks, c)
		}
	}
	reader, err := array.NewRecordReader(recs[0].Schema(), chunks)
	if err != nil {
		return err
	}
	defer reader.Release()
	view := arrowViewPrefix + strings.ReplaceAll(uuid.NewString(), "-", "")
	release, err := c.RegisterArrow(reader, view)
	if err != nil {
		return err
	}
	defer release()
	if err := fn(view); err != nil {
		_ = c.dropView(view) // inside a failed transaction this fails, and the rollback removes the view
		return err
	}
	return c.dropView(view)
}

// Column is one column of a query's result: its name and DuckDB type.
type Column struct{ Name, Type string }

// Describe returns the columns query (a SELECT) returns, without running it.
func Describe(ctx context.Context, db interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}, query string) ([]Column, error) {
	rows, err := db.QueryContext(ctx, "SELECT column_name, column_type FROM (DESCRIBE "+query+")")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var cols []Column
	for rows.Next() {
		var c Column
		if err := rows.Scan(&c.Name, &c.Type); err != nil {
			return nil, err
		}
		cols = append(cols, c)
	}
	return cols, rows.Err()
}

// ExecReadingArrowView runs a statement that reads only some columns of a WithArrowView view.
// Column pruning is off while it runs, so the view's stream is read whole and in order.
func (c *Conn) ExecReadingArrowView(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if _, err := c.ExecContext(ctx, "SET disabled_optimizers = 'unused_columns'"); err != nil {
		return nil, err
	}
	defer c.ExecContext(context.WithoutCancel(ctx), "RESET disabled_optimizers")
	return c.ExecContext(ctx, query, args...)
}

// arrowViewPrefix names the views WithArrowView registers.
const arrowViewPrefix = "arrow_"

// dropView removes a registered Arrow view: DuckDB's arrow scan creates an ordinary view in the
// catalog, which would otherwise outlive the stream it reads and be saved with the file.
func (c *Conn) dropView(view string) error {
	if _, err := c.ExecContext(context.Background(), "DROP VIEW IF EXISTS "+Ident(view)); err != nil {
		return fmt.Errorf("drop arrow view %s: %w", view, err)
	}
	return nil
}

// dropStaleArrowViews removes Arrow views left in the catalog by a process that died while one
// was registered (or by versions before views were dropped); their streams are gone.
func (w *Warehouse) dropStaleArrowViews(ctx context.Context) error {
	conn, err := w.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	rows, err := conn.QueryContext(ctx, `SELECT view_name FROM duckdb_views()
		WHERE database_name = current_database() AND schema_name = 'main' AND view_name LIKE ? AND coalesce(sql, '') = ''`, arrowViewPrefix+"%")
	if err != nil {
		return fmt.Errorf("list stale arrow views: %w", err)
	}
	var stale []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			rows.Close()
			return err
		}
		stale = append(stale, v)
	}
	rows.Close()
	for _, v := range stale {
		if err := conn.dropView(v); err != nil {
			return err
		}
	}
	return rows.Err()
}

// migrate applies, in order, each migrations/NNN_name.sql not yet recorded in schema_migrations,
// each in its own transaction.
func (w *Warehouse) migrate(ctx context.Context) error {
	conn, err := w.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("migrate %s: %w", w.path, err)
	}
	var current int
	if err := conn.QueryRowContext(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&current); err != nil {
		return fmt.Errorf("migrate %s: read version: %w", w.path, err)
	}
	migrations, err := loadMigrations()
	if err != nil {
		return err
	}
	for _, m := range migrations {
		if m.version <= current {
			continue
		}
		err := conn.Tx(ctx, func(ctx context.Context) error {
			if _, err := conn.ExecContext(ctx, m.sql); err != nil {
				return err
			}
			_, err := conn.ExecContext(ctx, `INSERT INTO schema_migrations (version, name) VALUES (?, ?)`, m.version, m.name)
			return err
		})
		if err != nil {
			return fmt.Errorf("migrate %s to version %d (%s): %w", w.path, m.version, m.name, err)
		}
	}
	return nil
}

type migration struct {
	version int
	name    string
	sql     string
}

func loadMigrations() ([]migration, error) {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		return nil, fmt.Errorf("read migrations: %w", err)
	}
	var out []migration
	for _, e := range entries {
		num, name, ok := strings.Cut(strings.TrimSuffix(e.Name(), ".sql"), "_")
		version, err := strconv.Atoi(num)
		if !ok || err != nil {
			return nil, fmt.Errorf("migration file %s: want NNN_name.sql", e.Name())
		}
		body, err := migrationFiles.ReadFile("migrations/" + e.Name())
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", e.Name(), err)
		}
		out = append(out, migration{version: version, name: name, sql: string(body)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	return out, nil
}

// sqlText makes s safe inside an SQL text: DuckDB's parser ends a statement at a NUL byte, so a
// NUL (which untrusted names, such as a file's header, may hold) becomes ␀.
var sqlText = strings.NewReplacer("\x00", "\u2400")

// Quote quotes an SQL string literal.
func Quote(s string) string { return "'" + strings.ReplaceAll(sqlText.Replace(s), "'", "''") + "'" }

// Ident quotes an SQL identifier.
func Ident(s string) string { return `"` + strings.ReplaceAll(sqlText.Replace(s), `"`, `""`) + `"` }

// CastFailed reports whether err is DuckDB refusing to convert a value, such as a number too
// large for the decimal type it was cast to.
func CastFailed(err error) bool {
	var e *duckdb.Error
	return errors.As(err, &e) && e.Type == duckdb.ErrorTypeConversion
}
