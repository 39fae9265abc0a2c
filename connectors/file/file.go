// Package file is the file connector: CSV, JSON Lines and Parquet files, gzip-compressed or
// not, matched by globs and loaded in bulk through DuckDB's own readers. A file already loaded
// with the same size and checksum is skipped; a changed file replaces its own earlier rows.
package file

import (
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/zeebo/xxh3"

	"github.com/ckm-dev/ckm/connectors"
	"github.com/ckm-dev/ckm/warehouse"
)

func init() {
	connectors.Register("file", connectors.Kind{
		NewConfig: func() any { return &Config{} },
		Open: func(ctx context.Context, env connectors.Env, cfg any) (connectors.Source, error) {
			return &Source{env: env, cfg: *cfg.(*Config)}, nil
		},
	})
}

// Config is a file source's block in config.yaml.
type Config struct {
	Paths      []string   `yaml:"paths"`       // files or globs, relative to the config file
	Format     string     `yaml:"format"`      // csv | jsonl | parquet; default from the file name
	CSV        CSVOptions `yaml:"csv"`         // dialect; DuckDB sniffs whatever is not set
	AllowEmpty bool       `yaml:"allow_empty"` // a glob that matches nothing is not an error
}

// CSVOptions set the CSV dialect.
type CSVOptions struct {
	Delimiter string `yaml:"delimiter"`
	Quote     string `yaml:"quote"`
	Escape    string `yaml:"escape"`
	Header    *bool  `yaml:"header"`
}

var formats = []string{"csv", "jsonl", "parquet"}

// Validate checks formats and that the paths match files.
func (c *Config) Validate(baseDir string) []connectors.FieldProblem {
	var out []connectors.FieldProblem
	if len(c.Paths) == 0 {
		out = append(out, connectors.FieldProblem{Key: "paths", Msg: "no paths given", Hint: "paths: [data/orders*.csv.gz]"})
	}
	if c.Format != "" && !slices.Contains(formats, c.Format) {
		out = append(out, connectors.FieldProblem{Key: "format", Msg: "unknown format " + c.Format, Hint: "one of " + strings.Join(formats, ", ")})
	}
	for _, p := range c.Paths {
		files, err := expand(baseDir, []string{p})
		switch {
		case err != nil:
			out = append(out, connectors.FieldProblem{Key: "paths", Msg: err.Error()})
		case len(files) == 0 && !c.AllowEmpty:
			out = append(out, connectors.FieldProblem{Key: "paths", Msg: fmt.Sprintf("no file matches %q", p),
				Hint: "paths are relative to the config file's directory; set allow_empty: true if files arrive later"})
		}
		for _, f := range files {
			if c.Format == "" && formatOf(f) == "" {
				out = append(out, connectors.FieldProblem{Key: "format", Msg: "cannot tell the format of " + f, Hint: "set format: csv, jsonl or parquet"})
			}
		}
	}
	return out
}

// Source reads the files of one configured source.
type Source struct {
	env connectors.Env
	cfg Config
}

// Read loads each new or changed file as one batch, in path order.
func (s *Source) Read(ctx context.Context, w connectors.Writer) error {
	files, err := expand(s.env.BaseDir, s.cfg.Paths)
	if err != nil {
		return err
	}
	if len(files) == 0 && !s.cfg.AllowEmpty {
		return fmt.Errorf("no file matches %s", strings.Join(s.cfg.Paths, ", "))
	}
	for _, path := range files {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := s.readFile(ctx, w, path); err != nil {
			return err
		}
	}
	return nil
}

