// Package connectors defines what a source connector is and keeps the registry that
// connector kinds join, like database/sql.Register: a connector package registers its
// kind in init, and importing it (blank import in cmd/ckm) makes the kind available to config.
package connectors

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/ckm-dev/ckm/warehouse"
)

// Querier runs SQL on the warehouse, for connectors that read through DuckDB's own readers
// (read_csv, parquet_schema, sniff_csv). A connector keeps no state of its own there: the
// runtime stores its positions.
type Querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// DistinctNames are the names a connector gives its source's fields in DuckDB, whose names are
// case-insensitive: a name the source gives one field is kept; fields the source names alike
// (a CSV header naming id twice, a query's "ID" and id) are named with their position too,
// "id (column 1)" and "ID (column 3)". A mapping reads each by that name; reading the bare name
// fails the source instead of taking one (DuckDB itself would rename the second ID_1, and a
// field really named ID_1 then ID_1_1).
func DistinctNames(names []string) []string {
	out := slices.Clone(names)
	renamed := make([]bool, len(names))
	// A name by position can meet a name the source gives (a header's "id (column 2)"): that
	// one is then named by position too. Two names by position never meet (their numbers end
	// them), so each round renames at least one name, and at most every name once.
	for {
		seen := map[string]int{}
		for _, n := range out {
			seen[strings.ToLower(n)]++
		}
		done := true
		for i, n := range out {
			if seen[strings.ToLower(n)] > 1 && !renamed[i] {
				out[i], renamed[i], done = fmt.Sprintf("%s (column %d)", names[i], i+1), true, false
			}
		}
		if done {
			return out
		}
	}
}

// MayBeRenamed tells whether one of DuckDB's names for a file's columns could be its rename of
// another (DuckDB renames a name the header repeats, in any capitals: id, ID → id, ID_1): that
// name followed by _ and a number. The header's own names then tell (RenamedFrom).
func MayBeRenamed(names []string) bool {
	for _, n := range names {
		if base, ok := cutNumberSuffix(n); ok && slices.ContainsFunc(names, func(o string) bool { return strings.EqualFold(o, base) }) {
			return true
		}
	}
	return false
}

// RenamedFrom tells whether DuckDB's name for a column is the header's name for it or a rename
// of it (id_1, id_1_1).
func RenamedFrom(name, text string) bool {
	for name != text {
		base, ok := cutNumberSuffix(name)
		if !ok {
			return false
		}
		name = base
	}
	return true
}

// cutNumberSuffix splits name_12 into name; ok is false for a name not ending in _ and digits.
func cutNumberSuffix(name string) (base string, ok bool) {
	i := strings.LastIndexByte(name, '_')
	if i <= 0 || i == len(name)-1 || strings.Trim(name[i+1:], "0123456789") != "" {
		return "", false
	}
	return name[:i], true
}

// ParquetColumns reads a Parquet file's top-level column names, as the file names them (DuckDB
// renames a name the file repeats), from its footer.
func ParquetColumns(ctx context.Context, db Querier, path string) ([]string, error) {
	rows, err := db.QueryContext(ctx, "SELECT name, coalesce(num_children, 0) FROM parquet_schema("+warehouse.Quote(path)+")")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	// The schema is a tree written depth first: the root, then each column with its children.
	var all []string
	var children []int64
	for rows.Next() {
		var name string
		var n int64
		if err := rows.Scan(&name, &n); err != nil {
			return nil, err
		}
		all, children = append(all, name), append(children, n)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var after func(i int) int // the index after the subtree at i
	after = func(i int) int {
		next := i + 1
		for c := int64(0); c < children[i] && next < len(all); c++ {
			next = after(next)
		}
		return next
	}
	var names []string
	for i := 1; len(all) > 0 && i < len(all) && int64(len(names)) < children[0]; i = after(i) {
		names = append(names, all[i])
	}
	return names, nil
}

// Printable is a string a source handed over (a name, a value) as ckm shows it on a terminal or
// in a message: itself, or quoted as Go quotes a string when it holds a character that does
// not print. A line break would otherwise break a message over lines, or forge a line of its
// own, and an escape sequence would be obeyed by the terminal.
func Printable(s string) string {
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

// NameList joins names for a message, each Printable.
func NameList(names []string) string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = Printable(n)
	}
	return strings.Join(out, ", ")
}

