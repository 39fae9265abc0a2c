// Package publish hands a successful run's outputs to BI tools so that readers never block
// the writer and never see half a run: Parquet files partitioned by as_of plus a latest/
// directory swapped as one, a read-only DuckDB snapshot file, and a static HTML report.
// Everything is built under a temporary name on the same file system and renamed into place.
package publish

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/ckm-dev/ckm/warehouse"
)

// Tables are the outputs published, each one as_of partition per run. customer_scores is the
// view joining the others: the table most dashboards want.
// customer_changes and segment_transitions compare the as_of with the pipeline's previous one.
var Tables = []string{"customer_rfm", "customer_clv", "customer_value", "customer_knowledge", "model_fits", "customer_scores",
	"customer_changes", "segment_transitions"}

// ChangeTables are the tables whose rows for the next as_of depend on this one: publishing a
// run of an earlier date publishes them again for the next date (Run.Next).
var ChangeTables = []string{"customer_changes", "segment_transitions"}

// Options say where and what to publish.
type Options struct {
	Dir                       string
	Parquet, Snapshot, Report bool
	Log                       *slog.Logger // each part's time, at debug level; nil: not logged
	// Force makes the run what latest/ and the snapshot show even when they show a newer as_of
	// (`ckm publish` undoing a run of the wrong date).
	Force bool
	// Today: latest/ and the snapshot otherwise only move forward, but one showing an as_of
	// after Today was a mistake and gives way to any run.
	Today time.Time
	// Mode is the permission of the published files (0: 0600); directories get the matching
	// search bits.
	Mode os.FileMode
	// CustomerColumns are the customers' columns BI tools may see (nil: customer_id, segment,
	// region); the others, names among them, are NULL in the snapshot and customer_scores.
	CustomerColumns []string
}

// DefaultCustomerColumns are the customers' columns published unless configured.
var DefaultCustomerColumns = []string{"customer_id", "segment", "region"}

// fileMode and dirMode are the permissions of what is published.
func (o Options) fileMode() os.FileMode { return cmp.Or(o.Mode, 0o600) }

func (o Options) dirMode() os.FileMode {
	m := o.fileMode()
	return m | (m&0o444)>>2 // a readable directory can be searched
}

// Run is the run whose outputs are published.
type Run struct {
	RunID    string
	Pipeline string
	AsOf     time.Time
	// Next is the pipeline's next as_of with a successful run, whose changes compare against
	// this one and were recomputed with it; nil when this is the newest.
	Next *time.Time
}

// Manifest describes what latest/ and the snapshot hold.
type Manifest struct {
	AsOf        string           `json:"as_of"`
	RunID       string           `json:"run_id"`
	Pipeline    string           `json:"pipeline"`
	PublishedAt time.Time        `json:"published_at"`
	Rows        map[string]int64 `json:"rows"`
}

// Layout of the publish directory.
const (
	parquetDir    = "parquet"
	latestDir     = "latest"
	reportsDir    = "reports"
	SnapshotFile  = "snapshot.duckdb"
	manifestFile  = "manifest.json"
	partitionFile = "data.parquet"
	tmpDir        = ".tmp"
)

