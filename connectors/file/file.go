// Package file is the file connector: CSV, JSON Lines and Parquet files, gzip-compressed or
// not, matched by globs and loaded in bulk through DuckDB's own readers. A file already loaded
// with the same size and modification time is skipped unread, one with the same size and
// checksum after hashing; a changed file replaces its own earlier rows.
package file

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

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
	// MaxLineSize: a CSV or JSON Lines line longer than this is a dead letter; default 2MB
	// (DuckDB's), e.g. 8MiB.
	MaxLineSize string `yaml:"max_line_size"`
	// BatchSize: JSON Lines go to the warehouse at most this many lines (and 64 MiB) per
	// transaction; default 1,000,000. CSV and Parquet files load in one transaction each.
	BatchSize int `yaml:"batch_size"`
	// VerifyUnchanged hashes every file on every run, even when its size and modification time
	// match what was loaded: for tools that rewrite files keeping their size and mtime.
	VerifyUnchanged bool `yaml:"verify_unchanged"`
}

// CSVOptions set the CSV dialect.
type CSVOptions struct {
	Delimiter string `yaml:"delimiter"`
	Quote     string `yaml:"quote"`
	Escape    string `yaml:"escape"`
	Header    *bool  `yaml:"header"`
}

var formats = []string{"csv", "jsonl", "parquet"}

// defaultMaxLine is DuckDB's own default maximum line size.
const defaultMaxLine = 2_000_000

// maxLine is the configured maximum line size in bytes.
func (c *Config) maxLine() (int64, error) {
	if c.MaxLineSize == "" {
		return defaultMaxLine, nil
	}
	n, err := connectors.ParseBytes(c.MaxLineSize)
	return int64(n), err
}

