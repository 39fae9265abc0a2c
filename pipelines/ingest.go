package pipelines

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/ckm-dev/ckm/config"
	"github.com/ckm-dev/ckm/connectors"
	"github.com/ckm-dev/ckm/connectors/mapping"
	"github.com/ckm-dev/ckm/warehouse"
)

// BadRatioError is returned when a source's unreadable records in a run pass its max_bad_ratio.
type BadRatioError struct {
	Source, Label string
	Bad, Read     int64
	Max           float64
	// Latest says Read counts a follow session's latest records, not all of them.
	Latest        bool
	FirstPosition string
	FirstReason   string
}

func (e *BadRatioError) Error() string {
	of := fmt.Sprintf("%d of %d records so far", e.Bad, e.Read)
	if e.Latest {
		of = fmt.Sprintf("%d of the latest %d records", e.Bad, e.Read)
	}
	return fmt.Sprintf("at %s: %s (%.1f%%) could not be loaded, above max_bad_ratio %.1f%%; first at %s: %s",
		connectors.Printable(e.Label), of, 100*float64(e.Bad)/float64(e.Read), 100*e.Max, connectors.Printable(e.FirstPosition), connectors.Printable(e.FirstReason))
}

// ratioJudgedOver is the fewest records a run's bad records are measured against. A ratio
// of a handful of records is noise, and a micro-batch's size is a matter of timing: one bad
// message alone in a follow's first micro-batch would fail the ingest (1 of 1, 100%) where
// the same message among the next hundred would not.
const ratioJudgedOver = 100

// tooBad reports whether bad of read records are more than maxRatio allows, the records read
// counted as at least ratioJudgedOver: a run may always have maxRatio × 100 bad records.
func tooBad(c badCounts, maxRatio float64) bool {
	return c.bad > 0 && float64(c.bad) > maxRatio*float64(max(c.read, ratioJudgedOver))
}

// followWindow is how many of a follow session's latest records max_bad_ratio is judged over. A
// session runs for days: over all its records, input that turned bad would be dead-lettered
// until it outweighed every good record before it (as Conduit's DLQ window, not the run).
const followWindow = 10_000

// badCounts are records read and records that could not be loaded, as max_bad_ratio counts them.
type badCounts struct{ read, bad int64 }

// badWindow holds the counts max_bad_ratio is judged over: the whole run's or, with a size, the
// latest committed batches' that hold at least size records (whole batches: one is the unit
// that commits or rolls back).
type badWindow struct {
	size    int64
	batches []badCounts // oldest first; one entry, the run's, without a size
}

// with is what the window would hold with b committed.
func (bw *badWindow) with(b badCounts) badCounts {
	for _, c := range bw.batches {
		b.read, b.bad = b.read+c.read, b.bad+c.bad
	}
	return b
}

// add counts a committed batch, dropping the oldest batches the window no longer needs.
func (bw *badWindow) add(b badCounts) {
	if bw.size == 0 {
		bw.batches = []badCounts{bw.with(b)}
		return
	}
	bw.batches = append(bw.batches, b)
	read := bw.with(badCounts{}).read
	for len(bw.batches) > 1 && read-bw.batches[0].read >= bw.size {
		read -= bw.batches[0].read
		bw.batches = bw.batches[1:]
	}
}

// batchWriter maps each batch onto its canonical table and commits it, its dead letters
// and its checkpoint in one transaction: a batch is either wholly in or wholly out.
type batchWriter struct {
	conn        *warehouse.Conn
	source      string
	connector   string // the source's kind, stored with its positions
	runID       string
	spec        mapping.Spec // for sources of columns
	jsonSpec    mapping.Spec // the same mapping, for sources of JSON documents
	guarded     bool         // the specs' Guarded expressions are known
	maxBadRatio float64
	judged      badWindow // what max_bad_ratio is judged over
	log         *slog.Logger
	total       connectors.BatchStats
	// The lookup files' join order and columns, read and checked once per run, not per batch.
	lookupOrder   []string
	lookupColumns map[string][]string
}

// NewSourceWriter returns the writer a run hands the connector of source: for driving a
// connector directly. Each Write maps, dead-letters, merges and checkpoints one batch.
func NewSourceWriter(conn *warehouse.Conn, cfg *config.Config, source, runID string, log *slog.Logger) connectors.Writer {
	return newBatchWriter(conn, cfg, source, runID, log, false)
}

// newBatchWriter returns source's writer; a follow session's judges max_bad_ratio over its
// latest records.
func newBatchWriter(conn *warehouse.Conn, cfg *config.Config, source, runID string, log *slog.Logger, follow bool) *batchWriter {
	w := &batchWriter{conn: conn, source: source, connector: cfg.Sources[source].Kind, runID: runID, log: log.With("source", source), maxBadRatio: cfg.BadRatio(cfg.Sources[source]),
		spec: cfg.MappingSpec(source, false), jsonSpec: cfg.MappingSpec(source, true)}
	if follow {
		w.judged.size = followWindow
	}
	return w
}

func (w *batchWriter) Write(ctx context.Context, b connectors.Batch) (_ connectors.BatchStats, err error) {
	defer func() { err = warehouse.Stopped(ctx, err) }() // a QueryRow's interrupt names no stop itself
	if err := w.guard(ctx, nil); err != nil {
		return connectors.BatchStats{}, err
	}
	spec := w.spec
	if b.JSON {
		spec = w.jsonSpec
	}
	if b.Records == nil {
		return w.write(ctx, b, spec, nil)
	}
	// Records are mapped straight from an Arrow view, in slices DuckDB's threads share (a copy
	// into a temp table first is one row group for a 100k-message batch, mapped by one thread).
	var st connectors.BatchStats
	rec := b.Records
	err = w.conn.WithArrowView(rec, func(view string) error {
		var err error
		b.Relation, b.Records = view, nil
		st, err = w.write(ctx, b, spec, rec)
		return err
	})
	return st, err
}

// guard has the mapping's expressions dead-letter the records they fail on, each that DuckDB
// can guard (mapping.Spec.Guarded): one record's 'n/a' in a CAST then fails that record, not
// its batch. DuckDB's parser is asked once per writer, through checker (nil: one of its own).
func (w *batchWriter) guard(ctx context.Context, checker *mapping.SQLChecker) error {
	if w.guarded {
		return nil
	}
	if len(w.spec.Expressions()) > 0 {
		var err error
		if checker == nil {
			if checker, err = mapping.NewSQLChecker(ctx, w.conn); err != nil {
				return err
			}
		}
		guarded, err := checker.Guardable(ctx, w.spec)
		if err != nil {
			return err
		}
		w.spec.Guarded, w.jsonSpec.Guarded = guarded, guarded
	}
	w.guarded = true
	return nil
}

