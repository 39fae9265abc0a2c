// Package connectors defines what a source connector is and keeps the registry that
// connector kinds join, like database/sql.Register: a connector package registers its
// kind in init, and importing it (blank import in cmd/ckm) makes the kind available to config.
package connectors

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/apache/arrow-go/v18/arrow"
)

// Querier runs SQL on the warehouse connection; inside Batch hooks it is bound to the batch's transaction.
type Querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Env is what a connector is opened with.
type Env struct {
	Source  string // the configured source name, stored as _source and in dead_letters
	Table   string // canonical table the source feeds
	BaseDir string // directory of the config file: relative paths resolve against it
	RunID   string
	DB      Querier // the warehouse, to read the connector's own checkpoint state
	Log     *slog.Logger
	// Follow asks a streaming source to keep reading new records in micro-batches until its
	// context ends (continuous ingest) instead of stopping once caught up.
	Follow bool
}

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
	// by one last column, the record's 1-based number within the batch, in source order. Field
	// names are the source's own and may be anything: the writer renames them by position.
	Relation string
	JSON     bool
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

	// AfterScan runs in the batch's transaction once the relation has been read and mapped
	// into the temp table `mapped`, before anything is merged: a connector records rows its
	// reader rejected itself and may correct lineage. It returns how many it dead-lettered.
	AfterScan func(ctx context.Context, tx Querier, mapped string) (deadLettered int64, err error)
	// Checkpoint records the connector's progress in the same transaction as the rows.
	Checkpoint func(ctx context.Context, tx Querier, stats BatchStats) error
}

// MaxPayload bounds what a dead letter keeps of a raw record: a connector need not read more.
const MaxPayload = 4096

// Reject is a record a connector could not read: where it was, why, and its raw bytes (which the
// writer stores bounded and made safe to keep as text).
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
	// and the fields each stream (a file) would hand over, for the mapping to be checked
	// against; a stream of free-form records (JSON) has none.
	Check(ctx context.Context) (fields map[string][]string, problems []string)
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
	// NewConfig returns a pointer to a zero config struct (with yaml tags) for the source's block.
	NewConfig func() any
	// Open creates the source from its decoded config.
	Open func(ctx context.Context, env Env, cfg any) (Source, error)
}

var (
	mu       sync.RWMutex
	registry = map[string]Kind{}
)

// Register makes a connector kind available under name. It panics on a duplicate, like database/sql.Register.
func Register(name string, k Kind) {
	mu.Lock()
	defer mu.Unlock()
	if _, dup := registry[name]; dup {
		panic(fmt.Sprintf("connectors: Register called twice for kind %q", name))
	}
	registry[name] = k
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