// NamedAtColumn tells whether field is DistinctNames' name for a field the source names name,
// in any capitals.
func NamedAtColumn(field, name string) bool {
	base, _, ok := strings.Cut(field, " (column ")
	return ok && strings.EqualFold(base, name)
}

// Env is what a connector is opened with.
type Env struct {
	Source  string // the configured source name, stored as _source and in dead_letters
	Table   string // canonical table the source feeds
	BaseDir string // directory of the config file: relative paths resolve against it
	RunID   string
	DB      Querier // the warehouse, to read files through DuckDB's readers
	// Positions are where each of the source's streams stands: what the connector returned with
	// the last batch of the stream that committed. A connector resumes from them.
	Positions Positions
	Log       *slog.Logger
	// Follow asks a streaming source to keep reading new records in micro-batches until its
	// context ends (continuous ingest) instead of stopping once caught up.
	Follow bool
	// Reload asks the source to read every stream again from its start, each replacing what it
	// loaded (ckm ingest --reload, after a mapping was fixed). Only a source whose Spec says
	// Reloads is asked.
	Reload bool
	// Scratch is a directory for the read's temporary files, removed after it; empty: the
	// system's temporary directory.
	Scratch string
}

// Positions reads the positions the runtime stored for a source, stream → position. A position
// is opaque to the runtime: an offset, a cursor, a file's version, as the connector wrote it.
type Positions interface {
	Load(ctx context.Context) (map[string]string, error)
}

// ErrPositionMoved is what Write returns (wrapped) when a stream's stored position is no longer
// the batch's From: another reader committed it meanwhile. The batch rolled back; a connector
// loads its positions again and rereads from there.
var ErrPositionMoved = errors.New("stream position moved by another reader")

// Source reads what is new in one configured source.
type Source interface {
	// Read hands each batch of new records to w in order and returns once caught up:
	// a nightly run reads a defined, bounded input.
	Read(ctx context.Context, w Writer) error
}

// Writer maps a batch onto the canonical table and commits it with its checkpoint in one transaction.
type Writer interface {
	Write(ctx context.Context, b Batch) (BatchStats, error)
}