// write maps and merges a batch; rec, when not nil, holds its records, and its relation is an
// Arrow view of them.
func (w *batchWriter) write(ctx context.Context, b connectors.Batch, spec mapping.Spec, rec arrow.RecordBatch) (connectors.BatchStats, error) {
	var st connectors.BatchStats
	if b.CSVRejects != nil {
		b.Relation = strings.NewReplacer("{rejects_table}", warehouse.Quote(csvRejectsTable), "{rejects_scan}", warehouse.Quote(csvRejectsScan)).Replace(b.Relation)
		defer w.conn.ExecContext(context.WithoutCancel(ctx), "DROP TABLE IF EXISTS temp."+csvRejectsTable+"; DROP TABLE IF EXISTS temp."+csvRejectsScan+
			"; DROP TABLE IF EXISTS temp."+csvRejectedRecords)
	}
	// Map before the transaction opens: `mapped` is a temp table, not durable state, and DuckDB
	// reads a temp table created inside the open transaction markedly slower (measured 1.7×).
	if _, err := w.conn.ExecContext(ctx, "SET TimeZone = "+warehouse.Quote(spec.SessionZone())); err != nil {
		return st, fmt.Errorf("set time zone %s: %w", spec.SessionZone(), err)
	}
	// A batch without a relation carries only rejects (a damaged file) or nothing (an empty
	// file): there is nothing to map.
	rows := b.Relation != "" || b.Records != nil
	numbering := "" // for an unnumbered batch, the records numbered as `mapped` (a view) reads them
	if rows {
		if b.Unnumbered {
			b.Relation, numbering = numbered(b, spec)
		}
		mb, err := w.mappingBatch(ctx, b, spec)
		if err != nil {
			return st, err
		}
		mb.NumberedLater = numbering != ""
		if missing := spec.MissingFields(mb.Fields); len(missing) > 0 {
			return st, fmt.Errorf("%s: mapping refers to %s, which the source does not have (it has %s%s)",
				connectors.Printable(b.Label), connectors.NameList(missing), connectors.NameList(mb.Fields), mapping.NameHint(missing, mb.Fields))
		}
		exec := w.conn.ExecContext
		if rec != nil {
			exec = w.conn.ExecReadingArrowView
		}
		// probe evaluates one of the mapping's expressions alone over the batch's records, or
		// binds it. An Arrow view's stream is read once, by the mapping: a probe reads anew.
		probe := func(ctx context.Context, expr string, records bool) error {
			_, err := exec(ctx, spec.Probe(mb, expr, records))
			return err
		}
		if rec != nil {
			probe = func(ctx context.Context, expr string, records bool) error {
				return w.conn.WithArrowView(rec, func(view string) error {
					again := mb
					again.Relation = strings.ReplaceAll(mb.Relation, b.Relation, view)
					_, err := exec(ctx, spec.Probe(again, expr, records))
					return err
				})
			}
		}
		table := "mapped"
		if numbering != "" {
			table = mappedRows
		}
		if _, err := w.timed(ctx, exec, "map", "CREATE OR REPLACE TEMP TABLE "+table+" AS "+spec.Compile(mb)); err != nil {
			return st, fmt.Errorf("read %s: %w", b.Label, blameExpression(ctx, probe, spec, err))
		}
		defer w.dropMapped(context.WithoutCancel(ctx))
		if err := w.logFailures(ctx, probe, spec, table, b.Label); err != nil {
			return st, err
		}
		if numbering != "" {
			if _, err := w.conn.ExecContext(ctx, "CREATE OR REPLACE TEMP VIEW mapped AS "+numbering); err != nil {
				return st, fmt.Errorf("number the records of %s: %w", b.Label, err)
			}
		}
	}
	var csvRejected int64
	if b.CSVRejects != nil && rows {
		var err error
		if csvRejected, err = w.csvRejects(ctx, *b.CSVRejects, numbering); err != nil {
			return st, fmt.Errorf("read %s: %w", b.Label, err)
		}
	}
	var counted badCounts // the batch's records as max_bad_ratio counts them
	err := w.conn.Tx(ctx, func(ctx context.Context) error {
		st = connectors.BatchStats{}
		if csvRejected > 0 {
			if err := w.deadLetterCSVRejects(ctx, *b.CSVRejects); err != nil {
				return fmt.Errorf("read %s: %w", b.Label, err)
			}
			st.DeadLettered += csvRejected
			st.Read += csvRejected
		}
		if err := w.reject(ctx, b.Rejects); err != nil {
			return fmt.Errorf("dead-letter %s: %w", b.Label, err)
		}
		var wholeStreams int64
		for _, r := range b.Rejects {
			if r.WholeStream {
				wholeStreams++
			}
		}
		st.Read += int64(len(b.Rejects))
		st.DeadLettered += int64(len(b.Rejects))
		if rows {
			var read, bad, skipped int64
			if err := w.conn.QueryRowContext(ctx, `SELECT count(*), count(*) FILTER (_reason IS NOT NULL AND NOT _skip), count(*) FILTER (_skip) FROM mapped`).Scan(&read, &bad, &skipped); err != nil {
				return fmt.Errorf("count %s: %w", b.Label, err)
			}
			// Marker rows kept lines in the numbering; they are not records.
			st.Read += read - b.MarkedLines
			st.DeadLettered += bad
			st.Skipped += skipped - b.MarkedLines
		}
		// The ratio is over the source's records in the run (a follow's latest); the batch that
		// crosses it is rolled back. A whole stream that could not be read (a damaged file) is
		// not a record.
		counted = badCounts{st.Read - wholeStreams, st.DeadLettered - wholeStreams}
		if b.Replays != "" {
			counted = badCounts{}
		}
		if judged := w.judged.with(counted); tooBad(judged, w.maxBadRatio) {
			e := &BadRatioError{Source: w.source, Label: b.Label, Bad: judged.bad, Read: judged.read, Max: w.maxBadRatio, Latest: w.judged.size > 0}
			if len(b.Rejects) > 0 {
				e.FirstPosition, e.FirstReason = b.Rejects[0].Position, b.Rejects[0].Reason
			}
			if rows {
				// The run's first (a follow's: this batch's first, not one from days ago).
				_ = w.conn.QueryRowContext(ctx, `SELECT position, reason FROM (
					SELECT _position AS position, _reason AS reason, _ordinal AS o FROM mapped WHERE _reason IS NOT NULL AND NOT _skip
					UNION ALL SELECT position, reason, -1 FROM dead_letters WHERE run_id = ? AND source = ? AND NOT ?)
					ORDER BY o, length(position), position LIMIT 1`,
					w.runID, w.source, e.Latest).Scan(&e.FirstPosition, &e.FirstReason)
			}
			return e
		}
		if b.Replays != "" {
			if _, err := w.exec(ctx, "supersede replayed dead letters", `UPDATE dead_letters SET superseded_by = ?
				WHERE source = ? AND superseded_by IS NULL AND position IN (SELECT position FROM `+b.Replays+`)`, w.runID, w.source); err != nil {
				return fmt.Errorf("replay %s: %w", b.Label, err)
			}
		}
		if rows {
			if _, err := w.exec(ctx, "dead-letter", `INSERT INTO dead_letters (run_id, source, position, reason, payload, received_at, stream, meta)
				SELECT ?, ?, _position, _reason, CAST(_payload AS VARCHAR), now(), _stream, CAST(_meta AS VARCHAR) FROM mapped WHERE _reason IS NOT NULL AND NOT _skip`, w.runID, w.source); err != nil {
				return fmt.Errorf("dead-letter %s: %w", b.Label, err)
			}
		}
		if b.ReplaceStream != "" {
			if err := w.replaceStream(ctx, spec.Table, b.ReplaceStream); err != nil {
				return fmt.Errorf("replace earlier rows of %s: %w", b.Label, err)
			}
		}
		if rows {
			ms, err := w.merge(ctx, spec.Table)
			if err != nil {
				return fmt.Errorf("merge %s into %s: %w", b.Label, spec.Table.Name, err)
			}
			st.Loaded, st.Collapsed, st.Replaced = ms.Loaded, ms.Collapsed, ms.Replaced
		}
		if err := w.storePositions(ctx, b, st); err != nil {
			return fmt.Errorf("store position of %s: %w", b.Label, err)
		}
		return nil
	})
	if err != nil {
		if isConflict(err) && !errors.Is(err, connectors.ErrPositionMoved) {
			err = fmt.Errorf("%w: %v", connectors.ErrPositionMoved, err)
		}
		return st, err
	}
	w.total.Add(st)
	w.judged.add(counted)
	w.log.Debug("batch committed", "batch", b.Label, "read", st.Read, "loaded", st.Loaded, "dead_letters", st.DeadLettered,
		"collapsed", st.Collapsed, "skipped", st.Skipped, "replaced", st.Replaced)
	return st, nil
}