// Publish publishes run. The as_of partitions and the report are always written; latest/ and
// the snapshot move only forward, so a backfill of an old date does not replace newer results.
func Publish(ctx context.Context, conn *warehouse.Conn, opts Options, run Run) error {
	if !opts.Parquet && !opts.Snapshot && !opts.Report {
		return nil
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.CustomerColumns == nil {
		opts.CustomerColumns = DefaultCustomerColumns
	}
	p := &publisher{conn: conn, opts: opts, run: run, asOf: run.AsOf.Format(time.DateOnly)}
	// Whatever is in the scratch space was left by a process that died while publishing: only
	// the process that writes the warehouse publishes, and that is this one.
	if err := os.RemoveAll(filepath.Join(opts.Dir, tmpDir)); err != nil {
		return fmt.Errorf("publish to %s: clear leftovers: %w", opts.Dir, err)
	}
	if err := mkdirs(filepath.Join(opts.Dir, tmpDir), opts.dirMode()); err != nil {
		return fmt.Errorf("publish to %s: %w", opts.Dir, err)
	}
	if err := os.Chmod(opts.Dir, opts.dirMode()); err != nil {
		return fmt.Errorf("publish to %s: %w", opts.Dir, err)
	}
	p.manifest = Manifest{AsOf: p.asOf, RunID: run.RunID, Pipeline: run.Pipeline, PublishedAt: time.Now().UTC(), Rows: map[string]int64{}}
	views, err := p.viewDefinitions(ctx)
	if err != nil {
		return fmt.Errorf("publish to %s: %w", opts.Dir, err)
	}
	p.views = views
	current, err := ReadManifest(filepath.Join(opts.Dir, latestDir))
	if err != nil {
		return err
	}
	advance := current == nil || current.AsOf <= p.asOf || opts.Force || current.AsOf > opts.Today.Format(time.DateOnly)
	if !advance {
		opts.Log.Warn("latest/ and the snapshot stay at a newer as_of; `ckm publish --as-of` makes another run what they show",
			"latest_as_of", current.AsOf, "as_of", p.asOf)
	}

	var report []byte
	parts := []struct {
		name string
		on   bool
		do   func(context.Context) error
	}{
		// First: writing each table's Parquet file counts its rows, which the rest need.
		{"parquet partitions", opts.Parquet, p.partitions},
		{"row counts", true, p.count},
		{"report", opts.Report, func(ctx context.Context) (err error) {
			if report, err = p.report(ctx); err != nil {
				return err
			}
			return p.writeFileAtomic(filepath.Join(opts.Dir, reportsDir, p.asOf+".html"), report)
		}},
		{"snapshot", opts.Snapshot && advance, p.snapshot},
		// Last: its manifest naming the run tells that everything before it was published.
		{"latest", opts.Parquet && advance, func(context.Context) error { return p.latest(report) }},
	}
	for _, part := range parts {
		if !part.on {
			continue
		}
		start := time.Now()
		if err := part.do(ctx); err != nil {
			return err
		}
		opts.Log.Debug("published", "part", part.name, "elapsed", time.Since(start).Round(time.Millisecond).String())
	}
	return nil
}

type publisher struct {
	conn     *warehouse.Conn
	opts     Options
	run      Run
	asOf     string
	manifest Manifest
	views    map[string]string // the published views' CREATE VIEW statements, by name
}

// count fills in the manifest the rows of each table not counted while it was written.
func (p *publisher) count(ctx context.Context) error {
	for _, t := range Tables {
		if _, done := p.manifest.Rows[t]; done {
			continue
		}
		var n int64
		if err := p.conn.QueryRowContext(ctx, `SELECT count(*) FROM `+t+` WHERE as_of = ?`, p.run.AsOf).Scan(&n); err != nil {
			return fmt.Errorf("publish: count %s: %w", t, err)
		}
		p.manifest.Rows[t] = n
	}
	return nil
}

// tempPath is a fresh name in the publish directory's scratch space, on the same file system
// as the final places so that renames are atomic.
func (p *publisher) tempPath(name string) string {
	return filepath.Join(p.opts.Dir, tmpDir, uuid.NewString()+"-"+name)
}

// sortKeys order each table's rows in its files, so that a rerun writes the same bytes.
var sortKeys = map[string]string{"model_fits": "model, parameter", "customer_changes": "customer_id, dimension",
	"segment_transitions": "dimension, from_value NULLS FIRST, to_value NULLS FIRST"}

// copyParquet writes one table's as_of partition to a Parquet file, without the as_of column:
// hive partitioning carries it in the directory name (tools such as Spark refuse a column
// that is in both).
func (p *publisher) copyParquet(ctx context.Context, table string, asOf time.Time, path string) (rows int64, err error) {
	from, args := table+" WHERE as_of = ?", []any{asOf}
	if def, isView := p.views[table]; isView {
		// A view's joins and the sort in one statement ran out of DuckDB's memory at 10M
		// customers (customer_scores, memory_limit 8GB: "failed to pin block"), where the join
		// into a table, then the sorted copy of that, took 52 and 40 s within the limit: each
		// spills on its own.
		day := "DATE '" + asOf.Format(time.DateOnly) + "'"
		query := "SELECT * FROM " + table + " WHERE as_of = " + day
		if table == "customer_scores" {
			body, err := viewBody(def)
			if err == nil {
				query, err = scopedScores(body, day)
			}
			if err != nil {
				return 0, fmt.Errorf("publish %s as Parquet: %w", table, err)
			}
		}
		if _, err := p.conn.ExecContext(ctx, `CREATE OR REPLACE TEMP TABLE `+viewRows+` AS `+query); err != nil {
			return 0, fmt.Errorf("publish %s as Parquet: %w", table, err)
		}
		defer p.conn.ExecContext(context.WithoutCancel(ctx), "DROP TABLE IF EXISTS temp."+viewRows)
		from, args = "temp."+viewRows, nil
	}
	q := fmt.Sprintf(`COPY (SELECT * EXCLUDE (as_of)%s FROM %s ORDER BY %s) TO %s (FORMAT parquet, COMPRESSION zstd)`,
		p.withheld(table), from, cmp.Or(sortKeys[table], "customer_id"), warehouse.Quote(path))
	res, err := p.conn.ExecContext(ctx, q, args...)
	if err == nil {
		rows, err = res.RowsAffected() // COPY TO answers the rows it wrote
	}
	if err != nil {
		return 0, fmt.Errorf("publish %s as Parquet: %w", table, err)
	}
	return rows, os.Chmod(path, p.opts.fileMode())
}

// viewRows holds a published view's rows of one as_of while they are copied to Parquet.
const viewRows = "publish_view_rows"

// viewBody is the query of a CREATE VIEW statement as duckdb_views() gives it.
func viewBody(def string) (string, error) {
	_, body, ok := strings.Cut(def, " AS ")
	if !ok {
		return "", fmt.Errorf("read the view: unexpected definition %q", firstWords(def))
	}
	return strings.TrimSuffix(strings.TrimSpace(body), ";"), nil
}

// scoresByAsOf are the outputs customer_scores joins by as_of.
var scoresByAsOf = []string{"customer_clv", "customer_rfm", "customer_knowledge", "customer_value"}

// scopedScores is customer_scores' query (body) with each output it joins filtered to as_of
// asOf (an SQL expression) before the joins. Neither DuckDB nor PostgreSQL pushes a filter on
// the joins' merged as_of down through the FULL JOINs: filtered after them, the view joins every
// as_of's rows (at 100k customers with four as_of, one as_of's rows took 1.0–2.2 s, filtered
// first 0.34–0.38 s, the same rows), and a warehouse keeps every night's.
func scopedScores(body, asOf string) (string, error) {
	for _, t := range scoresByAsOf {
		from := " " + t + " AS "
		if !strings.Contains(body, from) {
			return "", fmt.Errorf("read the customer_scores view: %s not found in %q", t, firstWords(body))
		}
		body = strings.Replace(body, from, " (SELECT * FROM "+t+" WHERE as_of = "+asOf+") AS ", 1)
	}
	return body, nil
}

// scoresCustomerColumns are the customers' columns in customer_scores, by the name they have there.
var scoresCustomerColumns = map[string]string{"name": "name", "segment": "crm_segment", "region": "region"}

// withheld is the REPLACE clause that blanks, in table, the customers' columns BI tools may not
// see ("" when none is withheld).
func (p *publisher) withheld(table string) string {
	if table != "customer_scores" {
		return ""
	}
	var blank []string
	for _, c := range slices.Sorted(maps.Keys(scoresCustomerColumns)) {
		if !slices.Contains(p.opts.CustomerColumns, c) {
			blank = append(blank, "NULL::VARCHAR AS "+scoresCustomerColumns[c])
		}
	}
	if len(blank) == 0 {
		return ""
	}
	return " REPLACE (" + strings.Join(blank, ", ") + ")"
}

// partitions writes parquet/<table>/as_of=<date>/data.parquet for every table, each
// partition directory built aside and swapped in, and the next as_of's changes again.
func (p *publisher) partitions(ctx context.Context) error {
	for _, part := range p.run.Partitions(Tables) {
		t, asOf := part.Table, part.AsOf.Format(time.DateOnly)
		tmp := p.tempPath(t)
		if err := mkdirs(tmp, p.opts.dirMode()); err != nil {
			return fmt.Errorf("publish %s: %w", t, err)
		}
		n, err := p.copyParquet(ctx, t, part.AsOf, filepath.Join(tmp, partitionFile))
		if err != nil {
			return errors.Join(err, os.RemoveAll(tmp))
		}
		if part.AsOf.Equal(p.run.AsOf) {
			p.manifest.Rows[t] = n
		}
		if err := p.swapDir(tmp, filepath.Join(p.opts.Dir, parquetDir, t, "as_of="+asOf)); err != nil {
			return fmt.Errorf("publish %s: %w", t, err)
		}
	}
	return nil
}

// Partition is one table's rows for one as_of.
type Partition struct {
	Table string
	AsOf  time.Time
}

// Partitions are what publishing the run writes of tables: each one's as_of partition, and
// the change tables' partitions of the next as_of.
func (r Run) Partitions(tables []string) []Partition {
	var parts []Partition
	for _, t := range tables {
		parts = append(parts, Partition{t, r.AsOf})
	}
	for _, t := range tables {
		if r.Next != nil && slices.Contains(ChangeTables, t) {
			parts = append(parts, Partition{t, *r.Next})
		}
	}
	return parts
}

// latest builds latest/ (one Parquet file per table, the report and the manifest) aside and
// swaps it in as one directory, so a reader finds all files from one run. The Parquet files
// are hard links to the run's partition files: the same bytes, written once.
func (p *publisher) latest(report []byte) error {
	tmp := p.tempPath(latestDir)
	if err := mkdirs(tmp, p.opts.dirMode()); err != nil {
		return fmt.Errorf("publish latest: %w", err)
	}
	build := func() error {
		for _, t := range Tables {
			if err := linkOrCopy(filepath.Join(p.opts.Dir, parquetDir, t, "as_of="+p.asOf, partitionFile), filepath.Join(tmp, t+".parquet")); err != nil {
				return err
			}
		}
		if report != nil {
			if err := os.WriteFile(filepath.Join(tmp, "report.html"), report, p.opts.fileMode()); err != nil {
				return err
			}
		}
		return p.writeManifest(filepath.Join(tmp, manifestFile), p.manifest)
	}
	if err := build(); err != nil {
		return errors.Join(fmt.Errorf("publish latest: %w", err), os.RemoveAll(tmp))
	}
	if err := p.swapDir(tmp, filepath.Join(p.opts.Dir, latestDir)); err != nil {
		return fmt.Errorf("publish latest: %w", err)
	}
	return nil
}

// ReadManifest reads dir's manifest.json; nil when there is none yet.
func ReadManifest(dir string) (*Manifest, error) {
	b, err := os.ReadFile(filepath.Join(dir, manifestFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read published manifest: %w", err)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("read published manifest %s: %w", filepath.Join(dir, manifestFile), err)
	}
	return &m, nil
}

func (p *publisher) writeManifest(path string, m Manifest) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), p.opts.fileMode())
}