// Batch is a set of raw records visible to DuckDB as one SQL relation.
type Batch struct {
	Label string // for logs and errors: a file path, a topic/partition range

	// Relation is read once: a table function (read_csv(...)) or a subquery. Its columns are the
	// source's fields (or a single JSON `payload` column and the connector's metadata) followed
	// by one last column, the record's 1-based number within the batch, in source order (unless
	// Unnumbered). Field names are the source's own and may be anything: the writer renames
	// them by position.
	Relation string
	// Unnumbered says Relation has no record-number column: it is a scan that yields the
	// records in source order (read_csv), and Stream and Seq read no column (Seq only
	// {ordinal}). The writer numbers the records itself, after mapping them on every core: a
	// numbering window (WITH ORDINALITY) above the scan would run the whole mapping on one thread.
	Unnumbered bool
	JSON       bool
	// Records, when set, are the batch's rows, already in memory (a Kafka fetch), laid out as
	// Relation describes: the writer exposes them to SQL and reads them in place of Relation.
	Records arrow.RecordBatch
	// Stream and Seq are SQL expressions over the relation's columns naming each record's stream
	// (a file, a topic/partition) and its number there (line, row, offset); {ordinal} stands for
	// the record's number within the batch. The record's _position is Stream || PositionSep || Seq.
	// Records of one key are ranked by (_source, _stream, _seq): the highest is current.
	Stream, Seq, PositionSep string
	// Unreadable maps a source field to an SQL condition marking records whose value of that
	// field could not be read; such a record is dead-lettered when the mapping reads the field.
	Unreadable map[string]string
	// Rejects are records the connector could not hand over as rows (not UTF-8, oversized): the
	// writer dead-letters them with the batch, and counts them as read.
	Rejects []Reject
	// ReplaceStream, when set, first removes this source's earlier records of that stream (a file
	// that changed replaces its own rows and nothing else) and marks its dead letters superseded.
	ReplaceStream string
	// Replays, when set, is a relation of dead letters (columns position, payload, meta) the
	// batch maps again (Replayer): the writer marks those of the source's current dead letters
	// at their positions superseded, the records still bad becoming dead letters anew, and
	// max_bad_ratio does not count the batch (its bad records were bad already).
	Replays string
	// CSVRejects, when set, says the relation is DuckDB's read_csv storing the lines it rejects
	// (store_rejects=true, rejects_table={rejects_table}, rejects_scan={rejects_scan}): the
	// writer dead-letters them with their true line numbers.
	CSVRejects *CSVRejects
	// LineMarker, when set, is a value the relation's first field holds only on marker rows:
	// lines the reader would pass over without a row or a reject (a CSV file's blank and comment
	// lines), put in as rows so that the records after them are numbered by their true lines.
	// The writer numbers them with the records and then drops them: MarkedLines of them, which
	// are not records and are not counted as read.
	LineMarker  string
	MarkedLines int64
	// Header is the header line the relation's fields were named from, in their order (a CSV
	// file's, as DuckDB trims it): a record that repeats it, as files joined end to end do, is a
	// dead letter, not a record of those words. Nil when the records have no header line.
	Header []string
	// Nested names the fields whose values hold several values though the relation types them
	// as text (a PostgreSQL array or JSON column, read as its text), with the source's type: a
	// column mapped straight from one is a dead letter. Typed relations (Parquet) tell it
	// themselves.
	Nested map[string]string
	// Positions are the streams this batch moves and where to: the runtime stores each in the
	// batch's transaction, only if the stream still stands at From, so a batch is in with its
	// positions or not at all. A batch may carry positions and no records (a file found
	// unchanged under a new modification time).
	Positions []Advance
}

// Advance moves one stream's stored position.
type Advance struct {
	Stream string
	// From is the stored position the batch read on from, as Positions.Load gave it ("" for a
	// stream never stored).
	From string
	To   string
}

// CSVRejects describes a read_csv relation that stores rejected lines.
type CSVRejects struct {
	Stream      string // the file as lineage names it
	HeaderLines int64  // lines of the relation before its first record (skipped lines and the header)
	// LinesBefore are the file's lines before the relation's first: a piece of a file read in
	// pieces starts there (0 for a whole file).
	LinesBefore int64
}

// OversizedHead is what a dead letter keeps of a record over its connector's size limit (a
// message over max_message_bytes, a line over max_line_size): its first bytes, enough to tell
// what it was; a connector need not read more. A record within the limit is kept whole, so that
// its dead letter outlives the source (a topic's retention, a file moved away).
const OversizedHead = 4096

// Reject is a record a connector could not read: where it was, why, and its raw bytes (which the
// writer stores whole, made safe to keep as text; of a record over the connector's size limit,
// only its OversizedHead).
type Reject struct {
	Stream   string
	Seq      int64
	Position string
	Reason   string
	Payload  []byte
	// WholeStream marks a reject that stands for a whole stream that could not be read (a
	// damaged file): a dead letter, but not a record that max_bad_ratio counts.
	WholeStream bool
}

// BatchStats counts what one batch did. Every record read is accounted for:
// Read = Loaded + DeadLettered + Collapsed + Skipped.
type BatchStats struct {
	Read         int64 // records in the batch, good and bad
	Loaded       int64 // records now current in the canonical table
	DeadLettered int64
	Collapsed    int64 // records that gave way to another of the same key: an older version, a line rolled up into its order
	Skipped      int64 // records skipped on purpose: a filter, a blank record
	Replaced     int64 // stored records this batch's took the place of (they move to <table>_superseded)
}

// Add adds o's counts to s.
func (s *BatchStats) Add(o BatchStats) {
	s.Read += o.Read
	s.Loaded += o.Loaded
	s.DeadLettered += o.DeadLettered
	s.Collapsed += o.Collapsed
	s.Skipped += o.Skipped
	s.Replaced += o.Replaced
}

