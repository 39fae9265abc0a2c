// Package postgres is the PostgreSQL source: a table, a view or a query read incrementally by a
// cursor column (updated_at, an id that grows), the way cursor-based loaders do. Each run reads
// in one REPEATABLE READ snapshot the rows past the stored cursor, ordered by (cursor, key),
// streamed from the server a batch at a time into Arrow record batches of text values; the
// source mapping casts them as it casts a CSV file's fields. The cursor and key of a batch's
// last row are its position, stored by the runtime with the batch's rows.
//
// Rows deleted at the source are not seen (cursor mode reads what exists), nor are rows whose
// cursor or key is NULL (they have no place in the order). A row committed
// after a run with a cursor value below what that run stored (a long transaction that stamped
// updated_at when it began) is missed unless lookback reads that window again; the rows read
// twice are absorbed by the canonical key.
package postgres

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/jackc/pgx/v5"

	"github.com/ckm-dev/ckm/connectors"
	"github.com/ckm-dev/ckm/internal/pgconn"
	"github.com/ckm-dev/ckm/warehouse"
)

func init() {
	connectors.Register("postgres", connectors.Spec{Summary: "rows of a PostgreSQL table, view or query, read incrementally by a cursor column",
		Rereads: true},
		func(ctx context.Context, env connectors.Env, cfg Config) (connectors.Source, error) {
			return &Source{env: env, cfg: cfg}, nil
		})
}

// Config is a PostgreSQL source's block in config.yaml.
type Config struct {
	DSNEnv    string `yaml:"dsn_env" required:"true" secret:"true" example:"CRM_PG_DSN" doc:"the environment variable holding the libpq DSN (keyword/value or URL; sslmode, sslrootcert and the rest for TLS)"`
	Table     string `yaml:"table" example:"crm.orders" doc:"the table or view to read, as [schema.]name (the first dot ends the schema); or set query"`
	Query     string `yaml:"query" example:"SELECT o.*, c.email FROM crm.orders o JOIN crm.customers c USING (customer_id)" doc:"a SELECT to read instead of a table; its columns include cursor and key"`
	Cursor    string `yaml:"cursor" required:"true" example:"updated_at" doc:"the column that grows when a row is added or changed: a timestamp or a number"`
	Key       string `yaml:"key" required:"true" example:"id" doc:"a unique column that orders the rows of one cursor value"`
	Lookback  string `yaml:"lookback" type:"duration" example:"10m" doc:"for a timestamp cursor: read again the rows this close below the stored cursor, for rows committed late with an earlier cursor value"`
	BatchSize int    `yaml:"batch_size" default:"1000000" doc:"rows per DuckDB transaction (and at most 128 MiB of values): large, as DuckDB maps a batch one thread per 122,880 rows"`
}

// Validate checks what the spec cannot.
func (c *Config) Validate(string) []connectors.FieldProblem {
	var out []connectors.FieldProblem
	if (c.Table == "") == (c.Query == "") {
		out = append(out, connectors.FieldProblem{Key: "table", Msg: "set table or query, one of them", Hint: "table: crm.orders"})
	}
	if _, err := c.lookback(); err != nil {
		out = append(out, connectors.FieldProblem{Key: "lookback", Msg: err.Error(), Hint: "e.g. 10m"})
	}
	if c.BatchSize < 0 {
		out = append(out, connectors.FieldProblem{Key: "batch_size", Msg: "must be positive"})
	}
	return out
}

func (c *Config) lookback() (time.Duration, error) {
	if c.Lookback == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(c.Lookback)
	if err == nil && d < 0 {
		err = errors.New("is negative")
	}
	return d, err
}

// stream is the source's one stream: the table, or "query".
func (c *Config) stream() string { return cmp.Or(c.Table, "query") }

// relation is what the source reads from, as SQL.
func (c *Config) relation() string {
	if c.Query != "" {
		return "(" + c.Query + ")"
	}
	return pgx.Identifier(strings.SplitN(c.Table, ".", 2)).Sanitize() // schema.name; the name may hold dots
}