func (s *Source) readFile(ctx context.Context, w connectors.Writer, path string) error {
	name := s.displayName(path)
	size, sum, err := fingerprint(path)
	if err != nil {
		return err
	}
	var oldSize int64
	var oldSum string
	err = s.env.DB.QueryRowContext(ctx, `SELECT size, checksum FROM ingest_files WHERE source = ? AND path = ?`, s.env.Source, name).Scan(&oldSize, &oldSum)
	known := err == nil
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("read ingest state of %s: %w", name, err)
	}
	if known && oldSize == size && oldSum == sum {
		s.env.Log.Debug("file unchanged, skipped", "source", s.env.Source, "file", name)
		return nil
	}
	format := s.cfg.Format
	if format == "" {
		format = formatOf(path)
	}
	b := connectors.Batch{Label: name}
	if known {
		b.ReplacePrefix = name + ":"
		s.env.Log.Info("file changed, reloading its rows", "source", s.env.Source, "file", name)
	}
	switch format {
	case "csv":
		s.csvBatch(&b, path, name)
	case "jsonl":
		s.jsonlBatch(&b, path, name)
	case "parquet":
		b.Relation = fmt.Sprintf("(SELECT * EXCLUDE (file_row_number), file_row_number + 1 AS _ordinal FROM read_parquet(%s, file_row_number=true))", warehouse.Quote(path))
		b.Position = fmt.Sprintf("%s || ':row ' || _ordinal", warehouse.Quote(name))
	default:
		return fmt.Errorf("%s: unknown format %q", name, format)
	}
	b.Checkpoint = func(ctx context.Context, tx connectors.Querier, st connectors.BatchStats) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO ingest_files (source, path, size, checksum, rows_loaded, dead_letters, loaded_at, run_id)
			VALUES (?, ?, ?, ?, ?, ?, now(), ?)
			ON CONFLICT (source, path) DO UPDATE SET size = excluded.size, checksum = excluded.checksum,
				rows_loaded = excluded.rows_loaded, dead_letters = excluded.dead_letters, loaded_at = excluded.loaded_at, run_id = excluded.run_id`,
			s.env.Source, name, size, sum, st.Loaded, st.DeadLettered, s.env.RunID)
		return err
	}
	if _, err := w.Write(ctx, b); err != nil {
		return err
	}
	return nil
}

const rejectsTable, rejectsScan = "ckm_csv_rejects", "ckm_csv_rejects_scan"

// csvBatch reads every field as text (the mapping casts them) and has DuckDB keep the lines it
// cannot parse (wrong column count, broken quoting, oversized) in a rejects table, with their line numbers.
func (s *Source) csvBatch(b *connectors.Batch, path, name string) {
	opts := []string{warehouse.Quote(path), "all_varchar=true", "store_rejects=true",
		"rejects_table=" + warehouse.Quote(rejectsTable), "rejects_scan=" + warehouse.Quote(rejectsScan)}
	header := s.cfg.CSV.Header == nil || *s.cfg.CSV.Header
	opts = append(opts, fmt.Sprintf("header=%t", header))
	if s.cfg.CSV.Delimiter != "" {
		opts = append(opts, "delim="+warehouse.Quote(s.cfg.CSV.Delimiter))
	}
	if s.cfg.CSV.Quote != "" {
		opts = append(opts, "quote="+warehouse.Quote(s.cfg.CSV.Quote))
	}
	if s.cfg.CSV.Escape != "" {
		opts = append(opts, "escape="+warehouse.Quote(s.cfg.CSV.Escape))
	}
	headerLines := 0
	if header {
		headerLines = 1
	}
	b.Relation = withOrdinal("read_csv(" + strings.Join(opts, ", ") + ")")
	b.Position = fmt.Sprintf("%s || ':' || (_ordinal + %d)", warehouse.Quote(name), headerLines)
	b.AfterScan = s.harvestRejects(name, headerLines)
}

// jsonlBatch reads each line whole as text; the mapping parses it, so a malformed line becomes
// a dead letter with its line number instead of failing the file.
func (s *Source) jsonlBatch(b *connectors.Batch, path, name string) {
	b.Relation = withOrdinal(fmt.Sprintf("read_csv(%s, columns={'payload': 'VARCHAR'}, header=false, delim=chr(30), quote='', escape='', "+
		"auto_detect=false, store_rejects=true, rejects_table=%s, rejects_scan=%s)", warehouse.Quote(path), warehouse.Quote(rejectsTable), warehouse.Quote(rejectsScan)))
	b.JSON = true
	b.Position = fmt.Sprintf("%s || ':' || _ordinal", warehouse.Quote(name))
	b.AfterScan = s.harvestRejects(name, 0)
}

// withOrdinal numbers a table function's rows in file order, for file:line lineage. DuckDB
// plans this as a streaming window, which runs the mapping above it on one thread: the largest
// single cost of ingest besides parsing, and the price of exact positions.
func withOrdinal(tableFunction string) string {
	return "(SELECT * EXCLUDE (ordinality), ordinality AS _ordinal FROM " + tableFunction + " WITH ORDINALITY)"
}

// harvestRejects moves the lines DuckDB's reader rejected into dead_letters and, when there were
// any, shifts the positions of later good rows so each names its true line.
func (s *Source) harvestRejects(name string, headerLines int) func(ctx context.Context, tx connectors.Querier, mapped string) (int64, error) {
	return func(ctx context.Context, tx connectors.Querier, mapped string) (int64, error) {
		defer tx.ExecContext(context.WithoutCancel(ctx), "DROP TABLE IF EXISTS temp."+rejectsTable+"; DROP TABLE IF EXISTS temp."+rejectsScan)
		var n int64
		if err := tx.QueryRowContext(ctx, "SELECT count(DISTINCT line) FROM "+rejectsTable).Scan(&n); err != nil {
			return 0, nil // no rejects table: the reader rejected nothing
		}
		if n == 0 {
			return 0, nil
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO dead_letters (run_id, source, position, reason, payload, received_at)
			SELECT ?, ?, ? || ':' || line, string_agg(DISTINCT error_type || ': ' || error_message, '; '), any_value(csv_line), now()
			FROM `+rejectsTable+` GROUP BY line`, s.env.RunID, s.env.Source, name); err != nil {
			return 0, fmt.Errorf("dead-letter rejected lines: %w", err)
		}
		// Good row k sits after every rejected line whose own good-row count is below k.
		_, err := tx.ExecContext(ctx, fmt.Sprintf(`UPDATE %[1]s SET _position = %[2]s || ':' || (%[1]s._ordinal + %[3]d + shift.skipped)
			FROM (SELECT m._ordinal, count(r.line) AS skipped FROM %[1]s m
			      JOIN (SELECT line - %[3]d - row_number() OVER (ORDER BY line) AS good_before, line FROM (SELECT DISTINCT line FROM %[4]s)) r
			        ON r.good_before < m._ordinal GROUP BY m._ordinal) shift
			WHERE %[1]s._ordinal = shift._ordinal`, mapped, warehouse.Quote(name), headerLines, rejectsTable))
		if err != nil {
			return 0, fmt.Errorf("correct line numbers: %w", err)
		}
		return n, nil
	}
}