// Backlogger is implemented by streaming sources that can tell how much waits to be read.
type Backlogger interface {
	Backlog(ctx context.Context) ([]Backlog, error)
}

// Backlog is one stream's position (a Kafka partition): the next record a run will read and the
// end of the stream now. Next is -1 for a stream the source has never read.
type Backlog struct {
	Stream    string
	Next, End int64
	Waiting   int64 // records between Next (or the stream's start) and End
}

// Checker is implemented by sources that can be opened and looked at without loading anything
// (`ckm validate --connect`).
type Checker interface {
	// Check opens the source as a run would, loads nothing, and returns what would stop a run
	// (unreachable brokers, missing topics, files that cannot be read), every problem at once,
	// and the fields each stream (a file, a topic) would hand over, for the mapping to be
	// checked against. A stream of JSON documents is listed with no fields (nil): its records'
	// shape is the source's DocumentShape. A stream that would hand over nothing (an empty
	// file) is not listed.
	Check(ctx context.Context) (fields map[string][]StreamField, problems []string)
}

// DocumentShaper is implemented by sources of JSON documents (Batch.JSON), so that the mapping
// can be bound before a run as it is bound over the records (ckm validate --connect).
type DocumentShaper interface {
	// DocumentShape returns a batch of no records whose relation has the columns and types the
	// source's batches of JSON documents have.
	DocumentShape() Batch
}

// StreamField is one field a stream hands over: its name and, when the connector can tell, its DuckDB
// type as the batch's relation has it (a CSV file's fields are VARCHAR, a Parquet file's its
// own), so that the mapping's expressions can be bound as a run binds them; "" when it cannot.
type StreamField = warehouse.Column

// FieldNames lists fields' names.
func FieldNames(fields []StreamField) []string {
	names := make([]string, len(fields))
	for i, f := range fields {
		names[i] = f.Name
	}
	return names
}

// Replayer is implemented by sources whose records can outlive the source (a Kafka topic's
// retention drops them): their dead letters are mapped again from what was kept of them, after
// the mapping was fixed (ckm ingest --replay-dead-letters), without reading the source.
type Replayer interface {
	// Replay returns the batch that reads the dead letters in deadLetters again as the records
	// they were, in their positions: a relation with the columns position, payload (the record
	// as kept) and meta (its fields besides the payload, a JSON object; the mapping's _meta),
	// one row per record.
	Replay(deadLetters string) Batch
}

// ConfigValidator is implemented by connector configs to check themselves; each problem names the key it is about.
type ConfigValidator interface {
	Validate(baseDir string) []FieldProblem
}

// FieldProblem is a problem with one key of a connector's config block.
type FieldProblem struct {
	Key  string // key inside the connector block, e.g. "paths"
	Msg  string
	Hint string
}

// Kind is a registered connector kind.
type Kind struct {
	Name string
	Spec Spec
	// config is the type of the kind's config struct; open opens a source from a pointer to one.
	config reflect.Type
	open   func(ctx context.Context, env Env, cfg any) (Source, error)
}

// NewConfig returns a pointer to a zero config struct of the kind, for its block to be decoded into.
func (k Kind) NewConfig() any { return reflect.New(k.config).Interface() }

// Open opens a source from a config that NewConfig returned and the block was decoded into.
func (k Kind) Open(ctx context.Context, env Env, cfg any) (Source, error) {
	return k.open(ctx, env, cfg)
}

// Check checks a decoded config against the spec (required keys, enums), then lets the config
// check itself when it can (ConfigValidator).
func (k Kind) Check(cfg any, baseDir string) []FieldProblem {
	out := specProblems(k.Spec.Fields, reflect.ValueOf(cfg), "")
	if v, ok := cfg.(ConfigValidator); ok {
		out = append(out, v.Validate(baseDir)...)
	}
	return out
}

var (
	mu       sync.RWMutex
	registry = map[string]Kind{}
)

