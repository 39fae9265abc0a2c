// Package file is the file connector: CSV, JSON Lines and Parquet files, gzip-compressed or
// not, matched by globs and loaded in bulk through DuckDB's own readers. A file already loaded
// with the same size and modification time is skipped unread, one with the same size and
// checksum after hashing; a changed file replaces its own earlier rows.
package file

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ckm-dev/ckm/connectors"
	"github.com/ckm-dev/ckm/warehouse"
)

func init() {
	connectors.Register("file", connectors.Spec{Summary: "CSV, JSON Lines and Parquet files (gzip or zstd compressed or not), matched by globs",
		Reloads: true},
		func(ctx context.Context, env connectors.Env, cfg Config) (connectors.Source, error) {
			return &Source{env: env, cfg: cfg}, nil
		})
}

// Config is a file source's block in config.yaml.
type Config struct {
	Paths           []string   `yaml:"paths" required:"true" doc:"files or globs, relative to the config file" example:"[data/orders*.csv.gz]"`
	Format          string     `yaml:"format" enum:"csv,jsonl,parquet" doc:"the files' format; default: told by each file's name"`
	CSV             CSVOptions `yaml:"csv" doc:"the CSV dialect; DuckDB sniffs whatever is not set"`
	AllowEmpty      bool       `yaml:"allow_empty" default:"false" doc:"a glob that matches nothing is not an error (files arrive later)"`
	MaxLineSize     string     `yaml:"max_line_size" type:"size" default:"2MB" example:"8MiB" doc:"a CSV or JSON Lines line longer than this is a dead letter"`
	BatchSize       int        `yaml:"batch_size" default:"1000000" doc:"JSON Lines go to the warehouse at most this many lines (and batch_bytes) per transaction; a Parquet file loads in one"`
	BatchBytes      string     `yaml:"batch_bytes" type:"size" default:"256MiB" example:"64MiB" doc:"… or at most this much JSON Lines text per transaction, whichever fills first (ckm holds one batch in memory); a CSV file larger than this (128MiB unless set) loads in pieces of about this size, a transaction each, whole lines, each record keeping its line; at most 1GiB"`
	VerifyUnchanged bool       `yaml:"verify_unchanged" default:"false" doc:"hash every file on every run, even when its size and modification time match what was loaded (for tools that rewrite files keeping both)"`
}

// CSVOptions set the CSV dialect.
type CSVOptions struct {
	Delimiter string `yaml:"delimiter" example:";" doc:"the field separator"`
	Quote     string `yaml:"quote" example:"\"" doc:"the quote character"`
	Escape    string `yaml:"escape" example:"\\" doc:"the character that escapes a quote inside a quoted value"`
	Header    *bool  `yaml:"header" example:"true" doc:"whether the first line names the columns"`
	Encoding  string `yaml:"encoding" enum:"utf-8,windows-1252,latin-1,iso-8859-15,utf-16" doc:"the files' character encoding, read into UTF-8 before loading (windows-1252: Excel's CSV on Western European Windows; utf-16: either byte order, told by the byte order mark); default utf-8, or utf-16 for a file that starts with a UTF-16 byte order mark"`
}

// defaultMaxLine is DuckDB's own default maximum line size.
const defaultMaxLine = 2_000_000

// maxLine is the configured maximum line size in bytes.
func (c *Config) maxLine() (int64, error) {
	n, err := sizeOr(c.MaxLineSize, defaultMaxLine, connectors.ParseBytes)
	return int64(n), err
}

// defaultBatchBytes caps a JSON Lines batch: mapping the 1M bench's 1.6 GB of feedback took
// 45.9 s in 64 MiB batches and 38.1 s in 256 MiB ones (fewer, larger batches for DuckDB's
// threads to share, fewer commits and merges), at a lower peak RSS (1.7–2.0 against 2.2 GB).
const defaultBatchBytes = 256 << 20

// defaultPieceBytes sizes a CSV file's pieces: a piece's mapped records stay in DuckDB's memory
// until they commit. Loading the 1M bench's 1.7 GB orders file peaked at 3.7 GB whole, 1.37 GB
// in 256 MiB pieces, 1.04 GB in 128 MiB ones and 0.92 GB in 64 MiB ones (read_csv into a table:
// 0.79 GB), and took 13% longer in 64 MiB pieces than in 256 MiB ones.
const defaultPieceBytes = 128 << 20

// batchBytes is the configured cap on a JSON Lines batch's text, in bytes.
func (c *Config) batchBytes() (int, error) {
	return sizeOr(c.BatchBytes, defaultBatchBytes, connectors.ParseBatchBytes)
}