// displayName is the path as stored in lineage and ingest_files: relative to the config
// directory when inside it, so a moved checkout keeps its ingest state.
func (s *Source) displayName(path string) string {
	if rel, err := filepath.Rel(s.env.BaseDir, path); err == nil && !strings.HasPrefix(rel, "..") {
		return filepath.ToSlash(rel)
	}
	return path
}

// expand resolves globs against baseDir into a sorted, de-duplicated list of files.
func expand(baseDir string, patterns []string) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	for _, p := range patterns {
		if !filepath.IsAbs(p) {
			p = filepath.Join(baseDir, p)
		}
		matches, err := filepath.Glob(p)
		if err != nil {
			return nil, fmt.Errorf("bad glob %q: %w", p, err)
		}
		for _, m := range matches {
			if st, err := os.Stat(m); err == nil && st.Mode().IsRegular() && !seen[m] {
				seen[m] = true
				out = append(out, m)
			}
		}
	}
	sort.Strings(out)
	return out, nil
}

func formatOf(path string) string {
	p := strings.ToLower(strings.TrimSuffix(strings.TrimSuffix(path, ".gz"), ".zst"))
	switch {
	case strings.HasSuffix(p, ".csv"), strings.HasSuffix(p, ".tsv"), strings.HasSuffix(p, ".txt"):
		return "csv"
	case strings.HasSuffix(p, ".jsonl"), strings.HasSuffix(p, ".ndjson"), strings.HasSuffix(p, ".json"):
		return "jsonl"
	case strings.HasSuffix(p, ".parquet"):
		return "parquet"
	}
	return ""
}

// fingerprint is the file's size and a 128-bit xxh3 of its bytes (fast enough to be a
// small fraction of the load itself).
func fingerprint(path string) (int64, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, "", fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	h := xxh3.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return 0, "", fmt.Errorf("read %s: %w", path, err)
	}
	sum := h.Sum128().Bytes()
	return n, "xxh3:" + hex.EncodeToString(sum[:]), nil
}