// mappedRows holds an unnumbered batch's mapped records, which the view `mapped` numbers.
const mappedRows = "mapped_rows"

// numbered is an unnumbered batch's relation with a last column for the records' numbers, and
// the SELECT over mappedRows that numbers the mapped records ("" when the relation numbers
// them). A freshly created table keeps the order of the scan that filled it (DuckDB's
// preserve_insertion_order), so rowid + 1 is each record's number, with the mapping run on
// every core; the lineage is computed as the view is read, once, by the insert (an UPDATE of
// 18.6M rows took a third of the mapping's time), and not stored per record (a file's path is
// a copy per record in a temp table). A mapping that reads the numbers itself gets
// them from a numbering window, as other batches do.
func numbered(b connectors.Batch, spec mapping.Spec) (relation, numbering string) {
	if spec.ReadsOrdinals() {
		return "(SELECT * FROM " + b.Relation + " WITH ORDINALITY)", ""
	}
	seq := "CAST((" + strings.ReplaceAll(b.Seq, "{ordinal}", "(rowid + 1)") + ") AS BIGINT)"
	stream := "CAST((" + b.Stream + ") AS VARCHAR)"
	return "(SELECT *, NULL::BIGINT FROM " + b.Relation + ")",
		"SELECT *, " + stream + " || " + warehouse.Quote(b.PositionSep) + " || " + seq + " AS _position, " + stream + " AS _stream, " +
			seq + " AS _seq, rowid + 1 AS _ordinal FROM " + mappedRows
}

// dropMapped drops a batch's mapped records: the table `mapped`, or the view and its table.
func (w *batchWriter) dropMapped(ctx context.Context) {
	for _, q := range []string{"DROP VIEW IF EXISTS temp.mapped", "DROP TABLE IF EXISTS temp.mapped", "DROP TABLE IF EXISTS temp." + mappedRows} {
		_, _ = w.conn.ExecContext(ctx, q) // one of the first two fails: mapped is one or the other
	}
}

// storePositions moves the batch's streams to their new positions, each only from the position
// the batch read on from. A batch that moves one stream adds its counts to the stream's (from
// zero when it replaces the stream's earlier version).
func (w *batchWriter) storePositions(ctx context.Context, b connectors.Batch, st connectors.BatchStats) error {
	var counted connectors.BatchStats
	if len(b.Positions) == 1 {
		counted = st
	}
	for _, p := range b.Positions {
		keep := "1" // a replaced stream's counts start again
		if p.Stream == b.ReplaceStream {
			keep = "0"
		}
		var res sql.Result
		var err error
		if p.From == "" {
			res, err = w.conn.ExecContext(ctx, `INSERT INTO source_positions (source, stream, connector, position, rows_read, rows_loaded, dead_letters,
					rows_collapsed, rows_skipped, updated_at, run_id)
				SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, now(), ? WHERE NOT EXISTS (SELECT 1 FROM source_positions WHERE source = ? AND stream = ?)`,
				w.source, p.Stream, w.connector, p.To, counted.Read, counted.Loaded, counted.DeadLettered, counted.Collapsed, counted.Skipped, w.runID,
				w.source, p.Stream)
		} else {
			res, err = w.conn.ExecContext(ctx, `UPDATE source_positions SET position = ?, rows_read = rows_read * `+keep+` + ?,
					rows_loaded = rows_loaded * `+keep+` + ?, dead_letters = dead_letters * `+keep+` + ?, rows_collapsed = rows_collapsed * `+keep+` + ?,
					rows_skipped = rows_skipped * `+keep+` + ?, updated_at = now(), run_id = ?
				WHERE source = ? AND stream = ? AND position = ?`,
				p.To, counted.Read, counted.Loaded, counted.DeadLettered, counted.Collapsed, counted.Skipped, w.runID, w.source, p.Stream, p.From)
		}
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n != 1 {
			return fmt.Errorf("%w: %s is no longer at %q", connectors.ErrPositionMoved, p.Stream, p.From)
		}
	}
	return nil
}