// pieceBytes is the size a larger CSV file's pieces are cut at, in bytes.
func (c *Config) pieceBytes() (int, error) {
	return sizeOr(c.BatchBytes, defaultPieceBytes, connectors.ParseBatchBytes)
}

// sizeOr reads a configured size with parse, def when it is not set.
func sizeOr(v string, def int, parse func(string) (int, error)) (int, error) {
	if v == "" {
		return def, nil
	}
	return parse(v)
}

// Validate checks what the spec cannot: sizes, and that the paths match files.
func (c *Config) Validate(baseDir string) []connectors.FieldProblem {
	var out []connectors.FieldProblem
	if _, err := c.maxLine(); err != nil {
		out = append(out, connectors.FieldProblem{Key: "max_line_size", Msg: err.Error(), Hint: "e.g. 2MB, 8MiB"})
	}
	if _, err := c.batchBytes(); err != nil {
		out = append(out, connectors.FieldProblem{Key: "batch_bytes", Msg: err.Error(), Hint: "e.g. 64MiB, 256MiB (the default), at most 1GiB"})
	}
	if c.BatchSize < 0 {
		out = append(out, connectors.FieldProblem{Key: "batch_size", Msg: fmt.Sprintf("%d is negative", c.BatchSize), Hint: "leave it out for 1000000"})
	}
	for _, p := range c.Paths {
		files, unreadable, err := expand(baseDir, []string{p})
		switch {
		case err != nil:
			out = append(out, connectors.FieldProblem{Key: "paths", Msg: err.Error()})
		case len(files) == 0 && len(unreadable) > 0 && !c.AllowEmpty:
			out = append(out, connectors.FieldProblem{Key: "paths", Msg: fmt.Sprintf("no file matching %q can be read: %s", p, strings.Join(unreadable, "; "))})
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
	files, unreadable, err := expand(s.env.BaseDir, s.cfg.Paths)
	if err != nil {
		return err
	}
	for _, u := range unreadable {
		s.env.Log.Warn("matched but not read", "problem", u)
	}
	if len(files) == 0 && !s.cfg.AllowEmpty {
		return fmt.Errorf("no file matches %s", strings.Join(s.cfg.Paths, ", "))
	}
	positions, err := s.env.Positions.Load(ctx)
	if err != nil {
		return err
	}
	for _, path := range files {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := s.readFile(ctx, w, path, positions); err != nil {
			return err
		}
	}
	return nil
}

// version is a file's position: the version of it that was loaded, as the runtime stores it.
type version struct {
	Size       int64  `json:"size"`
	ModifiedNS *int64 `json:"modified_ns"` // nil while the file may still change without its time moving
	Checksum   string `json:"checksum"`
	Damage     string `json:"damage,omitempty"`
	// NextLine is, while the version is partial, the line the next batch starts at: a load that
	// stopped there resumes there if the file has not changed.
	NextLine int64 `json:"next_line,omitempty"`
}

// stored is what the stored position says of a file: the version loaded, and the position as
// stored (a batch moves the file on from exactly it).
type stored struct {
	version
	known    bool
	position string
}

func storedVersion(positions map[string]string, name string) (stored, error) {
	pos, ok := positions[name]
	if !ok {
		return stored{}, nil
	}
	st := stored{known: true, position: pos}
	if err := json.Unmarshal([]byte(pos), &st.version); err != nil {
		return st, fmt.Errorf("read stored position of %s: %w", name, err)
	}
	return st, nil
}

// sameStat tells whether the file's size and modification time are those of the version loaded
// (a load that stopped half-way stored a "partial:" checksum and never matches).
func (st stored) sameStat(info os.FileInfo) bool {
	return st.known && st.Size == info.Size() && st.ModifiedNS != nil && *st.ModifiedNS == info.ModTime().UnixNano() &&
		!strings.HasPrefix(st.Checksum, partial)
}

// settledModTime is the modification time to trust a file's stat by later, or NULL while the
// file may still change without its time moving: file systems stamp times at a coarse clock
// tick (FAT at 2 s), so a file rewritten with the same size within the tick of its last write
// would keep its time. A time this recent is not stored, and the next run hashes the file (as
// git does for "racily clean" entries).
func settledModTime(info os.FileInfo, now time.Time) *int64 {
	const tick = 2 * time.Second
	if now.Sub(info.ModTime()) < tick {
		return nil
	}
	ns := info.ModTime().UnixNano()
	return &ns
}

// partial prefixes the checksum stored with a file's batches until its last one commits.
const partial = "partial:"

// resumesAt is the line a load of the file that stopped half-way resumes at, 0 for none: the
// file is the one whose first batches committed, and still has that line.
func (st stored) resumesAt(sc scan) int64 {
	if !st.known || st.Checksum != partial+sc.checksum || st.Size != sc.size || st.NextLine > sc.crlf+sc.lf+1 {
		return 0
	}
	return st.NextLine
}

// unchanged logs that a file is skipped as it was loaded (or left unloaded, when damaged).
func (s *Source) unchanged(name string, old stored, how string) {
	if old.Damage != "" {
		s.env.Log.Warn("file still damaged, not loaded (it is read again once it changes)", "file", name, "damage", old.Damage)
		return
	}
	s.env.Log.Debug("file unchanged, skipped", "file", name, "by", how)
}

func (s *Source) readFile(ctx context.Context, w connectors.Writer, path string, positions map[string]string) error {
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
	old, err := storedVersion(positions, name)
	if err != nil {
		return err
	}
	// A reload reads a loaded file again; a damaged one would only be damaged again.
	reload := s.env.Reload && old.known && old.Damage == ""
	if !reload && !s.cfg.VerifyUnchanged && old.sameStat(info) {
		s.unchanged(name, old, "size and modification time")
		return nil
	}
	sc, err := scanFile(path, format != "parquet" && s.csvDecoder(format, scan{}) == nil, maxLine)
	if err != nil {
		return err
	}
	decoder := s.csvDecoder(format, sc)
	sc.modifiedNS = settledModTime(info, time.Now())
	if !reload && old.known && old.Size == sc.size && old.Checksum == sc.checksum {
		// Touched or copied, not changed: remember the new time so the next run need not hash it.
		touched := old.version
		touched.ModifiedNS = sc.modifiedNS
		if _, err := w.Write(ctx, connectors.Batch{Label: name, Positions: []connectors.Advance{{Stream: name, From: old.position, To: touched.position()}}}); err != nil {
			return fmt.Errorf("record modification time of %s: %w", name, err)
		}
		s.unchanged(name, old, "checksum")
		return nil
	}
	b := connectors.Batch{Label: name, Stream: warehouse.Quote(name), PositionSep: ":"}
	dir, err := os.MkdirTemp(s.env.Scratch, "file-")
	if err != nil {
		return fmt.Errorf("read %s: %w", name, err)
	}
	defer os.RemoveAll(dir)
	source := path // what DuckDB reads: the file, or its UTF-8 copy
	if decoder != nil && !sc.empty {
		if source, sc, err = inUTF8(path, dir, decoder, sc, maxLine); err != nil {
			return fmt.Errorf("read %s: %w", name, err)
		}
	}
	damage := sc.damage
	resume := old.resumesAt(sc)
	if reload {
		resume = 0 // read whole, replacing what a stopped load committed too
	}
	var csv *csvRead
	if damage == "" && !sc.empty && format != "jsonl" {
		if csv, damage, err = s.relation(ctx, &b, source, name, dir, format, sc, maxLine); err != nil {
			return err
		}
	}
	switch {
	case damage != "":
		// The file's earlier rows stay; the damage is one dead letter, and the file is read
		// again when it changes (a file still being written, or sent again whole).
		s.env.Log.Error("file damaged, not loaded", "file", name, "damage", damage)
		b = connectors.Batch{Label: name, Rejects: []connectors.Reject{{Stream: name, Position: name,
			Reason: damage + ": the file was not loaded; it is read again once the file changes", WholeStream: true}}}
	case resume > 0:
		s.env.Log.Info("resuming the file's load where it stopped", "file", name, "line", resume)
	case old.known:
		// A changed file replaces its earlier rows; an emptied one takes them with it (an empty
		// file has no relation: DuckDB would invent a column). So does a reloaded one.
		b.ReplaceStream = name
		why := "file changed, reloading its rows"
		if reload {
			why = "reloading the file's rows as asked"
		}
		s.env.Log.Info(why, "file", name)
	}
	advance := advancer(name, old.position, version{Size: sc.size, ModifiedNS: sc.modifiedNS, Checksum: sc.checksum, Damage: damage})
	if format == "jsonl" && damage == "" && !sc.empty {
		return s.readJSONLines(ctx, w, path, sc.utf16, b, maxLine, resume, advance)
	}
	if csv != nil && damage == "" {
		pieceBytes, err := s.cfg.pieceBytes()
		if err != nil {
			return err
		}
		if resume > 0 || sc.textBytes > int64(pieceBytes) {
			return s.readCSVPieces(ctx, w, b, *csv, dir, pieceBytes, resume, advance)
		}
	}
	b.Positions = advance(0)
	_, err = w.Write(ctx, b)
	return err
}

// position is the version as the runtime stores it.
func (v version) position() string {
	out, _ := json.Marshal(v) // a struct of plain fields always marshals
	return string(out)
}

// advancer moves a file's position with each of its batches to the version being loaded: until
// the final batch, a partial version that says where the next batch starts (next, 0 after the
// final batch), so that a load that stopped half-way resumes there, or, once the file changed,
// reads it again whole (replacing its first batches' rows).
func advancer(name, from string, v version) func(next int64) []connectors.Advance {
	return func(next int64) []connectors.Advance {
		to := v
		if next > 0 {
			to.Checksum, to.NextLine = partial+v.Checksum, next
		}
		a := connectors.Advance{Stream: name, From: from, To: to.position()}
		from = a.To // the next batch moves on from this one's
		return []connectors.Advance{a}
	}
}

// relation sets the batch's relation over the whole file, or returns why the file cannot be read
// as a whole (a Parquet footer DuckDB cannot read, a CSV file whose dialect cannot be told). For
// a CSV file it also returns how DuckDB reads it, which may be in pieces.
func (s *Source) relation(ctx context.Context, b *connectors.Batch, path, name, dir, format string, sc scan, maxLine int64) (csv *csvRead, damage string, err error) {
	target, err := readable(path, dir, sc)
	if err != nil {
		return nil, "", fmt.Errorf("read %s: %w", name, err)
	}
	switch format {
	case "csv":
		r, damage, err := s.sniffCSV(ctx, target, dir, sc, maxLine)
		if err != nil {
			return nil, "", fmt.Errorf("read %s: %w", name, err)
		}
		if damage != "" {
			return nil, damage, nil
		}
		r.batch(b, r.target, 1, r.marked)
		return &r, "", nil
	case "parquet":
		names, damage := s.parquetColumns(ctx, target)
		if damage != "" {
			return nil, damage, nil
		}
		// DuckDB renames a name the file repeats (cust, Cust → cust, Cust_1; a real cust_1 then
		// becomes cust_1_1): such columns are named by position instead, as a CSV header's are.
		renamed := ""
		if byPosition := connectors.DistinctNames(names); !slices.Equal(byPosition, names) {
			idents := make([]string, len(byPosition))
			for i, n := range byPosition {
				idents[i] = warehouse.Ident(n)
			}
			renamed = " AS named(" + strings.Join(idents, ", ") + ")"
		}
		// DuckDB's file_row_number is exact and cheap, but not for a file with a column of that name.
		b.Relation = fmt.Sprintf("read_parquet(%s, file_row_number=true)", warehouse.Quote(target))
		if renamed != "" {
			b.Relation = "(SELECT * FROM " + b.Relation + renamed + ")"
		}
		b.Seq, b.PositionSep = "{ordinal} + 1", ":row "
		if slices.ContainsFunc(names, func(n string) bool { return strings.EqualFold(n, "file_row_number") }) {
			b.Relation = fmt.Sprintf("(SELECT * FROM read_parquet(%s) WITH ORDINALITY%s)", warehouse.Quote(target), renamed)
			b.Seq = "{ordinal}"
		}
	default:
		return nil, "", fmt.Errorf("%s: unknown format %q", name, format)
	}
	return nil, "", nil
}

// globMeta are the characters DuckDB's readers expand in a path.
const globMeta = "*?[]{}\\"

// readable is a path DuckDB reads as exactly this file's content: the file itself, a link to it
// in dir when its name holds characters DuckDB would expand as a glob (orders[1].csv,
// orders_*.csv), is not UTF-8 (DuckDB takes no such text), or does not say how it is compressed
// (DuckDB tells that by the name alone), or
// a copy with \n line endings when it mixes \r\n and \n.
func readable(path, dir string, sc scan) (string, error) {
	ext := ""
	for _, e := range []string{".csv", ".tsv", ".txt", ".jsonl", ".ndjson", ".json", ".parquet"} {
		if i := strings.LastIndex(strings.ToLower(path), e); i >= 0 {
			ext = strings.ToLower(path[i:])
			break
		}
	}
	plain := strings.TrimSuffix(strings.TrimSuffix(ext, ".gz"), ".zst")
	if sc.mixedEndings() {
		normalized := filepath.Join(dir, "normalized"+plain)
		return normalized, writeNormalized(path, normalized)
	}
	named := strings.HasSuffix(strings.ToLower(path), compressedSuffix[sc.compression])
	if !strings.ContainsAny(path, globMeta) && named && utf8.ValidString(path) {
		return path, nil
	}
	link := filepath.Join(dir, "file"+plain+compressedSuffix[sc.compression])
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	return link, os.Symlink(abs, link)
}

// parquetColumns reads a Parquet file's top-level column names from its footer: a file DuckDB
// cannot read it from is damaged.
func (s *Source) parquetColumns(ctx context.Context, target string) (names []string, damage string) {
	names, err := connectors.ParquetColumns(ctx, s.env.DB, target)
	if err != nil {
		return nil, "truncated or corrupt Parquet: " + firstLine(err.Error())
	}
	return names, ""
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// dialect is how a CSV file is written, as DuckDB's sniffer read it.
type dialect struct {
	delim, quote, escape, comment string
	header                        bool
	skip                          int64
	// columns name the fields as ckm hands them over; headerText is the header line's own
	// names (nil without a header). They differ only where the header names a column more than
	// once (see connectors.DistinctNames).
	columns, headerText []string
}

// sniff asks DuckDB how the file is written, with the configured settings fixed. A file whose
// first lines include one longer than the maximum is sniffed from a sample without such lines
// (DuckDB's sniffer gives up on them).
func (s *Source) sniff(ctx context.Context, target, dir string, sc scan, maxLine int64) (dialect, error) {
	sample := filepath.Join(dir, "sample.csv")
	if err := os.WriteFile(sample, sc.sample, 0o600); err != nil {
		return dialect{}, err
	}
	var hinted []string // a first line `sep=;` is no record; a configured delimiter wins over it
	if sep := excelSeparator(sc.sample); sep != "" {
		hinted = append(hinted, "skip=1")
		if s.cfg.CSV.Delimiter == "" {
			hinted = append(hinted, "delim="+warehouse.Quote(sep))
		}
	}
	d, err := s.sniffFile(ctx, target, maxLine, hinted...)
	if err != nil && sc.longest > maxLine && len(sc.sample) > 0 {
		d, err = s.sniffFile(ctx, sample, maxLine, hinted...)
	}
	if err != nil || d.quote != "" || s.cfg.CSV.Quote != "" {
		return d, err
	}
	// DuckDB's sniffer gives up quoting for the whole file when one quote in its sample is never
	// closed: values then keep their quotes, and a quoted comma splits a value. Quote as CSV
	// does unless the sample reads with fewer rejected lines without. (A sample without a single
	// double quote tells nothing: quote, so a quoted value further down is read as one value.)
	if !sc.quoted && sc.wholeSample {
		// No double quote in the whole file: sniffing it again quoting reads the same bytes the
		// same way (a file of 10 lines took 9 ms of its 40 ms to sniff twice).
		d.quote, d.escape = `"`, `"`
		return d, nil
	}
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

// excelSeparator is the delimiter a CSV file names on its first line as `sep=;`, the hint Excel
// reads and some exporters write for it ("" when the file has none). DuckDB's sniffer would take
// that line for a one-column header.
func excelSeparator(sample []byte) string {
	line, _, _ := bytes.Cut(connectors.WithoutBOM(sample), []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	if len(line) < 5 || !strings.EqualFold(string(line[:4]), "sep=") {
		return ""
	}
	sep := string(line[4:])
	if utf8.RuneCountInString(sep) != 1 || !utf8.ValidString(sep) || strings.ContainsAny(sep, "\"\r") {
		return ""
	}
	return sep
}

// rejectedBothWays counts the sample's lines DuckDB rejects when it reads them quoting with a
// double quote, and not quoting.
func (s *Source) rejectedBothWays(ctx context.Context, sample string, d dialect, maxLine int64) (with, without int64, err error) {
	for i, quote := range []string{`"`, ""} {
		q := fmt.Sprintf(`SELECT count(*) FROM read_csv(%s, auto_detect=false, delim=%s, quote=%s, escape=%s, header=%t, skip=%d,
			columns={%s}, max_line_size=%d, store_rejects=true, rejects_table='ckm_sniff_rejects', rejects_scan='ckm_sniff_scan'%s)`,
			warehouse.Quote(sample), warehouse.Quote(d.delim), warehouse.Quote(quote), warehouse.Quote(quote), d.header, d.skip,
			varcharColumns(d.columns), maxLine, strings.Join(append([]string{""}, bufferFor(sample, maxLine)...), ", "))
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

// duckdbCSVBuffer is the buffer DuckDB's CSV reader allocates whole for each read of a file
// unless told otherwise.
const duckdbCSVBuffer = 32 << 20

// bufferFor is read_csv's buffer_size option for a small plain file: twice the file (it must
// also exceed max_line_size). A freed block larger than the allocator's flush threshold goes back
// to the system (warehouse.go), so every read of a small file faulted in DuckDB's 32 MiB buffer
// afresh: each file is read three or four times (sniffed, described, mapped), and loading 50
// files of 10 lines took 3.5–3.9 s against 2.1–2.2 s with the buffer sized to the file.
// The buffer must hold the whole file: DuckDB 1.5 reading content larger than a buffer_size
// smaller than its default fails ("does not support a full read"), or with rejects kept drops
// rows without a word (3 of 699,999 lines of a 15 MB gzip file). So a compressed file, whose
// content outgrows its size, keeps the default, and the room to spare covers a file still
// being written between this look and DuckDB's read.
func bufferFor(path string, maxLine int64) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil || 2*info.Size() >= duckdbCSVBuffer || compressionOf(path, bufio.NewReader(f)) != "" {
		return nil
	}
	return []string{fmt.Sprintf("buffer_size=%d", max(2*info.Size(), maxLine+1))}
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
	opts := append([]string{warehouse.Quote(path), fmt.Sprintf("max_line_size=%d", maxLine), "ignore_errors=true"}, bufferFor(path, maxLine)...)
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

// headerNames sets the names of a file's columns from its header line. DuckDB's sniffer
// renames a name the header repeats, case aside (id, name, ID → id, name, ID_1), and then a
// column really named ID_1 becomes ID_1_1: a mapping reading id or ID_1 would take a column the
// header does not give that name, without a word. Where the sniffed names show such a rename,
// the header line is read as it is written, each name the header holds once keeps it, and the
// columns it names more than once are named by position, "id (column 1)" and "ID (column 3)":
// a mapping reading id then fails naming both, and reads either by its position.
func (s *Source) headerNames(ctx context.Context, target string, d dialect, maxLine int64) (dialect, error) {
	if !d.header {
		return d, nil
	}
	d.headerText = d.columns
	if !connectors.MayBeRenamed(d.columns) {
		return d, nil
	}
	opts := []string{warehouse.Quote(target), "auto_detect=false", "header=false", fmt.Sprintf("skip=%d", d.skip),
		"delim=" + warehouse.Quote(d.delim), "quote=" + warehouse.Quote(d.quote), "escape=" + warehouse.Quote(d.escape),
		"columns={" + varcharColumns(positional(len(d.columns))) + "}", fmt.Sprintf("max_line_size=%d", maxLine), "ignore_errors=true"}
	if d.comment != "" {
		opts = append(opts, "comment="+warehouse.Quote(d.comment))
	}
	opts = append(opts, bufferFor(target, maxLine)...)
	raw := make([]sql.NullString, len(d.columns))
	dest := make([]any, len(raw))
	for i := range raw {
		dest[i] = &raw[i]
	}
	err := s.env.DB.QueryRowContext(ctx, "SELECT * FROM read_csv("+strings.Join(opts, ", ")+") LIMIT 1").Scan(dest...)
	if errors.Is(err, sql.ErrNoRows) {
		return d, nil
	}
	if err != nil {
		return d, err
	}
	text := make([]string, len(raw))
	for i, r := range raw {
		// DuckDB trims spaces from a header's names, and names a nameless column column<i>.
		text[i] = cmp.Or(strings.Trim(r.String, " "), d.columns[i])
		if !connectors.RenamedFrom(d.columns[i], text[i]) {
			return d, nil // not the line the sniffer read its names from: keep its names
		}
	}
	d.headerText, d.columns = text, connectors.DistinctNames(text)
	return d, nil
}

// positional names n columns c1 … cn, for a read that takes no names from the file.
func positional(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("c%d", i+1)
	}
	return names
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

// csvRead is how DuckDB reads a CSV file: every field as text (the mapping casts them) in the
// dialect DuckDB sniffed, fixed, so that a line DuckDB cannot parse (wrong column count, broken
// quoting, not UTF-8, longer than max_line_size) is kept in a rejects table with its line number
// instead of failing the file.
type csvRead struct {
	target  string // the file DuckDB reads: the file, or a copy of it (see readable, markSkippedLines)
	d       dialect
	maxLine int64
	// headerLines are the lines before the first record: the skipped lines, the comment lines
	// right after them (leading), the header.
	headerLines, leading int64
	marker               string // the value of marker rows (connectors.Batch.LineMarker), if the target has any
	marked               int64
}

// sniffCSV tells how the CSV file is written and marks its blank and comment lines. A file whose
// dialect cannot be told at all is damaged: it returns why.
func (s *Source) sniffCSV(ctx context.Context, target, dir string, sc scan, maxLine int64) (r csvRead, damage string, err error) {
	d, err := s.sniff(ctx, target, dir, sc, maxLine)
	if err != nil {
		return r, "cannot tell how the CSV file is written: " + firstLine(err.Error()), nil
	}
	if d, err = s.headerNames(ctx, target, d, maxLine); err != nil {
		return r, "", fmt.Errorf("read its header: %w", err)
	}
	r = csvRead{target: target, d: d, maxLine: maxLine, headerLines: d.skip}
	if d.header {
		r.headerLines++
	}
	if sc.blankLines > 0 || d.comment != "" {
		marker, marked := lineMarker(d), filepath.Join(dir, "marked.csv")
		n, leading, err := markSkippedLines(target, marked, d, d.skip, marker, len(d.columns))
		if err != nil {
			return r, "", fmt.Errorf("mark its blank and comment lines: %w", err)
		}
		if n > 0 {
			r.target, r.marker, r.marked = marked, marker, n
		}
		r.leading = leading // comment lines before the header, which the reader passes over
		r.headerLines += leading
	}
	return r, "", nil
}

// batch sets b to read path: the whole target (firstLine 1), or a piece of it that starts at the
// target's line firstLine and holds marked marker rows.
func (r csvRead) batch(b *connectors.Batch, path string, firstLine, marked int64) {
	header, skip, headerLines := r.d.header, r.d.skip, r.headerLines
	if firstLine > 1 {
		header, skip, headerLines = false, 0, 0
	}
	opts := []string{warehouse.Quote(path), "auto_detect=false", "delim=" + warehouse.Quote(r.d.delim), "quote=" + warehouse.Quote(r.d.quote),
		"escape=" + warehouse.Quote(r.d.escape), fmt.Sprintf("header=%t", header), fmt.Sprintf("skip=%d", skip),
		"columns={" + varcharColumns(r.d.columns) + "}", fmt.Sprintf("max_line_size=%d", r.maxLine),
		"store_rejects=true", "rejects_table={rejects_table}", "rejects_scan={rejects_scan}"}
	opts = append(opts, bufferFor(path, r.maxLine)...)
	if r.d.comment != "" {
		opts = append(opts, "comment="+warehouse.Quote(r.d.comment))
	}
	b.Relation, b.Unnumbered, b.Header = "read_csv("+strings.Join(opts, ", ")+")", true, r.d.headerText
	b.Seq = fmt.Sprintf("{ordinal} + %d", headerLines+firstLine-1)
	b.CSVRejects = &connectors.CSVRejects{Stream: b.Label, HeaderLines: headerLines, LinesBefore: firstLine - 1}
	b.LineMarker, b.MarkedLines = "", 0
	if marked > 0 {
		b.LineMarker, b.MarkedLines = r.marker, marked
	}
}

// displayName is the path as stored in lineage and as the file's stream: relative to the config
// directory when inside it, so a moved checkout keeps its ingest state, and escaped where it is
// not UTF-8 (a name from a Windows share; DuckDB takes no other text).
func (s *Source) displayName(path string) string { return nameIn(s.env.BaseDir, path) }

func nameIn(baseDir, path string) string {
	if rel, err := filepath.Rel(baseDir, path); err == nil && !strings.HasPrefix(rel, "..") {
		return connectors.EscapeNotUTF8(filepath.ToSlash(rel))
	}
	return connectors.EscapeNotUTF8(path)
}

// expand resolves globs against baseDir into a sorted, de-duplicated list of files, and lists the
// matches that are not files to read (a named pipe would block the read for good; a link to
// nothing is a file that did not arrive). Directories are left out silently: "data/*" matches
// them as a matter of course.
func expand(baseDir string, patterns []string) (files []string, unreadable []string, err error) {
	seen := map[string]bool{}
	for _, p := range patterns {
		if !filepath.IsAbs(p) {
			p = filepath.Join(baseDir, p)
		}
		matches, err := filepath.Glob(p)
		if err != nil {
			return nil, nil, fmt.Errorf("bad glob %q: %w", p, err)
		}
		for _, m := range matches {
			if seen[m] {
				continue
			}
			seen[m] = true
			name := connectors.Printable(nameIn(baseDir, m))
			st, err := os.Stat(m)
			switch {
			case err != nil:
				unreadable = append(unreadable, fmt.Sprintf("%s cannot be read: %s", name, statProblem(m, err)))
			case st.Mode().IsRegular():
				files = append(files, m)
			case !st.IsDir():
				unreadable = append(unreadable, fmt.Sprintf("%s is not a regular file but a %s", name, fileKind(st.Mode())))
			}
		}
	}
	// Two files stored under one name (caf\xe9.csv beside a file whose name is not UTF-8) would
	// be one stream, each replacing the other's rows: neither is read.
	byName := map[string][]string{}
	for _, f := range files {
		name := nameIn(baseDir, f)
		byName[name] = append(byName[name], f)
	}
	files = files[:0]
	for name, same := range byName {
		if len(same) == 1 {
			files = append(files, same[0])
		} else {
			unreadable = append(unreadable, fmt.Sprintf("%d files are stored under the name %s (one of them not named in UTF-8): rename one",
				len(same), connectors.Printable(name)))
		}
	}
	sort.Strings(files)
	sort.Strings(unreadable)
	return files, unreadable, nil
}

// statProblem says why a matched name cannot be read, naming a link's missing target.
func statProblem(path string, err error) string {
	if target, linkErr := os.Readlink(path); linkErr == nil && errors.Is(err, fs.ErrNotExist) {
		return fmt.Sprintf("it links to %s, which does not exist", target)
	}
	var pathErr *fs.PathError
	if errors.As(err, &pathErr) {
		return pathErr.Err.Error()
	}
	return err.Error()
}

func fileKind(mode fs.FileMode) string {
	switch {
	case mode&fs.ModeNamedPipe != 0:
		return "named pipe"
	case mode&fs.ModeSocket != 0:
		return "socket"
	case mode&fs.ModeDevice != 0:
		return "device"
	}
	return "special file (" + mode.Type().String() + ")"
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
func (s *Source) Check(ctx context.Context) (map[string][]connectors.StreamField, []string) {
	files, unreadable, err := expand(s.env.BaseDir, s.cfg.Paths)
	if err != nil {
		return nil, []string{err.Error()}
	}
	problems := unreadable
	if len(files) == 0 && len(unreadable) == 0 && !s.cfg.AllowEmpty {
		return nil, []string{"no file matches " + strings.Join(s.cfg.Paths, ", ")}
	}
	maxLine, err := s.cfg.maxLine()
	if err != nil {
		return nil, []string{err.Error()}
	}
	fields := map[string][]connectors.StreamField{}
	for _, path := range files {
		name := s.displayName(path)
		format := s.format(path)
		cols, records, problem := s.checkFile(ctx, path, name, format, maxLine)
		switch {
		case problem != "":
			problems = append(problems, name+": "+problem)
		case records:
			fields[name] = cols // none for JSON Lines: documents
		}
	}
	return fields, problems
}

// checkFile reads one file's fields the way a run reads the file, or says why it cannot be read;
// records says the file has any (a run reads nothing of an empty file, whatever the mapping).
func (s *Source) checkFile(ctx context.Context, path, name, format string, maxLine int64) (fields []connectors.StreamField, records bool, problem string) {
	sc, err := scanFile(path, format != "parquet", maxLine)
	switch {
	case err != nil:
		return nil, false, err.Error()
	case sc.damage != "":
		return nil, false, sc.damage
	case sc.empty:
		return nil, false, ""
	case format == "jsonl":
		return nil, true, ""
	}
	fields, problem = s.describeFile(ctx, path, name, format, sc, maxLine)
	return fields, true, problem
}

// describeFile reads a file's fields with their types the way a run reads the file.
func (s *Source) describeFile(ctx context.Context, path, name, format string, sc scan, maxLine int64) ([]connectors.StreamField, string) {
	dir, err := os.MkdirTemp(s.env.Scratch, "file-")
	if err != nil {
		return nil, err.Error()
	}
	defer os.RemoveAll(dir)
	if decoder := s.csvDecoder(format, sc); decoder != nil {
		if path, sc, err = inUTF8(path, dir, decoder, sc, maxLine); err != nil {
			return nil, err.Error()
		}
		if sc.damage != "" {
			return nil, sc.damage
		}
	}
	var b connectors.Batch
	_, damage, err := s.relation(ctx, &b, path, name, dir, format, sc, maxLine)
	switch {
	case err != nil:
		return nil, err.Error()
	case damage != "":
		return nil, damage
	}
	// Describing reads only the header: the rejects tables are named but never filled.
	relation := strings.NewReplacer("{rejects_table}", "'ckm_check_rejects'", "{rejects_scan}", "'ckm_check_scan'").Replace(b.Relation)
	cols, err := warehouse.Describe(ctx, s.env.DB, "SELECT * FROM "+relation)
	if err != nil {
		return nil, firstLine(err.Error())
	}
	if !b.Unnumbered {
		cols = cols[:len(cols)-1] // the last column numbers the records
	}
	return cols, ""
}