// Validate checks formats and that the paths match files.
func (c *Config) Validate(baseDir string) []connectors.FieldProblem {
	var out []connectors.FieldProblem
	if len(c.Paths) == 0 {
		out = append(out, connectors.FieldProblem{Key: "paths", Msg: "no paths given", Hint: "paths: [data/orders*.csv.gz]"})
	}
	if c.Format != "" && !slices.Contains(formats, c.Format) {
		out = append(out, connectors.FieldProblem{Key: "format", Msg: "unknown format " + c.Format, Hint: "one of " + strings.Join(formats, ", ")})
	}
	if _, err := c.maxLine(); err != nil {
		out = append(out, connectors.FieldProblem{Key: "max_line_size", Msg: err.Error(), Hint: "e.g. 2MB, 8MiB"})
	}
	if c.BatchSize < 0 {
		out = append(out, connectors.FieldProblem{Key: "batch_size", Msg: fmt.Sprintf("%d is negative", c.BatchSize), Hint: "leave it out for 1000000"})
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

// stored is what ingest_files knows of a file.
type stored struct {
	known      bool
	size       int64
	modifiedNS sql.NullInt64
	checksum   string
	damage     string
}

func (s *Source) stored(ctx context.Context, name string) (stored, error) {
	var st stored
	var damage sql.NullString
	err := s.env.DB.QueryRowContext(ctx, `SELECT size, modified_ns, checksum, damage FROM ingest_files WHERE source = ? AND path = ?`, s.env.Source, name).
		Scan(&st.size, &st.modifiedNS, &st.checksum, &damage)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return st, nil
	case err != nil:
		return st, fmt.Errorf("read ingest state of %s: %w", name, err)
	}
	st.known, st.damage = true, damage.String
	return st, nil
}

// sameStat tells whether the file's size and modification time are those of the version loaded
// (a load that stopped half-way stored a "partial:" checksum and never matches).
func (st stored) sameStat(info os.FileInfo) bool {
	return st.known && st.size == info.Size() && st.modifiedNS.Valid && st.modifiedNS.Int64 == info.ModTime().UnixNano() &&
		!strings.HasPrefix(st.checksum, partial)
}

// settledModTime is the modification time to trust a file's stat by later, or NULL while the
// file may still change without its time moving: file systems stamp times at a coarse clock
// tick (FAT at 2 s), so a file rewritten with the same size within the tick of its last write
// would keep its time. A time this recent is not stored, and the next run hashes the file (as
// git does for "racily clean" entries).
func settledModTime(info os.FileInfo, now time.Time) sql.NullInt64 {
	const tick = 2 * time.Second
	if now.Sub(info.ModTime()) < tick {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: info.ModTime().UnixNano(), Valid: true}
}

// partial prefixes the checksum stored with a file's batches until its last one commits.
const partial = "partial:"

// unchanged logs that a file is skipped as it was loaded (or left unloaded, when damaged).
func (s *Source) unchanged(name string, old stored, how string) {
	if old.damage != "" {
		s.env.Log.Warn("file still damaged, not loaded (it is read again once it changes)", "source", s.env.Source, "file", name, "damage", old.damage)
		return
	}
	s.env.Log.Debug("file unchanged, skipped", "source", s.env.Source, "file", name, "by", how)
}

func (s *Source) readFile(ctx context.Context, w connectors.Writer, path string) error {
	name := s.displayName(path)
	format := s.format(path)
	maxLine, err := s.cfg.maxLine()
	if err != nil {
		return err
	}
	// Stat before reading: a file written to while it is read then shows a newer time next run.
	info, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("read %s: %w", name, err)
	}
	old, err := s.stored(ctx, name)
	if err != nil {
		return err
	}
	if !s.cfg.VerifyUnchanged && old.sameStat(info) {
		s.unchanged(name, old, "size and modification time")
		return nil
	}
	sc, err := scanFile(path, format != "parquet", maxLine)
	if err != nil {
		return err
	}
	sc.modifiedNS = settledModTime(info, time.Now())
	if old.known && old.size == sc.size && old.checksum == sc.checksum {
		// Touched or copied, not changed: remember the new time so the next run need not hash it.
		if _, err := s.env.DB.ExecContext(ctx, `UPDATE ingest_files SET modified_ns = ? WHERE source = ? AND path = ?`,
			sc.modifiedNS, s.env.Source, name); err != nil {
			return fmt.Errorf("record modification time of %s: %w", name, err)
		}
		s.unchanged(name, old, "checksum")
		return nil
	}
	b := connectors.Batch{Label: name, Stream: warehouse.Quote(name), PositionSep: ":"}
	dir, err := os.MkdirTemp("", "ckm-file-")
	if err != nil {
		return fmt.Errorf("read %s: %w", name, err)
	}
	defer os.RemoveAll(dir)
	damage := sc.damage
	if damage == "" && !sc.empty && format != "jsonl" {
		if damage, err = s.relation(ctx, &b, path, name, dir, format, sc, maxLine); err != nil {
			return err
		}
	}
	switch {
	case damage != "":
		// The file's earlier rows stay; the damage is one dead letter, and the file is read
		// again when it changes (a file still being written, or sent again whole).
		s.env.Log.Error("file damaged, not loaded", "source", s.env.Source, "file", name, "damage", damage)
		b = connectors.Batch{Label: name, Rejects: []connectors.Reject{{Stream: name, Position: name,
			Reason: damage + ": the file was not loaded; it is read again once the file changes", WholeStream: true}}}
	case old.known:
		// A changed file replaces its earlier rows; an emptied one takes them with it (an empty
		// file has no relation: DuckDB would invent a column).
		b.ReplaceStream = name
		s.env.Log.Info("file changed, reloading its rows", "source", s.env.Source, "file", name)
	}
	checkpoint := s.checkpoint(name, sc, damage)
	if format == "jsonl" && damage == "" && !sc.empty {
		return s.readJSONLines(ctx, w, path, b, maxLine, checkpoint)
	}
	b.Checkpoint = checkpoint(true)
	_, err = w.Write(ctx, b)
	return err
}

// checkpoint records a file's version in ingest_files with each of its batches: the counts of
// all its batches so far, and until the final one a checksum that matches nothing, so that a file
// whose load stopped half-way is read again whole (replacing its first batches' rows).
func (s *Source) checkpoint(name string, sc scan, damage string) func(final bool) func(context.Context, connectors.Querier, connectors.BatchStats) error {
	var total connectors.BatchStats // of the batches committed before this one
	return func(final bool) func(context.Context, connectors.Querier, connectors.BatchStats) error {
		checksum := sc.checksum
		if !final {
			checksum = partial + checksum
		}
		return func(ctx context.Context, tx connectors.Querier, st connectors.BatchStats) error {
			all := total
			all.Add(st)
			_, err := tx.ExecContext(ctx, `INSERT INTO ingest_files (source, path, size, modified_ns, checksum, rows_loaded, dead_letters, loaded_at, run_id,
					rows_read, rows_collapsed, rows_skipped, damage)
				VALUES (?, ?, ?, ?, ?, ?, ?, now(), ?, ?, ?, ?, nullif(?, ''))
				ON CONFLICT (source, path) DO UPDATE SET size = excluded.size, modified_ns = excluded.modified_ns, checksum = excluded.checksum,
					rows_loaded = excluded.rows_loaded, dead_letters = excluded.dead_letters, loaded_at = excluded.loaded_at, run_id = excluded.run_id,
					rows_read = excluded.rows_read, rows_collapsed = excluded.rows_collapsed, rows_skipped = excluded.rows_skipped, damage = excluded.damage`,
				s.env.Source, name, sc.size, sc.modifiedNS, checksum, all.Loaded, all.DeadLettered, s.env.RunID, all.Read, all.Collapsed, all.Skipped, damage)
			if err == nil {
				total = all // the transaction may still roll back: then the load stops here anyway
			}
			return err
		}
	}
}