// isConflict tells DuckDB's errors for concurrent writers of the same rows: a transaction
// conflict, or a duplicate position row inserted by both.
func isConflict(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "onflict") || strings.Contains(msg, "uplicate key")
}

// StoredPositions reads source's stored positions from the warehouse: what a run hands the
// source's connector, for driving a connector directly.
func StoredPositions(db connectors.Querier, source string) connectors.Positions {
	return storedPositions{db, source}
}

// storedPositions reads a source's stored positions for its connector.
type storedPositions struct {
	db     connectors.Querier
	source string
}

func (p storedPositions) Load(ctx context.Context) (map[string]string, error) {
	rows, err := p.db.QueryContext(ctx, `SELECT stream, position FROM source_positions WHERE source = ?`, p.source)
	if err != nil {
		return nil, fmt.Errorf("read stored positions of %s: %w", p.source, err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var stream, pos string
		if err := rows.Scan(&stream, &pos); err != nil {
			return nil, err
		}
		out[stream] = pos
	}
	return out, rows.Err()
}

const csvRejectsTable, csvRejectsScan, csvRejectedRecords = "ckm_csv_rejects", "ckm_csv_rejects_scan", "ckm_csv_rejected_records"

// csvRejects reads the lines DuckDB's CSV reader rejected into a temp table and, when there
// were any, shifts the numbers of later good rows in `mapped` so each names its true line. It
// returns how many records were rejected, for deadLetterCSVRejects to store in the batch's
// transaction. DuckDB numbers a rejected record as if every record before it were one line; a
// record it rejects can span several (a quote never closed takes the lines up to the next quote
// along), which is counted from the record's own text.
//
// numbering, when set, is how the view `mapped` numbers the records: the records are then made a
// table before their numbers are shifted. All of this runs before the transaction opens:
// DuckDB updates a temp table created inside one row by row (18 s for 700k rows).
func (w *batchWriter) csvRejects(ctx context.Context, r connectors.CSVRejects, numbering string) (int64, error) {
	var n int64
	if err := w.conn.QueryRowContext(ctx, "SELECT count(DISTINCT line) FROM "+csvRejectsTable).Scan(&n); err != nil {
		return 0, nil // no rejects table: the reader rejected nothing
	}
	if n == 0 {
		return 0, nil
	}
	// Per rejected record: the lines it spans, the good records before it, and its first line
	// in the file (DuckDB's number plus the extra lines of the rejected records before it, and the
	// file's lines before the relation's).
	// DuckDB reports a short row once per missing column, each "Found" one higher: the first
	// says how many it found. In a file of \r\n lines it starts a rejected line with the
	// previous line's \n; a quote left open at the end of the file takes the last line's end.
	if _, err := w.exec(ctx, "csv rejects", fmt.Sprintf(`CREATE OR REPLACE TEMP TABLE %[1]s AS
		SELECT *, line + %[4]d + coalesce(sum(span - 1) OVER (ORDER BY line ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS first_line
		FROM (SELECT line, line - %[3]d - row_number() OVER (ORDER BY line) AS good_before,
			string_agg(DISTINCT error_type || ': ' || error_message, '; ') AS reason, any_value(csv_line) AS record,
			bool_or(error_type = 'LINE SIZE OVER MAXIMUM') AS oversized,
			coalesce(max(1 + length(csv_line) - length(replace(csv_line, chr(10), ''))), 1) AS span
			FROM (SELECT * REPLACE (rtrim(ltrim(csv_line, chr(10)), chr(13) || chr(10)) AS csv_line) FROM %[2]s
				QUALIFY error_type <> 'MISSING COLUMNS' OR row_number() OVER (PARTITION BY line, error_type ORDER BY column_idx) = 1)
			GROUP BY line)`, csvRejectedRecords, csvRejectsTable, r.HeaderLines, r.LinesBefore)); err != nil {
		return 0, fmt.Errorf("read rejected lines: %w", err)
	}
	if numbering != "" {
		if _, err := w.exec(ctx, "number", "DROP VIEW temp.mapped; CREATE TEMP TABLE mapped AS "+numbering); err != nil {
			return 0, fmt.Errorf("number the records: %w", err)
		}
	}
	// Good row k sits after every line of the rejected records whose good-row count is below k:
	// the running total of their lines up to the last such count.
	_, err := w.exec(ctx, "number", fmt.Sprintf(`UPDATE mapped SET _seq = mapped._ordinal + %[2]d + shift.skipped,
			_position = %[1]s || ':' || (mapped._ordinal + %[2]d + shift.skipped)
		FROM (SELECT m._ordinal, r.skipped FROM mapped m ASOF JOIN (
				SELECT good_before, sum(sum(span)) OVER (ORDER BY good_before) AS skipped FROM %[3]s GROUP BY good_before) r
			ON m._ordinal > r.good_before) shift
		WHERE mapped._ordinal = shift._ordinal`, warehouse.Quote(r.Stream), r.HeaderLines+r.LinesBefore, csvRejectedRecords))
	if err != nil {
		return 0, fmt.Errorf("correct line numbers: %w", err)
	}
	return n, nil
}

// deadLetterCSVRejects stores the records csvRejects read as dead letters.
func (w *batchWriter) deadLetterCSVRejects(ctx context.Context, r connectors.CSVRejects) error {
	_, err := w.exec(ctx, "csv rejects", `INSERT INTO dead_letters (run_id, source, position, reason, payload, received_at, stream)
		SELECT ?, ?, ? || ':' || first_line,
			reason || CASE WHEN span > 1 THEN '; one record of lines ' || first_line || '–' || (first_line + span - 1) ||
				' (a quote opened on its first line and closed on its last)' ELSE '' END,
			CASE WHEN oversized THEN `+oversizedHead("record")+` ELSE record END, now(), ?
		FROM `+csvRejectedRecords, w.runID, w.source, r.Stream, r.Stream)
	if err != nil {
		return fmt.Errorf("dead-letter rejected lines: %w", err)
	}
	return nil
}

// oversizedHead keeps the first OversizedHead bytes of a record over the size limit, saying so
// when it cut.
func oversizedHead(col string) string {
	return fmt.Sprintf(`CASE WHEN strlen(CAST(%[1]s AS VARCHAR)) > %[2]d THEN left(CAST(%[1]s AS VARCHAR), %[2]d) || ' … (' || strlen(CAST(%[1]s AS VARCHAR)) || ' bytes, cut to the first %[2]d)'
		ELSE CAST(%[1]s AS VARCHAR) END`, col, connectors.OversizedHead)
}

// reject dead-letters the records a connector could not hand over as rows. Their raw bytes are
// kept as text when they are UTF-8, else as base64 (marked so).
func (w *batchWriter) reject(ctx context.Context, rejects []connectors.Reject) error {
	if len(rejects) == 0 {
		return nil
	}
	rows := make([]string, len(rejects))
	var args []any
	for i, r := range rejects {
		rows[i] = "(?, ?, ?, ?, ?, now(), ?)"
		args = append(args, w.runID, w.source, r.Position, r.Reason, safePayload(r.Payload), r.Stream)
	}
	_, err := w.conn.ExecContext(ctx, `INSERT INTO dead_letters (run_id, source, position, reason, payload, received_at, stream) VALUES `+
		strings.Join(rows, ", "), args...)
	return err
}

// safePayload is raw bytes as a dead letter keeps them: as text when they are valid UTF-8
// without NUL bytes, otherwise base64 with a "base64:" prefix.
func safePayload(raw []byte) string {
	if connectors.NotText(raw) == "" {
		return string(raw)
	}
	return "base64:" + base64.StdEncoding.EncodeToString(raw)
}

// blameExpression returns, for the error err of spec's mapping, the errors of its expressions
// that fail alone over the same records (probe), such as a type mistake (text * 2 in a CSV
// mapping), each named by its key and without the generated SQL; err itself when none does. A
// guarded expression is only bound: what it raises on a record fails that record alone.
func blameExpression(ctx context.Context, probe func(ctx context.Context, expr string, records bool) error, spec mapping.Spec, err error) error {
	if ctx.Err() != nil {
		return err
	}
	exprs := spec.Expressions()
	var blamed []string
	for _, key := range slices.Sorted(maps.Keys(exprs)) {
		if probeErr := probe(ctx, exprs[key], !spec.Guarded[key]); probeErr != nil {
			msg, _, _ := strings.Cut(probeErr.Error(), "\n")
			blamed = append(blamed, key+": "+msg)
		}
	}
	if len(blamed) == 0 {
		return err
	}
	return errors.New(strings.Join(blamed, "; "))
}

// logFailures warns, for each guarded expression that failed on records of the batch (now dead
// letters), with DuckDB's error: evaluated alone and unguarded over the batch (probe), the
// expression fails again on one of them.
func (w *batchWriter) logFailures(ctx context.Context, probe func(ctx context.Context, expr string, records bool) error, spec mapping.Spec, mapped, label string) error {
	keys := slices.Sorted(maps.Keys(spec.Guarded))
	if len(keys) == 0 {
		return nil
	}
	counts := make([]string, len(keys))
	for i, key := range keys {
		counts[i] = "count(*) FILTER (contains(_reason, " + warehouse.Quote(key+mapping.FailsHere) + ") AND NOT _skip)"
	}
	failed := make([]int64, len(keys))
	dest := make([]any, len(keys))
	for i := range failed {
		dest[i] = &failed[i]
	}
	if err := w.conn.QueryRowContext(ctx, "SELECT "+strings.Join(counts, ", ")+" FROM temp."+mapped).Scan(dest...); err != nil {
		return fmt.Errorf("count the records of %s its expressions failed on: %w", label, err)
	}
	exprs := spec.Expressions()
	for i, key := range keys {
		if failed[i] == 0 {
			continue
		}
		reason := "the error did not recur when evaluated alone"
		if err := probe(ctx, exprs[key], true); err != nil {
			reason, _, _ = strings.Cut(err.Error(), "\n")
		}
		w.log.Warn("an expression failed on records; they are dead letters (TRY_CAST and the like give NULL instead of an error)",
			"batch", label, "expression", key, "records", failed[i], "error", reason)
	}
	return nil
}

// mappingBatch is the batch as the mapping reads it: its relation (with lookups joined) and its
// fields, read from the relation itself.
func (w *batchWriter) mappingBatch(ctx context.Context, b connectors.Batch, spec mapping.Spec) (mapping.Batch, error) {
	mb := mapping.Batch{Relation: b.Relation, Stream: b.Stream, Seq: b.Seq, PositionSep: b.PositionSep, Unreadable: b.Unreadable,
		Header: b.Header}
	columns, types, err := w.columns(ctx, b.Relation)
	if err != nil {
		return mb, fmt.Errorf("read %s: %w", b.Label, err)
	}
	if len(columns) < 2 {
		return mb, fmt.Errorf("read %s: the source has no fields", b.Label)
	}
	mb.Fields = columns[:len(columns)-1]
	typeFields(&mb, types, b.Nested)
	if b.LineMarker != "" {
		mb.Skip = warehouse.Ident(mb.Fields[0]) + " = " + warehouse.Quote(b.LineMarker)
	}
	if len(spec.Lookups) > 0 {
		if mb, err = w.withLookups(ctx, b, mb, spec.Lookups); err != nil {
			return mb, fmt.Errorf("read %s: %w", b.Label, err)
		}
	}
	return mb, nil
}

// typeFields tells the mapping which of mb's fields hold several values (nested, or told so by
// the connector) and which are bytes, from their DuckDB types, in mb.Fields' order.
func typeFields(mb *mapping.Batch, types []string, nested map[string]string) {
	mb.Nested = maps.Clone(nested)
	if mb.Nested == nil {
		mb.Nested = map[string]string{}
	}
	mb.Binary = map[string]bool{}
	for i, f := range mb.Fields {
		if mapping.Nested(types[i]) {
			mb.Nested[f] = types[i]
		}
		mb.Binary[f] = types[i] == "BLOB"
	}
}

// withLookups joins the source's lookup files onto a batch of tabular records. A lookup key
// that is not unique would double records, so it fails the batch, naming the key.
func (w *batchWriter) withLookups(ctx context.Context, b connectors.Batch, mb mapping.Batch, lookups map[string]mapping.Lookup) (mapping.Batch, error) {
	if b.JSON {
		return mb, fmt.Errorf("lookups need tabular records (CSV, Parquet); these are JSON documents")
	}
	if w.lookupColumns == nil {
		if err := w.resolveLookups(ctx, lookups); err != nil {
			return mb, err
		}
	}
	return mapping.WithLookups(mb, lookups, w.lookupOrder, w.lookupColumns)
}

// resolveLookups orders the lookups and reads each file's columns, checking its key is unique.
func (w *batchWriter) resolveLookups(ctx context.Context, lookups map[string]mapping.Lookup) error {
	order, err := mapping.OrderLookups(lookups)
	if err != nil {
		return err
	}
	columns := map[string][]string{}
	for _, name := range order {
		l := lookups[name]
		if columns[name], _, err = w.columns(ctx, l.Relation()); err != nil {
			return fmt.Errorf("lookup %s: %w", name, err)
		}
		if !slices.Contains(columns[name], l.Key) {
			return fmt.Errorf("lookup %s: %s has no column %s (it has %s)", name, l.File, l.Key, connectors.NameList(columns[name]))
		}
		if err := w.refuseRepeatedNames(ctx, l, columns[name]); err != nil {
			return fmt.Errorf("lookup %s: %w", name, err)
		}
		var dup sql.NullString
		var n int64
		err := w.conn.QueryRowContext(ctx, fmt.Sprintf(`SELECT any_value(k), count(*) FROM (SELECT %[1]s AS k FROM %[2]s
			GROUP BY %[1]s HAVING count(*) > 1)`, warehouse.Ident(l.Key), l.Relation())).Scan(&dup, &n)
		if err != nil {
			return fmt.Errorf("lookup %s: %w", name, err)
		}
		if n > 0 {
			return fmt.Errorf("lookup %s: key %s is not unique in %s (%d keys repeat, e.g. %q)", name, l.Key, l.File, n, dup.String)
		}
	}
	w.lookupOrder, w.lookupColumns = order, columns
	return nil
}

// refuseRepeatedNames fails a lookup file whose header names a column more than once, in any
// capitals: DuckDB renames the second (id, ID → id, ID_1), and a mapping reading the name would
// take one of the two without a word. columns are DuckDB's names for the file's columns.
func (w *batchWriter) refuseRepeatedNames(ctx context.Context, l mapping.Lookup, columns []string) error {
	if !connectors.MayBeRenamed(columns) {
		return nil
	}
	header, err := lookupHeader(ctx, w.conn, l, len(columns))
	if err != nil || len(header) != len(columns) {
		return err // a header DuckDB read otherwise: its names stand
	}
	alike := map[string][]string{}
	for i, h := range header {
		h = cmp.Or(h, columns[i]) // DuckDB names a nameless column column<i>
		if !connectors.RenamedFrom(columns[i], h) {
			return nil // not the line DuckDB took its names from
		}
		alike[strings.ToLower(h)] = append(alike[strings.ToLower(h)], h)
	}
	var repeated []string
	for _, names := range alike {
		if len(names) > 1 {
			repeated = append(repeated, strings.Join(names, " and "))
		}
	}
	if len(repeated) == 0 {
		return nil
	}
	slices.Sort(repeated)
	return fmt.Errorf("%s names a column more than once (%s; names match in any capitals): give each column its own name, as a lookup's columns are read by name",
		l.File, connectors.Printable(strings.Join(repeated, "; ")))
}

// lookupHeader reads a lookup file's column names as the file writes them (DuckDB's own names
// rename a name the file repeats).
func lookupHeader(ctx context.Context, db connectors.Querier, l mapping.Lookup, n int) ([]string, error) {
	if l.Parquet() {
		return connectors.ParquetColumns(ctx, db, l.File)
	}
	raw := make([]sql.NullString, n)
	dest := make([]any, n)
	for i := range raw {
		dest[i] = &raw[i]
	}
	err := db.QueryRowContext(ctx, "SELECT * FROM read_csv("+warehouse.Quote(l.File)+", all_varchar = true, header = false) LIMIT 1").Scan(dest...)
	if err != nil {
		return nil, nil // another shape without a header: DuckDB's names stand
	}
	header := make([]string, n)
	for i, r := range raw {
		header[i] = strings.Trim(r.String, " ") // as DuckDB trims a header's names
	}
	return header, nil
}

// columns lists a relation's columns and their DuckDB types, in order. For files DuckDB only
// sniffs the header to answer.
func (w *batchWriter) columns(ctx context.Context, relation string) (names, types []string, err error) {
	cols, err := warehouse.Describe(ctx, w.conn, "SELECT * FROM "+relation)
	for _, c := range cols {
		names, types = append(names, c.Name), append(types, c.Type)
	}
	return names, types, err
}

// exec runs one statement of a batch, logging its duration at debug level for tuning.
func (w *batchWriter) exec(ctx context.Context, step, query string, args ...any) (sql.Result, error) {
	return w.timed(ctx, w.conn.ExecContext, step, query, args...)
}

// timed runs a statement with exec, logging how long the step took.
func (w *batchWriter) timed(ctx context.Context, exec func(context.Context, string, ...any) (sql.Result, error), step, query string, args ...any) (sql.Result, error) {
	start := time.Now()
	res, err := exec(ctx, query, args...)
	w.log.Debug("batch step", "step", step, "elapsed", time.Since(start).Round(time.Microsecond).String())
	return res, err
}

// mergeStats counts what merging a batch did.
type mergeStats struct{ Loaded, Collapsed, Replaced int64 }

// precedence is the order in which records of one key give way: the record that ranks highest
// is current, whatever order the records were loaded in. A table's version column (customers:
// updated_at) ranks first, a missing version lowest; then the source's name, the stream (a file's
// path, a topic/partition) and the record's number in it (line, row, offset): the later file, the
// later line, the later offset wins.
func precedence(t mapping.Table, alias string) string {
	parts := []string{alias + "._source", alias + "._stream", alias + "._seq"}
	if t.Version != "" {
		parts = append([]string{"coalesce(" + alias + "." + t.Version + ", '-infinity'::TIMESTAMPTZ)"}, parts...)
	}
	return "row(" + strings.Join(parts, ", ") + ")"
}

// merge moves the good rows of `mapped` into the canonical table, one row per key: per key the
// record of highest precedence (this batch's or the stored one) is current, and the others go to
// <table>_superseded. With rollup_lines, a stored order of the same stream is the batch's order
// begun by an earlier batch: the batch's lines add to it (addLines). It returns how many of the
// batch's records became current, how many gave way or were added to a stored order, and how
// many stored records gave way to them.
//
// The common batch (new keys, none repeated) costs one pass to count its keys and the insert:
// the batch is staged in a table of its own only when keys repeat or lines roll up, and stored
// records are joined only when the table has any.
func (w *batchWriter) merge(ctx context.Context, t mapping.Table) (mergeStats, error) {
	var ms mergeStats
	key := t.Key
	cols := strings.Join(t.StoredColumns(), ", ")
	superseded := t.Name + "_superseded"
	rows := goodRows
	if w.spec.RollupLines {
		rows = w.rollup(t)
	}
	// The batch's records with lineage, as they are stored. Lineage constants are inlined: DuckDB
	// then stores them as constant segments, where a bound parameter is materialised row by row.
	incoming := fmt.Sprintf(`(SELECT %s, %s AS _source, _position, now() AS _loaded_at, %s AS _run_id, _extra, _stream, _seq FROM %s m)`,
		strings.Join(t.ColumnNames(), ", "), warehouse.Quote(w.source), warehouse.Quote(w.runID), rows)
	var records, keys int64
	var lowest, highest sql.NullString
	if err := w.conn.QueryRowContext(ctx, fmt.Sprintf(`SELECT count(*), count(DISTINCT %[1]s), min(%[1]s), max(%[1]s) FROM %[2]s`, key, rows)).
		Scan(&records, &keys, &lowest, &highest); err != nil {
		return ms, err
	}
	if w.spec.RollupLines {
		var lines int64
		if err := w.conn.QueryRowContext(ctx, "SELECT count(*) FROM "+goodRows).Scan(&lines); err != nil {
			return ms, err
		}
		ms.Collapsed += lines - records // lines rolled up into their order
	}
	if records > keys {
		// Several records of one key in the batch (rare): all but the highest give way now. Only
		// the repeated keys' records are ranked: ranking all 10.2M records of a customers file
		// with 2% of its keys repeated took 24 s of its 68 s load.
		if _, err := w.exec(ctx, "stage", "CREATE OR REPLACE TEMP TABLE merge_rows AS SELECT * FROM "+incoming); err != nil {
			return ms, err
		}
		defer w.conn.ExecContext(context.WithoutCancel(ctx), "DROP TABLE IF EXISTS temp.merge_rows")
		incoming = "merge_rows"
		losers := fmt.Sprintf(`SELECT rowid AS r FROM merge_rows m WHERE %[1]s IN (SELECT %[1]s FROM merge_rows GROUP BY %[1]s HAVING count(*) > 1)
			QUALIFY row_number() OVER (PARTITION BY %[1]s ORDER BY %[2]s DESC) > 1`, key, precedence(t, "m"))
		if _, err := w.exec(ctx, "collapse", "CREATE OR REPLACE TEMP TABLE merge_losers AS "+losers); err != nil {
			return ms, err
		}
		defer w.conn.ExecContext(context.WithoutCancel(ctx), "DROP TABLE IF EXISTS temp.merge_losers")
		res, err := w.exec(ctx, "collapse", fmt.Sprintf(`INSERT INTO %[1]s (%[2]s) SELECT %[2]s FROM merge_rows WHERE rowid IN (SELECT r FROM merge_losers)`,
			superseded, cols))
		if err != nil {
			return ms, err
		}
		n, _ := res.RowsAffected()
		ms.Collapsed += n
		if _, err := w.exec(ctx, "collapse", "DELETE FROM merge_rows WHERE rowid IN (SELECT r FROM merge_losers)"); err != nil {
			return ms, err
		}
	}
	// Stored records of the batch's keys: which side of each pair stays current. Only stored
	// records within the range of the batch's keys can share one; counting them skips the row
	// groups whose keys lie outside it. A batch of new, increasing keys (the night's
	// orders, the next piece of a file) then needs no join with the stored table (the 1M bench's
	// orders in 128 MiB pieces: 0.4 s a piece).
	var clashes, continued, inRange int64
	if records > 0 {
		if err := w.conn.QueryRowContext(ctx, fmt.Sprintf(`SELECT count(*) FROM %s WHERE %s BETWEEN ? AND ?`, t.Name, key), lowest.String, highest.String).
			Scan(&inRange); err != nil {
			return ms, err
		}
	}
	if inRange > 0 {
		continues := "false"
		if w.spec.RollupLines {
			// A stored order of this source from the same stream (a file, a partition) is this
			// order: an earlier batch loaded its first lines, and the batch's lines add to them.
			continues = "t._source = m._source AND t._stream = m._stream"
		}
		if _, err := w.exec(ctx, "match stored", fmt.Sprintf(`CREATE OR REPLACE TEMP TABLE merge_clash AS
			SELECT m.%[1]s AS k, %[2]s >= %[3]s AS incoming_wins, %[6]s AS continues
			FROM %[4]s m JOIN (SELECT * FROM %[5]s WHERE %[1]s BETWEEN ? AND ?) t ON t.%[1]s = m.%[1]s`,
			key, precedence(t, "m"), precedence(t, "t"), incoming, t.Name, continues), lowest.String, highest.String); err != nil {
			return ms, err
		}
		defer w.conn.ExecContext(context.WithoutCancel(ctx), "DROP TABLE IF EXISTS temp.merge_clash")
		if err := w.conn.QueryRowContext(ctx, "SELECT count(*), count(*) FILTER (continues) FROM merge_clash").Scan(&clashes, &continued); err != nil {
			return ms, err
		}
	}
	if continued > 0 {
		if _, err := w.exec(ctx, "add lines", addLines(t, incoming)); err != nil {
			return ms, err
		}
		ms.Collapsed += continued // lines rolled up into their order
	}
	var older int64 // the batch's records that gave way to a stored one
	if clashes > continued {
		// Stored records that rank below the batch's give way to them, and the batch's records
		// that rank below a stored one give way to it.
		res, err := w.exec(ctx, "replace keys", fmt.Sprintf(`INSERT INTO %[1]s (%[2]s) SELECT %[5]s FROM %[3]s t JOIN merge_clash c ON t.%[4]s = c.k
			WHERE c.incoming_wins AND NOT c.continues`, superseded, cols, t.Name, key, prefixed(cols, "t.")))
		if err != nil {
			return ms, err
		}
		ms.Replaced, _ = res.RowsAffected()
		if _, err := w.exec(ctx, "replace keys", fmt.Sprintf(`DELETE FROM %[1]s t USING merge_clash c WHERE t.%[2]s = c.k AND c.incoming_wins AND NOT c.continues`,
			t.Name, key)); err != nil {
			return ms, err
		}
		res, err = w.exec(ctx, "keep stored", fmt.Sprintf(`INSERT INTO %[1]s (%[2]s) SELECT %[5]s FROM %[3]s m JOIN merge_clash c ON m.%[4]s = c.k
			WHERE NOT c.incoming_wins AND NOT c.continues`, superseded, cols, incoming, key, prefixed(cols, "m.")))
		if err != nil {
			return ms, err
		}
		older, _ = res.RowsAffected()
		ms.Collapsed += older
	}
	insert := fmt.Sprintf(`INSERT INTO %[1]s (%[2]s) SELECT %[2]s FROM %[3]s m`, t.Name, cols, incoming)
	if continued+older > 0 {
		insert += fmt.Sprintf(` WHERE m.%s NOT IN (SELECT k FROM merge_clash WHERE continues OR NOT incoming_wins)`, key)
	}
	res, err := w.exec(ctx, "insert", insert)
	if err != nil {
		return ms, err
	}
	ms.Loaded, err = res.RowsAffected()
	return ms, err
}

// goodRows are the mapped records that load: no reason against them, not skipped.
const goodRows = "(SELECT * FROM mapped WHERE _reason IS NULL AND NOT _skip)"

// prefixed qualifies each column of a comma-separated list.
func prefixed(cols, alias string) string {
	parts := strings.Split(cols, ", ")
	for i, c := range parts {
		parts[i] = alias + c
	}
	return strings.Join(parts, ", ")
}

// replaceStream removes this source's records of one stream (a file that changed) from the table
// and from its superseded records, lets the best superseded record of each key it held become
// current, and marks the stream's dead letters superseded by this run.
func (w *batchWriter) replaceStream(ctx context.Context, t mapping.Table, stream string) error {
	key, superseded := t.Key, t.Name+"_superseded"
	cols := strings.Join(t.StoredColumns(), ", ")
	steps := []struct {
		query string
		args  []any
	}{
		{fmt.Sprintf(`CREATE OR REPLACE TEMP TABLE vacated AS SELECT DISTINCT %s FROM %s WHERE _source = ? AND _stream = ?`, key, t.Name), []any{w.source, stream}},
		{fmt.Sprintf(`DELETE FROM %s WHERE _source = ? AND _stream = ?`, t.Name), []any{w.source, stream}},
		{fmt.Sprintf(`DELETE FROM %s WHERE _source = ? AND _stream = ?`, superseded), []any{w.source, stream}},
		// The next best record of each vacated key, if any, is current again.
		{fmt.Sprintf(`CREATE OR REPLACE TEMP TABLE promoted AS SELECT %[1]s FROM %[2]s s WHERE s.%[3]s IN (SELECT %[3]s FROM vacated)
			QUALIFY row_number() OVER (PARTITION BY s.%[3]s ORDER BY %[4]s DESC) = 1`, prefixed(cols, "s."), superseded, key, precedence(t, "s")), nil},
		{fmt.Sprintf(`DELETE FROM %[1]s s USING promoted p WHERE s.%[2]s = p.%[2]s AND s._source = p._source AND s._stream IS NOT DISTINCT FROM p._stream
			AND s._seq IS NOT DISTINCT FROM p._seq`, superseded, key), nil},
		{fmt.Sprintf(`INSERT INTO %[1]s (%[2]s) SELECT %[2]s FROM promoted`, t.Name, cols), nil},
		// Not the batch's own, written before: a record still bad in the new version is current.
		{`UPDATE dead_letters SET superseded_by = ? WHERE source = ? AND stream = ? AND superseded_by IS NULL AND run_id <> ?`,
			[]any{w.runID, w.source, stream, w.runID}},
		{`DROP TABLE IF EXISTS temp.vacated; DROP TABLE IF EXISTS temp.promoted`, nil},
	}
	for _, s := range steps {
		if _, err := w.exec(ctx, "replace stream", s.query, s.args...); err != nil {
			return err
		}
	}
	return nil
}

// addLines adds the batch's lines of orders an earlier batch of the same stream began to the
// stored orders: additive columns add up (in the money type, as rollup sums them; a column no
// line had stays NULL), the rest stay the first line's.
func addLines(t mapping.Table, incoming string) string {
	var set []string
	for _, c := range t.Columns {
		if c.Additive {
			set = append(set, fmt.Sprintf(`%[1]s = CAST(CASE WHEN t.%[1]s IS NULL AND m.%[1]s IS NULL THEN NULL
				ELSE coalesce(CAST(t.%[1]s AS %[2]s), 0) + coalesce(CAST(m.%[1]s AS %[2]s), 0) END AS DOUBLE)`, c.Name, money))
		}
	}
	return fmt.Sprintf(`UPDATE %[1]s AS t SET %[2]s FROM %[3]s m WHERE t.%[4]s = m.%[4]s AND m.%[4]s IN (SELECT k FROM merge_clash WHERE continues)`,
		t.Name, strings.Join(set, ", "), incoming, t.Key)
}

// rollup sums the lines of one record: additive columns add up, the rest come from the first line.
func (w *batchWriter) rollup(t mapping.Table) string {
	aggs := []string{t.Key}
	for _, c := range t.Columns {
		switch {
		case c.Name == t.Key:
		case c.Additive:
			// Summed as decimals: a sum of doubles depends on the order DuckDB's threads add the
			// lines in (an Online Retail invoice came out 646.82 in one run, 646.8200000000002 in
			// another), as the customer summary's sums do. Every line is finite and within ±1e15.
			aggs = append(aggs, fmt.Sprintf("CAST(sum(CAST(%[1]s AS %[2]s)) AS DOUBLE) AS %[1]s", c.Name, money))
		default:
			aggs = append(aggs, fmt.Sprintf("arg_min(%[1]s, _ordinal) AS %[1]s", c.Name))
		}
	}
	return fmt.Sprintf(`(SELECT %s, arg_min(_position, _ordinal) AS _position, arg_min(_stream, _ordinal) AS _stream, arg_min(_seq, _ordinal) AS _seq,
		arg_min(_extra, _ordinal) AS _extra FROM %s GROUP BY %s)`, strings.Join(aggs, ", "), goodRows, t.Key)
}