// Register makes a connector kind available under kind, with its config type C (a struct whose
// yaml keys carry doc tags, see Spec) and the function that opens a source from a decoded
// config. Like database/sql.Register it panics on a nil open or a duplicate kind, and it panics
// when a key of C is not documented: a kind's docs, JSON Schema and validation come from C.
func Register[C any](kind string, spec Spec, open func(ctx context.Context, env Env, cfg C) (Source, error)) {
	if open == nil {
		panic(fmt.Sprintf("connectors: Register %q with a nil open", kind))
	}
	if kind == "" || strings.ContainsAny(kind, " .:\t\n") {
		panic(fmt.Sprintf("connectors: Register with kind %q: a kind is one word (it is a YAML key)", kind))
	}
	var zero C
	fields, err := fieldsOf(reflect.TypeOf(zero))
	if err != nil {
		panic(fmt.Sprintf("connectors: Register %q: %v", kind, err))
	}
	spec.Fields = fields
	k := Kind{Name: kind, Spec: spec, config: reflect.TypeOf(zero),
		open: func(ctx context.Context, env Env, cfg any) (Source, error) { return open(ctx, env, *cfg.(*C)) }}
	mu.Lock()
	defer mu.Unlock()
	if _, dup := registry[kind]; dup {
		panic(fmt.Sprintf("connectors: Register called twice for kind %q", kind))
	}
	registry[kind] = k
}

// Lookup returns the kind registered under name.
func Lookup(name string) (Kind, bool) {
	mu.RLock()
	defer mu.RUnlock()
	k, ok := registry[name]
	return k, ok
}

// Kinds lists the registered kinds, sorted.
func Kinds() []string {
	mu.RLock()
	defer mu.RUnlock()
	out := make([]string, 0, len(registry))
	for k := range registry {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// ParseBytes reads sizes such as 1048576, 512KiB, 1MiB, 2MB, for connector settings.
func ParseBytes(v string) (int, error) {
	units := []struct {
		suffix string
		factor int
	}{{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"kb", 1000}, {"mb", 1000_000}, {"gb", 1000_000_000}, {"b", 1}}
	s := strings.ToLower(strings.TrimSpace(v))
	factor := 1
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			s, factor = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.factor
			break
		}
	}
	var n int
	if _, err := fmt.Sscanf(s, "%d", &n); err != nil || n <= 0 || fmt.Sprint(n) != s {
		return 0, fmt.Errorf("cannot read %q as a size", v)
	}
	return n * factor, nil
}

// MaxBatchBytes bounds a batch's text: batches carry Arrow string arrays, which address their
// bytes with 32-bit offsets (arrow-go checks that only in debug builds: past 2 GiB a batch's
// offsets would wrap), and a batch may run one record past its cap.
const MaxBatchBytes = 1 << 30

// ParseBatchBytes reads a batch_bytes setting: a size of at most MaxBatchBytes.
func ParseBatchBytes(v string) (int, error) {
	n, err := ParseBytes(v)
	if err == nil && n > MaxBatchBytes {
		err = fmt.Errorf("%s is more than a batch can hold (1GiB)", v)
	}
	return n, err
}

// WithoutBOM drops the UTF-8 byte order mark some Windows tools and .NET producers write before
// a document: it is not part of the record.
func WithoutBOM(b []byte) []byte { return bytes.TrimPrefix(b, []byte("\ufeff")) }

// EscapeNotUTF8 is text as the warehouse can store it: s itself when it is UTF-8, otherwise
// with each byte that is not written \xNN (a Latin-1 é from a Windows share or a legacy
// database: caf\xe9). DuckDB takes no other text.
func EscapeNotUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			fmt.Fprintf(&b, `\x%02x`, s[i])
		} else {
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// NotText says why raw bytes are not text DuckDB can store ("" when they are): not UTF-8, or a
// NUL byte. A connector rejects such a record rather than hand it over.
func NotText(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return fmt.Sprintf("holds a NUL byte at offset %d", i)
	}
	if utf8.Valid(b) {
		return ""
	}
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size == 1 {
			return fmt.Sprintf("is not valid UTF-8 (byte 0x%02X at offset %d)", b[i], i)
		}
		i += size
	}
	return "is not valid UTF-8"
}