// relation sets the batch's relation over the file, or returns why the file cannot be read as a
// whole (a Parquet footer DuckDB cannot read, a CSV file whose dialect cannot be told).
func (s *Source) relation(ctx context.Context, b *connectors.Batch, path, name, dir, format string, sc scan, maxLine int64) (damage string, err error) {
	target, err := readable(path, dir, sc)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", name, err)
	}
	switch format {
	case "csv":
		return s.csvBatch(ctx, b, target, dir, sc, maxLine), nil
	case "parquet":
		damage, rowNumbered := s.parquetCheck(ctx, target)
		if damage != "" {
			return damage, nil
		}
		// DuckDB's file_row_number is exact and cheap, but not for a file with a column of that name.
		b.Relation = fmt.Sprintf("read_parquet(%s, file_row_number=true)", warehouse.Quote(target))
		b.Seq, b.PositionSep = "{ordinal} + 1", ":row "
		if rowNumbered {
			b.Relation = fmt.Sprintf("(SELECT * FROM read_parquet(%s) WITH ORDINALITY)", warehouse.Quote(target))
			b.Seq = "{ordinal}"
		}
	default:
		return "", fmt.Errorf("%s: unknown format %q", name, format)
	}
	return "", nil
}

// globMeta are the characters DuckDB's readers expand in a path.
const globMeta = "*?[]{}\\"

// readable is a path DuckDB reads as exactly this file's content: the file itself, a link to it
// in dir when its name holds characters DuckDB would expand as a glob (orders[1].csv,
// orders_*.csv), or a copy with \n line endings when it mixes \r\n and \n.
func readable(path, dir string, sc scan) (string, error) {
	ext := ""
	for _, e := range []string{".csv", ".tsv", ".txt", ".jsonl", ".ndjson", ".json", ".parquet"} {
		if i := strings.LastIndex(strings.ToLower(path), e); i >= 0 {
			ext = path[i:]
			break
		}
	}
	if sc.mixedEndings() {
		plain := filepath.Join(dir, "normalized"+strings.TrimSuffix(strings.TrimSuffix(strings.ToLower(ext), ".gz"), ".zst"))
		return plain, writeNormalized(path, plain)
	}
	if !strings.ContainsAny(path, globMeta) {
		return path, nil
	}
	link := filepath.Join(dir, "file"+strings.ToLower(ext))
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	return link, os.Symlink(abs, link)
}