// writeFileAtomic writes data beside path and renames it into place.
func (p *publisher) writeFileAtomic(path string, data []byte) error {
	if err := mkdirs(filepath.Dir(path), p.opts.dirMode()); err != nil {
		return err
	}
	tmp := path + ".tmp-" + uuid.NewString()[:8]
	if err := os.WriteFile(tmp, data, p.opts.fileMode()); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return errors.Join(err, os.Remove(tmp))
	}
	return nil
}

// linkOrCopy makes dst a hard link to src, or a copy where the file system has no links.
func linkOrCopy(src, dst string) error {
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		return errors.Join(err, out.Close())
	}
	return out.Close()
}

// mkdirs makes dir and its missing parents with mode (whatever the process umask).
func mkdirs(dir string, mode os.FileMode) error {
	if err := os.MkdirAll(dir, mode); err != nil {
		return err
	}
	return os.Chmod(dir, mode)
}

// swapDir puts the directory tmp at path in one step and removes what was there.
func (p *publisher) swapDir(tmp, path string) error {
	if err := mkdirs(filepath.Dir(path), p.opts.dirMode()); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err == nil {
		return nil // nothing was there
	}
	// A directory was there: exchange the two atomically, then remove the old one (readers
	// with files open keep reading them).
	if err := exchange(tmp, path); err != nil {
		return errors.Join(err, os.RemoveAll(tmp))
	}
	return os.RemoveAll(tmp)
}