// position is where the source stands: the cursor and key of the last row read, as PostgreSQL
// writes them as text, and how many rows the stream has handed over (each record's number).
type position struct {
	Cursor string `json:"cursor"`
	Key    string `json:"key"`
	Rows   int64  `json:"rows"`
}

// Rows go to the warehouse in batches of at most batch_size rows or this many bytes of values.
const (
	defaultBatchRows = 1_000_000
	batchBytes       = 128 << 20
)

// Source reads one configured relation.
type Source struct {
	env connectors.Env
	cfg Config
}

// connect opens a session that reads text the way DuckDB casts it. A database in encoding
// SQL_ASCII (initdb's default in the C locale) stores any bytes and checks none: PostgreSQL
// would refuse to send a value that is not UTF-8 to a UTF-8 session, stopping the read there,
// so the session takes text as stored (anyBytes) and the batches mark such values.
func (s *Source) connect(ctx context.Context) (pg *pgx.Conn, anyBytes bool, err error) {
	dsn, ok := os.LookupEnv(s.cfg.DSNEnv)
	if !ok || dsn == "" {
		return nil, false, fmt.Errorf("environment variable %s (dsn_env) is not set: it holds the DSN", s.cfg.DSNEnv)
	}
	if pg, err = pgconn.Connect(ctx, dsn); err != nil {
		return nil, false, err
	}
	defer func() {
		if err != nil {
			pg.Close(context.WithoutCancel(ctx))
		}
	}()
	var encoding string
	if err := pg.QueryRow(ctx, "SHOW server_encoding").Scan(&encoding); err != nil {
		return nil, false, fmt.Errorf("read the database's encoding: %w", err)
	}
	anyBytes = encoding == "SQL_ASCII"
	client := "UTF8"
	if anyBytes {
		client = "SQL_ASCII"
	}
	// ISO dates in UTC with full precision: what DuckDB's casts read back exactly.
	if _, err := pg.Exec(ctx, "SET TimeZone = 'UTC'; SET DateStyle = 'ISO'; SET extra_float_digits = 3; SET client_encoding = '"+client+"'"); err != nil {
		return nil, false, fmt.Errorf("set up the session: %w", err)
	}
	return pg, anyBytes, nil
}

