// Package connectors defines what a source connector is and keeps the registry that
// connector kinds join, like database/sql.Register: a connector package registers its
// kind in init, and importing it (blank import in cmd/ckm) makes the kind available to config.
package connectors

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"sort"
	"sync"

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

	// Relation is read once: a subquery over a table function (read_csv(...)) or a temp table
	// the connector filled. Its columns are the source's fields (or a single JSON `payload`
	// column) plus `_ordinal`, the record's 1-based number within the batch, in source order.
	Relation string
	JSON     bool
	// Records, when set, are the batch's rows, already in memory (a Kafka fetch): the writer
	// exposes them to SQL and reads them in place of Relation.
	Records arrow.RecordBatch
	// Position is an SQL expression over the relation's columns (including `_ordinal`) that
	// yields the record's _position, e.g. file:line.
	Position string
	// ReplacePrefix, when set, first removes this source's earlier rows whose _position
	// starts with it: a changed file replaces its own rows and nothing else.
	ReplacePrefix string

	// AfterScan runs in the batch's transaction once the relation has been read and mapped
	// into the temp table `mapped`, before anything is merged: a connector records rows its
	// reader rejected itself and may correct positions. It returns how many it dead-lettered.
	AfterScan func(ctx context.Context, tx Querier, mapped string) (deadLettered int64, err error)
	// Checkpoint records the connector's progress in the same transaction as the rows.
	Checkpoint func(ctx context.Context, tx Querier, stats BatchStats) error
}

// BatchStats counts what one batch did.
type BatchStats struct {
	Read         int64 // records in the batch, good and bad
	Loaded       int64 // rows merged into the canonical table
	DeadLettered int64
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