// parquetCheck reads a Parquet file's footer: a file DuckDB cannot read it from is damaged. It
// also tells whether the file has a column named file_row_number.
func (s *Source) parquetCheck(ctx context.Context, target string) (damage string, rowNumbered bool) {
	var n int64
	if err := s.env.DB.QueryRowContext(ctx, "SELECT count(*) FILTER (lower(name) = 'file_row_number') FROM parquet_schema("+warehouse.Quote(target)+")").Scan(&n); err != nil {
		return "truncated or corrupt Parquet: " + firstLine(err.Error()), false
	}
	return "", n > 0
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

const rejectsTable, rejectsScan, rejectedRecords = "ckm_csv_rejects", "ckm_csv_rejects_scan", "ckm_csv_rejected_records"

// dialect is how a CSV file is written, as DuckDB's sniffer read it.
type dialect struct {
	delim, quote, escape, comment string
	header                        bool
	skip                          int64
	columns                       []string
}

// sniff asks DuckDB how the file is written, with the configured settings fixed. A file whose
// first lines include one longer than the maximum is sniffed from a sample without such lines
// (DuckDB's sniffer gives up on them).
func (s *Source) sniff(ctx context.Context, target, dir string, sc scan, maxLine int64) (dialect, error) {
	sample := filepath.Join(dir, "sample.csv")
	if err := os.WriteFile(sample, sc.sample, 0o600); err != nil {
		return dialect{}, err
	}
	d, err := s.sniffFile(ctx, target, maxLine)
	if err != nil && sc.longest > maxLine && len(sc.sample) > 0 {
		d, err = s.sniffFile(ctx, sample, maxLine)
	}
	if err != nil || d.quote != "" || s.cfg.CSV.Quote != "" {
		return d, err
	}
	// DuckDB's sniffer gives up quoting for the whole file when one quote in its sample is never
	// closed: values then keep their quotes, and a quoted comma splits a value. Quote as CSV
	// does unless the sample reads with fewer rejected lines without. (A sample without a single
	// double quote tells nothing: quote, so a quoted value further down is read as one value.)
	if sc.quoted {
		with, without, err := s.rejectedBothWays(ctx, sample, d, maxLine)
		if err != nil || without < with {
			return d, err
		}
	}
	// The header is read again with quotes; all else stays as sniffed.
	fixed := []string{`quote='"'`, `escape='"'`, fmt.Sprintf("skip=%d", d.skip)}
	if s.cfg.CSV.Delimiter == "" {
		fixed = append(fixed, "delim="+warehouse.Quote(d.delim))
	}
	if s.cfg.CSV.Header == nil {
		fixed = append(fixed, fmt.Sprintf("header=%t", d.header))
	}
	quoted, err := s.sniffFile(ctx, target, maxLine, fixed...)
	if err != nil || len(quoted.columns) != len(d.columns) {
		d.quote, d.escape = `"`, `"` // the names stay the unquoted sniff's: the file has no quotes to strip from them
		return d, nil
	}
	return quoted, nil
}

// rejectedBothWays counts the sample's lines DuckDB rejects when it reads them quoting with a
// double quote, and not quoting.
func (s *Source) rejectedBothWays(ctx context.Context, sample string, d dialect, maxLine int64) (with, without int64, err error) {
	for i, quote := range []string{`"`, ""} {
		q := fmt.Sprintf(`SELECT count(*) FROM read_csv(%s, auto_detect=false, delim=%s, quote=%s, escape=%s, header=%t, skip=%d,
			columns={%s}, max_line_size=%d, store_rejects=true, rejects_table='ckm_sniff_rejects', rejects_scan='ckm_sniff_scan')`,
			warehouse.Quote(sample), warehouse.Quote(d.delim), warehouse.Quote(quote), warehouse.Quote(quote), d.header, d.skip,
			varcharColumns(d.columns), maxLine)
		var rows, rejected int64
		if err := s.env.DB.QueryRowContext(ctx, q).Scan(&rows); err != nil {
			return 0, 0, err
		}
		if err := s.env.DB.QueryRowContext(ctx, `SELECT count(DISTINCT line) FROM ckm_sniff_rejects`).Scan(&rejected); err != nil {
			return 0, 0, err
		}
		if i == 0 {
			with = rejected
		} else {
			without = rejected
		}
	}
	_, err = s.env.DB.ExecContext(ctx, `DROP TABLE IF EXISTS temp.ckm_sniff_rejects; DROP TABLE IF EXISTS temp.ckm_sniff_scan`)
	return with, without, err
}

// varcharColumns is read_csv's columns option: every column as text.
func varcharColumns(names []string) string {
	cols := make([]string, len(names))
	for i, c := range names {
		cols[i] = warehouse.Quote(c) + ": 'VARCHAR'"
	}
	return strings.Join(cols, ", ")
}

func (s *Source) sniffFile(ctx context.Context, path string, maxLine int64, fixed ...string) (dialect, error) {
	opts := []string{warehouse.Quote(path), fmt.Sprintf("max_line_size=%d", maxLine), "ignore_errors=true"}
	opts = append(opts, s.dialectOptions()...)
	opts = append(opts, fixed...)
	var d dialect
	var cols []any
	err := s.env.DB.QueryRowContext(ctx, `SELECT Delimiter, Quote, Escape, Comment, HasHeader, SkipRows, list_transform(Columns, c -> c.name)
		FROM sniff_csv(`+strings.Join(opts, ", ")+`)`).Scan(&d.delim, &d.quote, &d.escape, &d.comment, &d.header, &d.skip, &cols)
	if err != nil {
		return d, err
	}
	for _, v := range []*string{&d.delim, &d.quote, &d.escape, &d.comment} {
		if *v == "(empty)" {
			*v = ""
		}
	}
	for _, c := range cols {
		d.columns = append(d.columns, fmt.Sprint(c))
	}
	return d, nil
}

// dialectOptions are the configured CSV settings as read_csv options.
func (s *Source) dialectOptions() []string {
	var opts []string
	if s.cfg.CSV.Header != nil {
		opts = append(opts, fmt.Sprintf("header=%t", *s.cfg.CSV.Header))
	}
	if s.cfg.CSV.Delimiter != "" {
		opts = append(opts, "delim="+warehouse.Quote(s.cfg.CSV.Delimiter))
	}
	if s.cfg.CSV.Quote != "" {
		opts = append(opts, "quote="+warehouse.Quote(s.cfg.CSV.Quote))
	}
	if s.cfg.CSV.Escape != "" {
		opts = append(opts, "escape="+warehouse.Quote(s.cfg.CSV.Escape))
	}
	return opts
}

// csvBatch reads every field as text (the mapping casts them) in the dialect DuckDB sniffed,
// fixed, so that a line DuckDB cannot parse (wrong column count, broken quoting, not UTF-8,
// longer than max_line_size) is kept in a rejects table with its line number instead of failing
// the file. A file whose dialect cannot be told at all is damaged: it returns why.
func (s *Source) csvBatch(ctx context.Context, b *connectors.Batch, target, dir string, sc scan, maxLine int64) (damage string) {
	d, err := s.sniff(ctx, target, dir, sc, maxLine)
	if err != nil {
		return "cannot tell how the CSV file is written: " + firstLine(err.Error())
	}
	opts := []string{warehouse.Quote(target), "auto_detect=false", "delim=" + warehouse.Quote(d.delim), "quote=" + warehouse.Quote(d.quote),
		"escape=" + warehouse.Quote(d.escape), fmt.Sprintf("header=%t", d.header), fmt.Sprintf("skip=%d", d.skip),
		"columns={" + varcharColumns(d.columns) + "}", fmt.Sprintf("max_line_size=%d", maxLine),
		"store_rejects=true", "rejects_table=" + warehouse.Quote(rejectsTable), "rejects_scan=" + warehouse.Quote(rejectsScan)}
	if d.comment != "" {
		opts = append(opts, "comment="+warehouse.Quote(d.comment))
	}
	headerLines := d.skip
	if d.header {
		headerLines++
	}
	b.Relation = "(SELECT * FROM read_csv(" + strings.Join(opts, ", ") + ") WITH ORDINALITY)"
	b.Seq = fmt.Sprintf("{ordinal} + %d", headerLines)
	b.AfterScan = s.harvestRejects(b.Label, headerLines)
	return ""
}

// harvestRejects moves the records DuckDB's reader rejected into dead_letters and, when there
// were any, shifts the numbers of later good rows so each names its true line. DuckDB numbers a
// rejected record as if every record before it were one line; a record it rejects can span
// several (a quote never closed takes the lines up to the next quote along), which is counted
// from the record's own text.
func (s *Source) harvestRejects(name string, headerLines int64) func(ctx context.Context, tx connectors.Querier, mapped string) (int64, error) {
	return func(ctx context.Context, tx connectors.Querier, mapped string) (int64, error) {
		defer tx.ExecContext(context.WithoutCancel(ctx), "DROP TABLE IF EXISTS temp."+rejectsTable+"; DROP TABLE IF EXISTS temp."+rejectsScan+
			"; DROP TABLE IF EXISTS temp."+rejectedRecords)
		var n int64
		if err := tx.QueryRowContext(ctx, "SELECT count(DISTINCT line) FROM "+rejectsTable).Scan(&n); err != nil {
			return 0, nil // no rejects table: the reader rejected nothing
		}
		if n == 0 {
			return 0, nil
		}
		// Per rejected record: the lines it spans, the good records before it, and its first line
		// in the file (DuckDB's number plus the extra lines of the rejected records before it).
		if _, err := tx.ExecContext(ctx, fmt.Sprintf(`CREATE OR REPLACE TEMP TABLE %[1]s AS
			SELECT *, line + coalesce(sum(span - 1) OVER (ORDER BY line ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS first_line
			FROM (SELECT line, line - %[3]d - row_number() OVER (ORDER BY line) AS good_before,
				string_agg(DISTINCT error_type || ': ' || error_message, '; ') AS reason, any_value(csv_line) AS record,
				coalesce(max(1 + length(csv_line) - length(replace(csv_line, chr(10), ''))), 1) AS span
				FROM %[2]s GROUP BY line)`, rejectedRecords, rejectsTable, headerLines)); err != nil {
			return 0, fmt.Errorf("read rejected lines: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO dead_letters (run_id, source, position, reason, payload, received_at, stream)
			SELECT ?, ?, ? || ':' || first_line,
				reason || CASE WHEN span > 1 THEN '; one record of lines ' || first_line || '–' || (first_line + span - 1) ||
					' (a quote opened on its first line and closed on its last)' ELSE '' END,
				left(record, ?), now(), ?
			FROM `+rejectedRecords, s.env.RunID, s.env.Source, name, connectors.MaxPayload, name); err != nil {
			return 0, fmt.Errorf("dead-letter rejected lines: %w", err)
		}
		// Good row k sits after every line of the rejected records whose good-row count is below k.
		_, err := tx.ExecContext(ctx, fmt.Sprintf(`UPDATE %[1]s SET _seq = %[1]s._ordinal + %[3]d + shift.skipped,
				_position = %[2]s || ':' || (%[1]s._ordinal + %[3]d + shift.skipped)
			FROM (SELECT m._ordinal, sum(r.span) AS skipped FROM %[1]s m JOIN %[4]s r ON r.good_before < m._ordinal GROUP BY m._ordinal) shift
			WHERE %[1]s._ordinal = shift._ordinal`, mapped, warehouse.Quote(name), headerLines, rejectedRecords))
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

// format is the file's format: configured, or told by its name.
func (s *Source) format(path string) string { return cmp.Or(s.cfg.Format, formatOf(path)) }

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

// Check reads every matched file's header without loading anything (ckm validate --connect):
// files that are damaged or cannot be told apart as CSV are problems; the fields each file would
// hand over (nil for JSON Lines, whose records are free-form) are for the mapping to be checked
// against.
func (s *Source) Check(ctx context.Context) (map[string][]string, []string) {
	files, err := expand(s.env.BaseDir, s.cfg.Paths)
	if err != nil {
		return nil, []string{err.Error()}
	}
	if len(files) == 0 && !s.cfg.AllowEmpty {
		return nil, []string{"no file matches " + strings.Join(s.cfg.Paths, ", ")}
	}
	maxLine, err := s.cfg.maxLine()
	if err != nil {
		return nil, []string{err.Error()}
	}
	fields := map[string][]string{}
	var problems []string
	for _, path := range files {
		name := s.displayName(path)
		format := s.format(path)
		cols, problem := s.checkFile(ctx, path, name, format, maxLine)
		switch {
		case problem != "":
			problems = append(problems, name+": "+problem)
		case format != "jsonl":
			fields[name] = cols
		}
	}
	return fields, problems
}

// checkFile reads one file's fields the way a run reads the file, or says why it cannot be read.
func (s *Source) checkFile(ctx context.Context, path, name, format string, maxLine int64) ([]string, string) {
	sc, err := scanFile(path, format != "parquet", maxLine)
	switch {
	case err != nil:
		return nil, err.Error()
	case sc.damage != "":
		return nil, sc.damage
	case sc.empty || format == "jsonl":
		return nil, ""
	}
	dir, err := os.MkdirTemp("", "ckm-file-")
	if err != nil {
		return nil, err.Error()
	}
	defer os.RemoveAll(dir)
	var b connectors.Batch
	damage, err := s.relation(ctx, &b, path, name, dir, format, sc, maxLine)
	switch {
	case err != nil:
		return nil, err.Error()
	case damage != "":
		return nil, damage
	}
	rows, err := s.env.DB.QueryContext(ctx, "SELECT column_name FROM (DESCRIBE SELECT * FROM "+b.Relation+")")
	if err != nil {
		return nil, firstLine(err.Error())
	}
	defer rows.Close()
	var cols []string
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			return nil, err.Error()
		}
		cols = append(cols, c)
	}
	if err := rows.Err(); err != nil {
		return nil, firstLine(err.Error())
	}
	return cols[:len(cols)-1], "" // the last column numbers the records
}