// Read hands over the rows past the stored position, a batch at a time, from one snapshot.
func (s *Source) Read(ctx context.Context, w connectors.Writer) error {
	lookback, err := s.cfg.lookback()
	if err != nil {
		return fmt.Errorf("lookback: %w", err)
	}
	stored, err := s.env.Positions.Load(ctx)
	if err != nil {
		return err
	}
	stream := s.cfg.stream()
	from, known := stored[stream]
	var pos position
	if known {
		if err := json.Unmarshal([]byte(from), &pos); err != nil {
			return fmt.Errorf("read stored position of %s: %w", stream, err)
		}
	}
	pg, anyBytes, err := s.connect(ctx)
	if err != nil {
		return err
	}
	defer pg.Close(context.WithoutCancel(ctx))
	tx, err := pg.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("begin a snapshot: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	names, types, nested, err := s.columnTypes(ctx, tx)
	if err != nil {
		return err
	}
	cursorAt, keyAt := slices.Index(names, s.cfg.Cursor), slices.Index(names, s.cfg.Key)
	if cursorAt < 0 || keyAt < 0 {
		return fmt.Errorf("%s has no column %s or %s (it has %s)", stream, s.cfg.Cursor, s.cfg.Key, connectors.NameList(names))
	}
	query, args := s.query(known, pos, lookback, types[cursorAt], types[keyAt])
	// The next batch streams in from the server while the last one is written; stopping the
	// filler cancels the query.
	fillCtx, stopFilling := context.WithCancel(ctx)
	defer stopFilling()
	rows, err := tx.Query(fillCtx, query, append([]any{pgx.QueryResultFormats{pgx.TextFormatCode}}, args...)...)
	if err != nil {
		return fmt.Errorf("read %s: %w", stream, err)
	}
	defer rows.Close()
	filled := make(chan filledBatch, 1)
	go func() {
		defer close(filled)
		s.fill(fillCtx, rows, newBatcher(names, anyBytes), cursorAt, keyAt, filled)
	}()
	defer func() { // the filler ends once stopped, releasing what it had built
		stopFilling()
		for f := range filled {
			if f.rec != nil {
				f.rec.Release()
			}
		}
	}()
	for f := range filled {
		if f.err != nil {
			return fmt.Errorf("read %s: %w", stream, atRow(f, pos, s.cfg.Key))
		}
		next := pos
		next.Cursor, next.Key, next.Rows = f.lastCursor, f.lastKey, pos.Rows+f.rec.NumRows()
		to, _ := json.Marshal(next)
		batch := connectors.Batch{
			Label: fmt.Sprintf("%s rows %d..%d", stream, pos.Rows+1, next.Rows), Records: f.rec,
			Stream: warehouse.Quote(stream), Seq: fmt.Sprintf("{ordinal} + %d", pos.Rows), PositionSep: ":row ",
			Positions:  []connectors.Advance{{Stream: stream, From: from, To: string(to)}},
			Nested:     nested,
			Unreadable: f.notUTF8,
		}
		_, err := w.Write(ctx, batch)
		f.rec.Release()
		if err != nil {
			return err
		}
		pos, from = next, string(to)
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return nil
}

// filledBatch is a batch of rows read, with the cursor and key of its last row and the values
// that are not UTF-8 (connectors.Batch.Unreadable), or why reading failed after the rows of the
// batch being filled (filled of them; lastKey the last row's read).
type filledBatch struct {
	rec                 arrow.RecordBatch
	lastCursor, lastKey string
	notUTF8             map[string]string
	filled              int
	err                 error
}

// errPositionNotUTF8 is a row whose cursor or key is not UTF-8 (a database in encoding
// SQL_ASCII): where the read stands could not be stored, nor the next read start after it.
var errPositionNotUTF8 = errors.New("its cursor or key holds bytes that are not UTF-8, so ckm cannot store where the read stands; correct the row")

// atRow names the row a read stopped at when the row itself stopped it. Other errors pass as they are.
func atRow(f filledBatch, sent position, key string) error {
	if !errors.Is(f.err, errPositionNotUTF8) {
		return f.err
	}
	after := ""
	if last := cmp.Or(f.lastKey, sent.Key); last != "" {
		after = fmt.Sprintf(" (the row after %s %s)", key, connectors.Printable(last))
	}
	return fmt.Errorf("row %d%s: %w", sent.Rows+int64(f.filled)+1, after, f.err)
}

// fill reads rows into batches of batch_size rows (or batchBytes of values) and sends them.
func (s *Source) fill(ctx context.Context, rows pgx.Rows, b *batcher, cursorAt, keyAt int, out chan<- filledBatch) {
	defer b.release()
	limit := cmp.Or(s.cfg.BatchSize, defaultBatchRows)
	send := func() bool {
		f := filledBatch{lastCursor: b.lastCursor, lastKey: b.lastKey, notUTF8: b.unreadable()}
		f.rec = b.record()
		select {
		case out <- f:
			return true
		case <-ctx.Done():
			f.rec.Release()
			return false
		}
	}
	for rows.Next() {
		if !b.add(rows.RawValues(), cursorAt, keyAt) {
			if b.n > 0 && !send() { // the rows before it load
				return
			}
			select {
			case out <- filledBatch{err: errPositionNotUTF8, filled: b.n, lastKey: b.lastKey}:
			case <-ctx.Done():
			}
			return
		}
		if b.n >= limit || b.bytes >= batchBytes {
			if !send() {
				return
			}
		}
	}
	if err := rows.Err(); err != nil {
		select {
		case out <- filledBatch{err: err, filled: b.n, lastKey: b.lastKey}:
		case <-ctx.Done():
		}
		return
	}
	if b.n > 0 {
		send()
	}
}

// columnTypes lists the relation's columns, as PostgreSQL names them, and their type names, as
// SQL casts write them, and names the columns whose values hold several values (see
// severalValues) with their types, by the names the batches give them (connectors.DistinctNames).
func (s *Source) columnTypes(ctx context.Context, tx pgx.Tx) (names, types []string, nested map[string]string, err error) {
	rows, err := tx.Query(ctx, "SELECT * FROM "+s.cfg.relation()+" AS ckm_src LIMIT 0")
	if err != nil {
		return nil, nil, nil, fmt.Errorf("read the columns of %s: %w", s.cfg.stream(), err)
	}
	fields := rows.FieldDescriptions()
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, nil, nil, fmt.Errorf("read the columns of %s: %w", s.cfg.stream(), err)
	}
	oids := make([]uint32, len(fields))
	for i, f := range fields {
		names, oids[i] = append(names, connectors.EscapeNotUTF8(f.Name)), f.DataTypeOID // see connect
	}
	var several []bool
	if err := tx.QueryRow(ctx, `SELECT array_agg(format_type(u.oid, NULL) ORDER BY n), array_agg(`+severalValues+` ORDER BY n)
		FROM unnest($1::oid[]) WITH ORDINALITY AS u(oid, n) LEFT JOIN pg_type t ON t.oid = u.oid`, oids).Scan(&types, &several); err != nil {
		return nil, nil, nil, fmt.Errorf("read the column types of %s: %w", s.cfg.stream(), err)
	}
	nested = map[string]string{}
	distinct := connectors.DistinctNames(names)
	for i, yes := range several {
		if yes {
			nested[distinct[i]] = types[i]
		}
	}
	return names, types, nested, nil
}

// severalValues tells, of a pg_type row t, a type whose values arrive as text holding several
// values: arrays ({C1,C2}), composite rows ((a,b)), ranges ([1,5)), geometric types ((1,2)),
// JSON documents and hstore maps (a domain over one arrives as its base type).
const severalValues = `coalesce(t.typcategory IN ('A', 'C', 'R', 'G') OR t.typname IN ('json', 'jsonb', 'hstore'), false)`

// query selects the rows past pos in (cursor, key) order. With lookback, the rows of the
// window below the stored cursor are read again.
func (s *Source) query(known bool, pos position, lookback time.Duration, cursorType, keyType string) (string, []any) {
	cursor, key := pgx.Identifier{s.cfg.Cursor}.Sanitize(), pgx.Identifier{s.cfg.Key}.Sanitize()
	q := fmt.Sprintf("SELECT * FROM %s AS ckm_src WHERE %s IS NOT NULL AND %s IS NOT NULL", s.cfg.relation(), cursor, key)
	var args []any
	switch {
	case !known:
	case lookback > 0:
		q += fmt.Sprintf(" AND %s > $1::%s - $2::interval", cursor, cursorType)
		args = append(args, pos.Cursor, fmt.Sprintf("%d microseconds", lookback.Microseconds()))
	default:
		q += fmt.Sprintf(" AND (%s, %s) > ($1::%s, $2::%s)", cursor, key, cursorType, keyType)
		args = append(args, pos.Cursor, pos.Key)
	}
	return q + fmt.Sprintf(" ORDER BY %s, %s", cursor, key), args
}

// batcher builds one Arrow record batch of rows as text: a string column per source column,
// then the row's number in the batch.
type batcher struct {
	b                   *array.RecordBuilder
	fields              []string
	strs                []*array.StringBuilder
	ordinal             *array.Int64Builder
	n, bytes            int
	lastCursor, lastKey string
	// anyBytes: values may be any bytes (see connect). notUTF8 lists, per column, the rows of
	// the batch whose value is not UTF-8; such a value is kept escaped (caf\xe9).
	anyBytes bool
	notUTF8  [][]int
}

func newBatcher(names []string, anyBytes bool) *batcher {
	fields := make([]arrow.Field, 0, len(names)+1)
	distinct := connectors.DistinctNames(names)
	for _, n := range distinct {
		fields = append(fields, arrow.Field{Name: n, Type: arrow.BinaryTypes.String, Nullable: true})
	}
	fields = append(fields, arrow.Field{Name: "ckm_ordinal", Type: arrow.PrimitiveTypes.Int64})
	b := array.NewRecordBuilder(memory.DefaultAllocator, arrow.NewSchema(fields, nil))
	out := &batcher{b: b, fields: distinct, ordinal: b.Field(len(names)).(*array.Int64Builder), anyBytes: anyBytes, notUTF8: make([][]int, len(names))}
	for i := range names {
		out.strs = append(out.strs, b.Field(i).(*array.StringBuilder))
	}
	return out
}

// add appends one row; values are the row's text as the server sent it (nil: NULL), valid only
// until the next row, so the cursor and key are copied. It is false, adding nothing, for a row
// whose cursor or key is not UTF-8.
func (b *batcher) add(values [][]byte, cursorAt, keyAt int) bool {
	if b.anyBytes && !(utf8.Valid(values[cursorAt]) && utf8.Valid(values[keyAt])) {
		return false
	}
	b.n++
	for i, v := range values {
		switch {
		case v == nil:
			b.strs[i].AppendNull()
		case b.anyBytes && !utf8.Valid(v):
			b.strs[i].Append(connectors.EscapeNotUTF8(string(v)))
			b.notUTF8[i] = append(b.notUTF8[i], b.n)
		default:
			b.strs[i].BinaryBuilder.Append(v)
		}
		b.bytes += len(v)
	}
	b.ordinal.Append(int64(b.n))
	b.lastCursor, b.lastKey = string(values[cursorAt]), string(values[keyAt])
	return true
}

// unreadable says which rows of the batch hold a value that is not UTF-8, per field: such a row
// is a dead letter if the mapping reads the field, and loads as any other if not.
func (b *batcher) unreadable() map[string]string {
	out := map[string]string{}
	for i, rows := range b.notUTF8 {
		if len(rows) == 0 {
			continue
		}
		ordinals := make([]string, len(rows))
		for j, n := range rows {
			ordinals[j] = strconv.Itoa(n)
		}
		out[b.fields[i]] = "{ordinal} IN (" + strings.Join(ordinals, ", ") + ")"
	}
	return out
}

// record hands over the rows added so far and starts a new batch.
func (b *batcher) record() arrow.RecordBatch {
	b.n, b.bytes = 0, 0
	clear(b.notUTF8)
	return b.b.NewRecordBatch()
}

func (b *batcher) release() { b.b.Release() }

// Check connects and reads the relation's columns, loading nothing (ckm validate --connect).
func (s *Source) Check(ctx context.Context) (map[string][]connectors.StreamField, []string) {
	pg, _, err := s.connect(ctx)
	if err != nil {
		return nil, []string{err.Error()}
	}
	defer pg.Close(context.WithoutCancel(ctx))
	tx, err := pg.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, []string{err.Error()}
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	names, _, _, err := s.columnTypes(ctx, tx)
	if err != nil {
		return nil, []string{err.Error()}
	}
	var problems []string
	for _, c := range []string{s.cfg.Cursor, s.cfg.Key} {
		if slices.Index(names, c) < 0 {
			problems = append(problems, fmt.Sprintf("%s has no column %s (it has %s)", s.cfg.stream(), c, connectors.NameList(names)))
		}
	}
	// Rows arrive in PostgreSQL's text format and reach the mapping as text, whatever the
	// column's type (as a CSV file's fields do): the mapping is bound over text.
	var fields []connectors.StreamField
	for _, n := range connectors.DistinctNames(names) {
		fields = append(fields, connectors.StreamField{Name: n, Type: "VARCHAR"})
	}
	return map[string][]connectors.StreamField{s.cfg.stream(): fields}, problems
}
