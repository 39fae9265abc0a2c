package file_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/require"

	"github.com/ckm-dev/ckm/connectors/mapping"
	"github.com/ckm-dev/ckm/internal/testutil"
	"github.com/ckm-dev/ckm/pipelines"
)

// Broken and hostile input, each case fed exactly as a real feed sends it. Every run must account
// for every record: read = loaded + dead-lettered + collapsed + skipped, per source and stored.

// requireAccounted checks the invariant on a run's sources and on what pipeline_runs and
// pipeline_run_sources stored for it.
func requireAccounted(t *testing.T, e *env, res *pipelines.Result) {
	t.Helper()
	for _, s := range res.Sources {
		require.Equal(t, s.Read, s.Loaded+s.DeadLettered+s.Collapsed+s.Skipped, "source %s: read = loaded + dead letters + collapsed + skipped (%+v)", s.Name, s.BatchStats)
		var read, loaded, dead, collapsed, skipped int64
		require.NoError(t, e.db().QueryRow(`SELECT rows_read, rows_loaded, dead_letters, rows_collapsed, rows_skipped FROM pipeline_run_sources
			WHERE run_id = ? AND source = ?`, res.RunID, s.Name).Scan(&read, &loaded, &dead, &collapsed, &skipped))
		require.Equal(t, []int64{s.Read, s.Loaded, s.DeadLettered, s.Collapsed, s.Skipped}, []int64{read, loaded, dead, collapsed, skipped}, "stored for %s", s.Name)
	}
	var runRead, runLoaded, runDead, runCollapsed, runSkipped int64
	require.NoError(t, e.db().QueryRow(`SELECT rows_in, rows_loaded, dead_letters, rows_collapsed, rows_skipped FROM pipeline_runs WHERE run_id = ?`, res.RunID).
		Scan(&runRead, &runLoaded, &runDead, &runCollapsed, &runSkipped))
	require.Equal(t, runRead, runLoaded+runDead+runCollapsed+runSkipped, "pipeline_runs accounts for every record")
	// Every file read in this run accounts for its own records, and every dead letter of the run
	// names a position and a reason.
	var unbalanced, nameless int
	require.NoError(t, e.db().QueryRow(`SELECT count(*) FROM ingest_files WHERE run_id = ? AND rows_read <> rows_loaded + dead_letters + rows_collapsed + rows_skipped`,
		res.RunID).Scan(&unbalanced))
	require.Zero(t, unbalanced, "ingest_files rows that do not add up")
	require.NoError(t, e.db().QueryRow(`SELECT count(*) FROM dead_letters WHERE run_id = ? AND (coalesce(position, '') = '' OR coalesce(reason, '') = '')`,
		res.RunID).Scan(&nameless))
	require.Zero(t, nameless)
}

func gzipped(t *testing.T, body string) string {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	_, err := gz.Write([]byte(body))
	require.NoError(t, err)
	require.NoError(t, gz.Close())
	return buf.String()
}

const ordersHeader = "id,cust,ts,amt\n"

// ordersSourceMayBeEmpty is ordersSource for a directory that starts empty.
var ordersSourceMayBeEmpty = strings.Replace(ordersSource, `file: {paths: ["*.csv"]}`, `file: {paths: ["*.csv"], allow_empty: true}`, 1)

// Item 1, files: a line with invalid UTF-8 (Latin-1 café) is a dead letter of its own, in CSV
// and in JSON Lines; the lines around it load.
func TestInvalidUTF8LinesAreDeadLetteredPerLine(t *testing.T) {
	e := setup(t, ordersSource+"\n  events:\n    table: orders\n    file: {paths: [\"*.jsonl\"]}\n"+
		"    mapping: {order_id: id, customer_id: cust, order_ts: ts, amount: amt, status: {const: completed}}", map[string]string{
		"a.csv": ordersHeader + "A1,C1,2026-01-01 10:00:00,1\nA2,caf\xe9,2026-01-01 10:00:00,2\nA3,C3,2026-01-01 10:00:00,3\n",
		"b.jsonl": `{"id":"J1","cust":"C1","ts":"2026-01-01T10:00:00Z","amt":1}` + "\n" +
			`{"id":"J2","cust":"caf` + "\xe9" + `","ts":"2026-01-01T10:00:00Z","amt":2}` + "\n" +
			`{"id":"J3","cust":"C3","ts":"2026-01-01T10:00:00Z","amt":3}` + "\n",
	})
	res := e.run(t)
	requireAccounted(t, e, res)
	require.Equal(t, map[string]string{"A1": "a.csv:2", "A3": "a.csv:4", "J1": "b.jsonl:1", "J3": "b.jsonl:3"},
		e.pairs(t, `SELECT order_id, _position FROM orders`))
	dead := e.pairs(t, `SELECT position, reason FROM dead_letters`)
	require.Len(t, dead, 2)
	require.Contains(t, dead["a.csv:3"], "INVALID ENCODING")
	require.Equal(t, "line is not valid UTF-8 (byte 0xE9 at offset 22)", dead["b.jsonl:2"])
	// A later run reads nothing new and fails on nothing.
	again := e.run(t)
	require.Zero(t, again.Sources[0].Read+again.Sources[1].Read)
}

// Item 2: NaN, ±Inf and numbers too large to sum exactly are dead letters at ingest, for every
// numeric column; a rating must be a whole number 1–5; an infinite timestamp is no timestamp.
// Later runs score without tripping over anything.
func TestNonFiniteAndHugeNumbersAreDeadLetters(t *testing.T) {
	e := setupRatio(t, `  orders:
    table: orders
    file: {paths: ["o.csv"]}
    mapping: {order_id: id, customer_id: cust, order_ts: ts, amount: amt, quantity: qty, status: {const: completed}}
  events:
    table: feedback
    file: {paths: ["f.csv"]}
    mapping: {event_id: id, customer_id: cust, event_ts: ts, direction: {const: inbound}, kind: {const: review}, rating: rating}`,
		map[string]string{
			"o.csv": "id,cust,ts,amt,qty\n" +
				"O1,C1,2026-01-01 10:00:00,10.5,1\n" + // line 2: good
				"O2,C1,2026-01-01 10:00:00,NaN,1\n" +
				"O3,C1,2026-01-01 10:00:00,inf,1\n" +
				"O4,C1,2026-01-01 10:00:00,-Infinity,1\n" +
				"O5,C1,2026-01-01 10:00:00,1e400,1\n" +
				"O6,C1,2026-01-01 10:00:00,1e33,1\n" +
				"O7,C1,2026-01-01 10:00:00,5,NaN\n" + // a quantity is a number too
				"O8,C1,infinity,5,1\n" + // line 9
				"O9,C2,2026-01-02 10:00:00,-999999999999999,2\n", // line 10: within ±1e15
			"f.csv": "id,cust,ts,rating\nE1,C1,2026-01-01 10:00:00,5\nE2,C1,2026-01-01 10:00:00,4.6\nE3,C1,2026-01-01 10:00:00,7\nE4,C1,2026-01-01 10:00:00,4.0\nE5,C1,2026-01-01 10:00:00,NaN\n",
		}, 0.9)
	res := e.run(t)
	requireAccounted(t, e, res)
	require.Equal(t, map[string]string{"O1": "10.5", "O9": "-999999999999999.0"}, e.pairs(t, `SELECT order_id, printf('%.1f', amount) FROM orders`))
	dead := e.pairs(t, `SELECT position, reason FROM dead_letters WHERE source = 'orders'`)
	require.Equal(t, map[string]string{
		"o.csv:3": "amount: 'NaN' is not a finite number within ±1e+15",
		"o.csv:4": "amount: 'inf' is not a finite number within ±1e+15",
		"o.csv:5": "amount: '-Infinity' is not a finite number within ±1e+15",
		"o.csv:6": "amount: '1e400' is not a finite number within ±1e+15",
		"o.csv:7": "amount: '1e33' is not a finite number within ±1e+15",
		"o.csv:8": "quantity: 'NaN' is not a finite number within ±1e+15",
		"o.csv:9": "order_ts: 'infinity' is not a finite timestamp",
	}, dead)
	require.Equal(t, map[string]string{"E1": "5", "E4": "4"}, e.pairs(t, `SELECT event_id, CAST(rating AS VARCHAR) FROM feedback`))
	require.Equal(t, map[string]string{
		"f.csv:3": "rating: cannot read '4.6' as a whole number",
		"f.csv:4": "rating: 7 is outside 1..5",
		"f.csv:6": "rating: cannot read 'NaN' as a whole number",
	}, e.pairs(t, `SELECT position, reason FROM dead_letters WHERE source = 'events'`))
	// RFM sums what loaded, exactly.
	var monetary float64
	require.NoError(t, e.db().QueryRow(`SELECT monetary FROM customer_rfm WHERE customer_id = 'C1'`).Scan(&monetary))
	require.Equal(t, 10.5, monetary)
}

// Item 3: a matched file is read as exactly that file, whatever characters its name holds:
// orders[1].csv is not orders1.csv, and orders_*.csv is one file, not a pattern.
func TestFileNamesWithGlobCharactersAreReadLiterally(t *testing.T) {
	e := setup(t, `  orders:
    table: orders
    file: {paths: ["orders*.csv"]}
    mapping: {order_id: id, customer_id: cust, order_ts: ts, amount: amt, status: {const: completed}}`, map[string]string{
		"orders[1].csv": ordersHeader + "B1,C1,2026-01-01 10:00:00,1\nB2,C1,2026-01-01 10:00:00,2\n",
		"orders1.csv":   ordersHeader + "P1,C1,2026-01-01 10:00:00,3\n",
		"orders_*.csv":  ordersHeader + "S1,C1,2026-01-01 10:00:00,4\n",
		"orders_x.csv":  ordersHeader + "X1,C1,2026-01-01 10:00:00,5\n",
		"orders{a}.csv": ordersHeader + "Y1,C1,2026-01-01 10:00:00,6\n",
	})
	res := e.run(t)
	requireAccounted(t, e, res)
	require.EqualValues(t, 6, res.Sources[0].Read)
	require.Equal(t, map[string]string{"B1": "orders[1].csv:2", "B2": "orders[1].csv:3", "P1": "orders1.csv:2", "S1": "orders_*.csv:2",
		"X1": "orders_x.csv:2", "Y1": "orders{a}.csv:2"}, e.pairs(t, `SELECT order_id, _position FROM orders`))
}

// identifiers lists every name-like word of an SQL text.
func identifiers(sql string) []string {
	words := regexp.MustCompile(`[A-Za-z_][A-Za-z0-9_]*`).FindAllString(sql, -1)
	slices.Sort(words)
	return slices.Compact(words)
}

// Item 4: no column name of an untrusted file reaches the names of the generated SQL. A file
// whose header holds every identifier the mapping SQL uses (v_amount, _reason, _position,
// _ordinal, ordinality, the internal prefix itself, ...) loads exactly as the same file without
// those columns.
func TestHeadersNamedLikeTheGeneratedSQLChangeNothing(t *testing.T) {
	const good = "A1,C1,2026-01-01 10:00:00,10\nA2,C2,2026-01-01 11:00:00,garbage\nA3,,2026-01-01 12:00:00,30\nA1,C1,2026-01-02 10:00:00,11\n"
	clean := setupRatio(t, ordersSource, map[string]string{"a.csv": ordersHeader + good}, 0.9)
	want := clean.run(t)
	requireAccounted(t, clean, want)

	spec := clean.cfg.MappingSpec("orders", false)
	sql := spec.Compile(mapping.Batch{Relation: "read_csv('a.csv')", Fields: []string{"id", "cust", "ts", "amt"}, Stream: "'a.csv'", Seq: "{ordinal} + 1", PositionSep: ":"})
	var hostile []string
	// The generated SQL's names, those of earlier versions (v_amount, r_customer_id, …) and the
	// readers' own (ordinality, file_row_number), and those of the records' numbering after
	// mapping (rowid, the placeholder column, the table numbered).
	names := append(identifiers(sql), "ordinality", "file_row_number", "payload", "_doc", "mapped", "merge_rows", "mapped_rows", "rowid", "CAST(NULL AS BIGINT)")
	for _, c := range spec.Table.ColumnNames() {
		names = append(names, "v_"+c, "r_"+c)
	}
	for _, id := range names {
		if !slices.Contains([]string{"id", "cust", "ts", "amt"}, id) && !slices.Contains(hostile, id) {
			hostile = append(hostile, id)
		}
	}
	require.Contains(t, hostile, "_ckm_v_amount", "the generated SQL's own names are in the header")
	require.Contains(t, hostile, "_reason")
	t.Logf("%d hostile column names", len(hostile))
	poison := func(name string) string {
		switch name {
		case "_reason", "_ckm_reason":
			return "" // an empty reason would switch dead-lettering off
		case "_position", "_stream", "_ckm_stream":
			return "forged.csv"
		}
		return "888"
	}
	var header, values []string
	for _, h := range hostile {
		header = append(header, h)
		values = append(values, poison(h))
	}
	var body strings.Builder
	body.WriteString(strings.TrimSuffix(ordersHeader, "\n") + "," + strings.Join(header, ",") + "\n")
	for _, line := range strings.Split(strings.TrimSpace(good), "\n") {
		body.WriteString(line + "," + strings.Join(values, ",") + "\n")
	}
	e := setupRatio(t, ordersSource, map[string]string{"a.csv": body.String()}, 0.9)
	got := e.run(t)
	requireAccounted(t, e, got)
	require.Equal(t, want.Sources[0].BatchStats, got.Sources[0].BatchStats)
	const rows = `SELECT order_id, concat_ws('|', customer_id, order_ts, amount, status, _position, _stream, _seq) FROM orders`
	require.Equal(t, clean.pairs(t, rows), e.pairs(t, rows))
	const dead = `SELECT position, reason FROM dead_letters`
	require.Equal(t, clean.pairs(t, dead), e.pairs(t, dead))
	require.Equal(t, map[string]string{"a.csv:3": "amount: cannot read 'garbage' as a number", "a.csv:4": "missing customer_id (field cust)"}, e.pairs(t, dead))

	// The same header in Parquet.
	pq := setupRatio(t, strings.Replace(ordersSourceMayBeEmpty, `"*.csv"`, `"*.parquet"`, 1), nil, 0.9)
	_, err := pq.db().Exec(`COPY (SELECT * FROM read_csv(?, all_varchar = true)) TO '`+filepath.Join(pq.dir, "a.parquet")+`' (FORMAT parquet)`,
		filepath.Join(e.dir, "a.csv"))
	require.NoError(t, err)
	pres := pq.run(t)
	requireAccounted(t, pq, pres)
	require.Equal(t, want.Sources[0].BatchStats, pres.Sources[0].BatchStats)
	require.Equal(t, map[string]string{"a.parquet:row 2": "amount: cannot read 'garbage' as a number", "a.parquet:row 3": "missing customer_id (field cust)"}, pq.pairs(t, dead))
}

// Item 5: a truncated gzip file is not a silent success. It is one dead letter naming the file
// and the damage, none of its rows load, and once the file arrives whole it loads and its dead
// letter is marked superseded.
func TestTruncatedGzipFailsTheFileLoudlyAndIsRetriedWhenWhole(t *testing.T) {
	var lines strings.Builder
	lines.WriteString(ordersHeader)
	for i := 1; i <= 2000; i++ {
		fmt.Fprintf(&lines, "O%04d,C%03d,2026-01-%02d 10:00:00,%d.5\n", i, i%100, 1+i%28, i)
	}
	whole := gzipped(t, lines.String())
	e := setupRatio(t, `  orders:
    table: orders
    file: {paths: ["*.csv.gz"]}
    mapping: {order_id: id, customer_id: cust, order_ts: ts, amount: amt, status: {const: completed}}`,
		map[string]string{"orders.csv.gz": whole[:len(whole)/2], "other.csv.gz": gzipped(t, ordersHeader+"X1,C1,2026-01-01 10:00:00,1\n")}, 0.9)
	res := e.run(t)
	requireAccounted(t, e, res)
	require.EqualValues(t, 1, res.Sources[0].Loaded, "the sound file loads")
	require.EqualValues(t, 1, res.Sources[0].DeadLettered, "the damaged file is one dead letter")
	var reason, damage string
	require.NoError(t, e.db().QueryRow(`SELECT reason FROM dead_letters WHERE position = 'orders.csv.gz'`).Scan(&reason))
	require.Contains(t, reason, "truncated or corrupt gzip")
	require.Contains(t, reason, "read again once the file changes")
	require.NoError(t, e.db().QueryRow(`SELECT damage FROM ingest_files WHERE path = 'orders.csv.gz'`).Scan(&damage))
	require.Contains(t, damage, "truncated or corrupt gzip")
	// Unchanged, it is not reported again.
	again := e.run(t)
	require.Zero(t, again.Sources[0].Read)
	// Nor is it read by a reload, which would only find it damaged again.
	reloaded, err := (&pipelines.Runner{Config: e.cfg, Warehouse: e.w, Log: slog.New(slog.DiscardHandler)}).Reload(context.Background(), "orders")
	require.NoError(t, err)
	require.EqualValues(t, 1, reloaded.Read, "other.csv.gz, read again")
	var damages int
	require.NoError(t, e.db().QueryRow(`SELECT count(*) FROM dead_letters WHERE position = 'orders.csv.gz'`).Scan(&damages))
	require.Equal(t, 1, damages)

	writeFile(t, filepath.Join(e.dir, "orders.csv.gz"), whole)
	res = e.run(t)
	requireAccounted(t, e, res)
	require.EqualValues(t, 2000, res.Sources[0].Loaded)
	var orders, current int
	require.NoError(t, e.db().QueryRow(`SELECT count(*) FROM orders`).Scan(&orders))
	require.Equal(t, 2001, orders)
	require.NoError(t, e.db().QueryRow(`SELECT count(*) FROM dead_letters WHERE superseded_by IS NULL`).Scan(&current))
	require.Zero(t, current, "the damage is superseded by the complete file")
	require.NoError(t, e.db().QueryRow(`SELECT coalesce(damage, '') FROM ingest_files WHERE path = 'orders.csv.gz'`).Scan(&damage))
	require.Empty(t, damage)
}

// Item 6: one bad line never fails a CSV file: a line over max_line_size is a dead letter with
// its true line number, a CRLF line among LF lines is simply a line, and a 0-byte file is an
// empty file.
func TestOneBadLineDoesNotFailACSVFile(t *testing.T) {
	long := "L2,C1,2026-01-01 10:00:00," + strings.Repeat("9", 3_000_000) + "\n"
	e := setupRatio(t, ordersSource, map[string]string{
		"long.csv":  ordersHeader + "L1,C1,2026-01-01 10:00:00,1\n" + long + "L3,C1,2026-01-01 10:00:00,3\n",
		"mixed.csv": "id,cust,ts,amt\nM1,C1,2026-01-01 10:00:00,1\nM2,C2,2026-01-01 10:00:00,2\r\nM3,C3,2026-01-01 10:00:00,3\nM4,C4,2026-01-01 10:00:00,4\n",
		"empty.csv": "",
	}, 0.9)
	res := e.run(t)
	requireAccounted(t, e, res)
	require.Equal(t, map[string]string{"L1": "long.csv:2", "L3": "long.csv:4", "M1": "mixed.csv:2", "M2": "mixed.csv:3", "M3": "mixed.csv:4", "M4": "mixed.csv:5"},
		e.pairs(t, `SELECT order_id, _position FROM orders`))
	require.Equal(t, map[string]string{"M2": "C2"}, e.pairs(t, `SELECT order_id, customer_id FROM orders WHERE order_id = 'M2'`), "no stray \\r")
	dead := e.pairs(t, `SELECT position, reason FROM dead_letters`)
	require.Len(t, dead, 1)
	require.Contains(t, dead["long.csv:3"], "LINE SIZE OVER MAXIMUM")
	var payload string
	require.NoError(t, e.db().QueryRow(`SELECT payload FROM dead_letters`).Scan(&payload))
	// A line over max_line_size keeps its head; a record within the limit would be kept whole.
	require.True(t, strings.HasPrefix(payload, "L2,C1,2026-01-01 10:00:00,999"), payload[:40])
	require.True(t, strings.HasSuffix(payload, " bytes, cut to the first 4096)"), payload[4000:])
	require.Less(t, len(payload), 4200, "a dead letter of an oversized line keeps its head")
	var emptyRead int64
	require.NoError(t, e.db().QueryRow(`SELECT rows_read FROM ingest_files WHERE path = 'empty.csv'`).Scan(&emptyRead))
	require.Zero(t, emptyRead)

	// max_line_size can be raised for a source whose lines are long.
	raised := setupRatio(t, strings.Replace(ordersSource, `file: {paths: ["*.csv"]}`, `file: {paths: ["*.csv"], max_line_size: 4MiB}`, 1),
		map[string]string{"long.csv": ordersHeader + "L1,C1,2026-01-01 10:00:00,1\n" + long}, 0.9)
	r2 := raised.run(t)
	require.EqualValues(t, 1, r2.Sources[0].Loaded)
	require.EqualValues(t, 1, r2.Sources[0].DeadLettered, "the 3 MB amount loads as text, and is no number")
	require.Contains(t, raised.pairs(t, `SELECT position, reason FROM dead_letters`)["long.csv:3"], "is not a finite number")
}

// orderRows is every stored order with its lineage, for comparing warehouses.
const orderRows = `SELECT order_id, concat_ws('|', customer_id, amount, _position) FROM orders`

// Item 7: which record wins when one key arrives from several records does not depend on the
// order files were loaded or changed in: any history of the same final files ends in the
// tables a fresh load of them gives.
func TestFinalStateDoesNotDependOnLoadHistory(t *testing.T) {
	a1 := ordersHeader + "K1,C1,2026-01-01 10:00:00,1\nK2,C1,2026-01-01 10:00:00,2\nA1,C1,2026-01-01 10:00:00,3\n"
	a2 := ordersHeader + "K1,C1,2026-01-01 10:00:00,100\nK2,C1,2026-01-01 10:00:00,200\nA1,C1,2026-01-01 10:00:00,300\nK3,C1,2026-01-01 10:00:00,4\n"
	b1 := ordersHeader + "K1,C2,2026-01-02 10:00:00,10\nK2,C2,2026-01-02 10:00:00,20\nB1,C2,2026-01-02 10:00:00,30\nK1,C2,2026-01-03 10:00:00,11\n"
	b2 := ordersHeader + "K1,C2,2026-01-02 10:00:00,12\nB1,C2,2026-01-02 10:00:00,30\n" // b.csv drops K2: a.csv's K2 is current again
	fresh := func(t *testing.T, files map[string]string) map[string]string {
		e := setup(t, ordersSource, files)
		requireAccounted(t, e, e.run(t))
		return e.pairs(t, orderRows)
	}
	for _, tc := range []struct {
		name  string
		steps []map[string]string // the files written before each run
		final map[string]string
	}{
		{"b after a", []map[string]string{{"a.csv": a1}, {"b.csv": b1}}, map[string]string{"a.csv": a1, "b.csv": b1}},
		{"a after b", []map[string]string{{"b.csv": b1}, {"a.csv": a1}}, map[string]string{"a.csv": a1, "b.csv": b1}},
		{"a changes after b", []map[string]string{{"a.csv": a1, "b.csv": b1}, {"a.csv": a2}}, map[string]string{"a.csv": a2, "b.csv": b1}},
		{"b drops a key a has", []map[string]string{{"a.csv": a1}, {"b.csv": b1}, {"b.csv": b2}}, map[string]string{"a.csv": a1, "b.csv": b2}},
		{"both change, in turns", []map[string]string{{"b.csv": b2}, {"a.csv": a2}, {"b.csv": b1}, {"a.csv": a1}, {"b.csv": b2}},
			map[string]string{"a.csv": a1, "b.csv": b2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := setup(t, ordersSourceMayBeEmpty, nil)
			for _, step := range tc.steps {
				for name, body := range step {
					writeFile(t, filepath.Join(e.dir, name), body)
				}
				requireAccounted(t, e, e.run(t))
			}
			require.Equal(t, fresh(t, tc.final), e.pairs(t, orderRows))
			// Nothing is lost: every line of the final files is current or superseded.
			var current, superseded int
			require.NoError(t, e.db().QueryRow(`SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM orders_superseded)`).Scan(&current, &superseded))
			lines := 0
			for _, body := range tc.final {
				lines += strings.Count(body, "\n") - 1
			}
			require.Equal(t, lines, current+superseded)
		})
	}
}

// Item 8: a changed file replaces its own rows only, not those of a file whose name extends its own.
func TestAChangedFileLeavesFilesWithLongerNamesAlone(t *testing.T) {
	e := setup(t, ordersSource, map[string]string{
		"orders_a.csv":                ordersHeader + "A1,C1,2026-01-01 10:00:00,1\n",
		"orders_a.csv:2026-01-02.csv": ordersHeader + "D1,C1,2026-01-02 10:00:00,2\nD2,C1,2026-01-02 10:00:00,3\n",
	})
	requireAccounted(t, e, e.run(t))
	writeFile(t, filepath.Join(e.dir, "orders_a.csv"), ordersHeader+"A2,C1,2026-01-01 10:00:00,5\n")
	requireAccounted(t, e, e.run(t))
	require.Equal(t, map[string]string{"A2": "orders_a.csv:2", "D1": "orders_a.csv:2026-01-02.csv:2", "D2": "orders_a.csv:2026-01-02.csv:3"},
		e.pairs(t, `SELECT order_id, _position FROM orders`))
}

// Item 9: duplicates are counted as collapsed, "loaded" counts only what is current, dead letters
// of a file since fixed are marked superseded, and a NUL byte in text is a dead letter.
func TestAccountingOfDuplicatesFixesAndNULBytes(t *testing.T) {
	e := setupRatio(t, ordersSource+"\n    filter: \"cust <> 'TEST' -- test orders are no sales\"", map[string]string{
		"a.csv": ordersHeader + "A1,C1,2026-01-01 10:00:00,1\nA1,C1,2026-01-01 10:00:00,2\nA2,C1,2026-01-01 10:00:00,x\n" +
			"A3,C\x001,2026-01-01 10:00:00,3\nA4,TEST,2026-01-01 10:00:00,4\n",
	}, 0.9)
	res := e.run(t)
	requireAccounted(t, e, res)
	s := res.Sources[0]
	require.EqualValues(t, 5, s.Read)
	require.EqualValues(t, 1, s.Loaded, "A1 once")
	require.EqualValues(t, 1, s.Collapsed, "the earlier A1")
	require.EqualValues(t, 2, s.DeadLettered, "A2's amount, A3's NUL byte")
	require.EqualValues(t, 1, s.Skipped, "the filtered test order")
	require.Equal(t, "customer_id: contains a NUL byte", e.pairs(t, `SELECT position, reason FROM dead_letters`)["a.csv:5"])
	require.Equal(t, map[string]string{"A1": "2"}, e.pairs(t, `SELECT order_id, printf('%g', amount) FROM orders`))
	require.Equal(t, map[string]string{"A1": "1"}, e.pairs(t, `SELECT order_id, printf('%g', amount) FROM orders_superseded`))

	// The file is fixed: its old dead letters are superseded, the new version's counts stand.
	writeFile(t, filepath.Join(e.dir, "a.csv"), ordersHeader+"A1,C1,2026-01-01 10:00:00,2\nA2,C1,2026-01-01 10:00:00,7\nA3,C1,2026-01-01 10:00:00,3\n")
	res = e.run(t)
	requireAccounted(t, e, res)
	require.EqualValues(t, 3, res.Sources[0].Loaded)
	var current, superseded int
	require.NoError(t, e.db().QueryRow(`SELECT count(*) FILTER (superseded_by IS NULL), count(*) FILTER (superseded_by = ?) FROM dead_letters`, res.RunID).
		Scan(&current, &superseded))
	require.Equal(t, []int{0, 2}, []int{current, superseded})
	var fileLoaded, fileDead int64
	require.NoError(t, e.db().QueryRow(`SELECT rows_loaded, dead_letters FROM ingest_files WHERE path = 'a.csv'`).Scan(&fileLoaded, &fileDead))
	require.Equal(t, []int64{3, 0}, []int64{fileLoaded, fileDead})
	var superseded2 int
	require.NoError(t, e.db().QueryRow(`SELECT count(*) FROM orders_superseded`).Scan(&superseded2))
	require.Zero(t, superseded2, "the earlier A1 left with its file's old version")
}

const eventsSource = `  events:
    table: orders
    file: {paths: ["*.jsonl"]}
    mapping: {order_id: id, customer_id: cust, order_ts: ts, amount: amt, status: {const: completed}}`

// JSON Lines are split on \n alone: a stray \r (which DuckDB's CSV reader fails a whole file on)
// is only a character of its line, a \r\n ending is a line ending, and line numbers count \n.
func TestJSONLinesWithStrayCarriageReturns(t *testing.T) {
	e := setupRatio(t, eventsSource, map[string]string{
		"a.jsonl": "\r0\n" + `{"id":"J1","cust":"C1","ts":"2026-01-01T10:00:00Z","amt":1}` + "\r\n" +
			`{"id":"J2",` + "\r" + `"cust":"C2","ts":"2026-01-01T10:00:00Z","amt":2}` + "\n" +
			`{"id":"J3","cust":"C3","ts":"2026-01-01T10:00:00Z","amt":3}`, // no final \n
	}, 0.9)
	res := e.run(t)
	requireAccounted(t, e, res)
	require.Equal(t, map[string]string{"J1": "a.jsonl:2", "J2": "a.jsonl:3", "J3": "a.jsonl:4"}, e.pairs(t, `SELECT order_id, _position FROM orders`))
	require.Equal(t, map[string]string{"a.jsonl:1": "not a JSON object"}, e.pairs(t, `SELECT position, reason FROM dead_letters`))
}

// A large CSV or JSON Lines file loads a batch at a time, each committed with its lines. When a
// load stops after some of them (here: a later batch crosses max_bad_ratio), the file is read
// again whole once it changes, replacing what the first batches loaded: nothing doubled, every
// line accounted for. (An unchanged file resumes instead: the conformance suite's crash tests.)
func TestAFileStoppedHalfWayIsReadAgainWhole(t *testing.T) {
	const jsonLine = `{"id":"J%04d","cust":"C%02d","ts":"2026-01-01T10:00:00Z","amt":%d}` + "\n"
	const csvLine = "A%04d,C%02d,2026-01-01 10:00:00,%d\n"
	jsonBytes := len(fmt.Sprintf(jsonLine, 1, 1, 10)) - 1 // JSON Lines batches count text without line ends
	for _, tc := range []struct {
		name, source, file, header, line, bad string
		firstLine                             int
	}{
		{"JSON Lines by lines", strings.Replace(eventsSource, `paths: ["*.jsonl"]`, `paths: ["*.jsonl"], batch_size: 500`, 1),
			"a.jsonl", "", jsonLine, "not json\n", 1},
		{"JSON Lines by bytes", strings.Replace(eventsSource, `paths: ["*.jsonl"]`, fmt.Sprintf(`paths: ["*.jsonl"], batch_bytes: %d`, 500*jsonBytes), 1),
			"a.jsonl", "", jsonLine, "not json\n", 1},
		{"CSV in pieces", piecesSource(fmt.Sprint(500 * len(fmt.Sprintf(csvLine, 1, 1, 10)))),
			"a.csv", "id,cust,ts,amt\n", csvLine, "B,C1,2026-01-01 10:00:00,x\n", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			good := tc.header
			for i := 1; i <= 1200; i++ {
				good += fmt.Sprintf(tc.line, i, i%50, 10+i%90) // two-digit amounts: every line one length
			}
			e := setupRatio(t, tc.source, map[string]string{tc.file: good + strings.Repeat(tc.bad, 300)}, 0.1)
			r := &pipelines.Runner{Config: e.cfg, Warehouse: e.w, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
			_, err := r.Run(context.Background(), pipelines.Request{Pipeline: "p", AsOf: time.Date(2026, 3, 31, 0, 0, 0, 0, time.UTC)})
			require.ErrorContains(t, err, "max_bad_ratio")
			var rows int
			require.NoError(t, e.db().QueryRow(`SELECT count(*) FROM orders`).Scan(&rows))
			require.Equal(t, 1000, rows, "the first two batches committed")

			writeFile(t, filepath.Join(e.dir, tc.file), good+tc.bad)
			res := e.run(t)
			requireAccounted(t, e, res)
			require.Equal(t, []int64{1201, 1200, 1}, []int64{res.Sources[0].Read, res.Sources[0].Loaded, res.Sources[0].DeadLettered})
			var distinct, current, first, last int
			require.NoError(t, e.db().QueryRow(`SELECT count(*), count(DISTINCT order_id), min(_seq), max(_seq) FROM orders`).Scan(&rows, &distinct, &first, &last))
			require.Equal(t, []int{1200, 1200, tc.firstLine, tc.firstLine + 1199}, []int{rows, distinct, first, last})
			require.NoError(t, e.db().QueryRow(`SELECT count(*) FROM dead_letters WHERE superseded_by IS NULL`).Scan(&current))
			require.Equal(t, 1, current)
			var fileRead, fileLoaded int64
			require.NoError(t, e.db().QueryRow(`SELECT rows_read, rows_loaded FROM ingest_files WHERE path = ?`, tc.file).Scan(&fileRead, &fileLoaded))
			require.Equal(t, []int64{1201, 1200}, []int64{fileRead, fileLoaded})
		})
	}
}

// A quote that is never closed joins the lines after it, up to the next quote, into one record
// (found on the Online Retail file: 107 lines became one dead letter). That record's dead letter
// says which lines it spans, and the records after it keep the numbers of their own lines.
func TestAnUnclosedQuoteSpansLinesAndLaterPositionsStayTrue(t *testing.T) {
	e := setupRatio(t, badRecordSources, map[string]string{"a.csv": "id,cust,ts,amt,qty,status\n" +
		"Q1,\"C, 1\",2026-01-05 10:00:00,1,1,completed\n" + // 2
		"B1,\"C1,2026-01-05 10:00:00,1,1,completed\n" + // 3: the quote opens here…
		"S1,C1,2026-01-05 10:00:00,1,1,completed\n" + // 4
		"S2,\"C2\",2026-01-05 10:00:00,1,1,completed\n" + // 5: …and closes here
		"G2,C2,2026-01-05 10:00:00,5,1,completed\n" + // 6
		"B2,C2,2026-01-05 10:00:00,1,1,completed,extra\n" + // 7
		"G3,C3,2026-01-05 10:00:00,7,1,completed\n"}, 1) // 8
	res := e.run(t)
	requireAccounted(t, e, res)
	require.Equal(t, map[string]string{"Q1": "a.csv:2", "G2": "a.csv:6", "G3": "a.csv:8"}, e.pairs(t, `SELECT order_id, _position FROM orders`))
	dead := e.pairs(t, `SELECT position, reason FROM dead_letters`)
	require.Len(t, dead, 2, "%v", dead)
	require.Contains(t, dead["a.csv:3"], "one record of lines 3–5")
	require.Contains(t, dead["a.csv:7"], "TOO MANY COLUMNS")
}

// A quote left open on the last line takes only that line.
func TestAnUnclosedQuoteOnTheLastLineSpansOnlyThatLine(t *testing.T) {
	for _, ending := range []string{"\n", "\r\n"} {
		e := setupRatio(t, ordersSource, map[string]string{"a.csv": "id,cust,ts,amt" + ending +
			"A2,C1,2026-01-01 10:00:00,1" + ending + "B3,C1,2026-01-01 10:00:00,\"1" + ending}, 1)
		requireAccounted(t, e, e.run(t))
		require.Equal(t, map[string]string{"a.csv:3": "UNQUOTED VALUE: Value with unterminated quote found."},
			e.pairs(t, `SELECT position, reason FROM dead_letters`), "%q", ending)
	}
}

// DuckDB's CSV reader passes over blank lines without a trace; the records after them must
// still name their own lines. A blank line inside a quoted value is the value's. Blank lines
// are not records: they are not counted as read.
func TestBlankLinesKeepLaterRecordsOnTheirLines(t *testing.T) {
	lines := []string{
		"id,cust,ts,amt",                  // 1
		"A2,C1,2026-01-01 10:00:00,2",     // 2
		"",                                // 3
		"A4,\"C1\",2026-01-01 10:00:00,4", // 4
		"B5,C1",                           // 5: a short row
		"",                                // 6
		"",                                // 7
		"B8,C1,2026-01-01 10:00:00,x",     // 8: the mapping fails
		"A9,C1,2026-01-01 10:00:00,9",     // 9
		"A10,\"C",                         // 10: a quoted value over three lines, a blank one among them
		"",                                // 11
		"1\",2026-01-01 10:00:00,10",      // 12
		"",                                // 13
	}
	for _, ending := range []string{"\n", "\r\n"} {
		t.Run(fmt.Sprintf("%q", ending), func(t *testing.T) {
			e := setupRatio(t, ordersSource, map[string]string{"a.csv": strings.Join(lines, ending)}, 1)
			res := e.run(t)
			requireAccounted(t, e, res)
			require.EqualValues(t, 6, res.Sources[0].Read, "the records, and nothing else")
			require.Equal(t, map[string]string{"A2": "a.csv:2", "A4": "a.csv:4", "A9": "a.csv:9", "A10": "a.csv:10"},
				e.pairs(t, `SELECT order_id, _position FROM orders`))
			require.Equal(t, map[string]string{"A10": "C" + ending + ending + "1"}, e.pairs(t, `SELECT order_id, customer_id FROM orders WHERE order_id = 'A10'`))
			require.Equal(t, map[string]string{"a.csv:5": "MISSING COLUMNS: Expected Number of Columns: 4 Found: 2",
				"a.csv:8": "amount: cannot read 'x' as a number"}, e.pairs(t, `SELECT position, reason FROM dead_letters`))
		})
	}
}

// When DuckDB's sniffer finds comment lines, the reader passes over them as over blank lines,
// also before the header.
func TestCommentLinesKeepLaterRecordsOnTheirLines(t *testing.T) {
	e := setup(t, ordersSource, map[string]string{"a.csv": "# exported by the shop\n" + // 1
		"id,cust,ts,amt\n" + // 2
		"A3,C1,2026-01-01 10:00:00,3\n" + // 3
		"# a note\n" + // 4
		"A5,C1,2026-01-01 10:00:00,5\n" + // 5
		"\n" + // 6
		"# another note\n" + // 7
		"A8,C1,2026-01-01 10:00:00,8\n"}) // 8
	res := e.run(t)
	requireAccounted(t, e, res)
	require.EqualValues(t, 3, res.Sources[0].Read)
	require.Equal(t, map[string]string{"A3": "a.csv:3", "A5": "a.csv:5", "A8": "a.csv:8"}, e.pairs(t, `SELECT order_id, _position FROM orders`))
}

// CSV files written in another encoding (Excel's Windows-1252, UTF-16) load as UTF-8 with
// csv.encoding; without it their non-ASCII lines are dead letters, never mangled text.
func TestEncodedCSVFilesLoadAsUTF8(t *testing.T) {
	utf16 := func(s string) string { // little-endian, with a byte order mark
		out := []byte{0xFF, 0xFE}
		for _, r := range s {
			out = append(out, byte(r), byte(r>>8))
		}
		return string(out)
	}
	for _, tc := range []struct{ encoding, body, want string }{
		{"windows-1252", "id,cust,ts,amt\r\nA2,Caf\xe9 \x80 \x93q\x94,2026-01-01 10:00:00,1\r\n\r\nA4,C2,2026-01-01 10:00:00,2\r\n", "Café € “q”"},
		{"latin-1", "id,cust,ts,amt\nA2,Caf\xe9,2026-01-01 10:00:00,1\n\nA4,C2,2026-01-01 10:00:00,2\n", "Café"},
		{"utf-16", utf16("id,cust,ts,amt\nA2,Ünïcødé ✓,2026-01-01 10:00:00,1\n\nA4,C2,2026-01-01 10:00:00,2\n"), "Ünïcødé ✓"},
	} {
		t.Run(tc.encoding, func(t *testing.T) {
			e := setup(t, `  orders:
    table: orders
    file: {paths: ["a.csv"], csv: {encoding: `+tc.encoding+`}}
    mapping: {order_id: id, customer_id: cust, order_ts: ts, amount: amt, status: {const: completed}}`, map[string]string{"a.csv": tc.body})
			res := e.run(t)
			requireAccounted(t, e, res)
			require.Equal(t, map[string]string{"A2": tc.want + " @ a.csv:2", "A4": "C2 @ a.csv:4"},
				e.pairs(t, `SELECT order_id, customer_id || ' @ ' || _position FROM orders`))
		})
	}
}

// A UTF-16 byte order mark declares the file's encoding (Excel's "Unicode text", PowerShell's
// redirections): CSV and JSON Lines in either byte order load without configuration, line
// numbers as in the file, and an unchanged file is not read again.
func TestUTF16FilesWithAByteOrderMarkLoadUnconfigured(t *testing.T) {
	encode := func(s string, big bool) string {
		units := utf16.Encode([]rune("\ufeff" + s))
		out := make([]byte, 0, 2*len(units))
		for _, u := range units {
			if big {
				out = append(out, byte(u>>8), byte(u))
			} else {
				out = append(out, byte(u), byte(u>>8))
			}
		}
		return string(out)
	}
	csv := "id,cust,ts,amt\r\nA2,Ünïcødé 𝄞,2026-01-01 10:00:00,1\r\n\r\nA4,C2,2026-01-01 10:00:00,x\r\n"
	jsonl := `{"id":"J1","cust":"Ünïcødé 𝄞","ts":"2026-01-01T10:00:00Z","amt":1}` + "\r\n" + `{"id":"J2","cust":"C2","ts":"2026-01-01T10:00:00Z","amt":"x"}` + "\r\n"
	for _, big := range []bool{false, true} {
		e := setupRatio(t, ordersSource+`
  events:
    table: orders
    file: {paths: ["*.jsonl"]}
    mapping: {order_id: id, customer_id: cust, order_ts: ts, amount: amt, status: {const: completed}}`,
			map[string]string{"a.csv": encode(csv, big), "b.jsonl": encode(jsonl, big)}, 0.9)
		requireAccounted(t, e, e.run(t))
		require.Equal(t, map[string]string{"A2": "Ünïcødé 𝄞 @ a.csv:2", "J1": "Ünïcødé 𝄞 @ b.jsonl:1"},
			e.pairs(t, `SELECT order_id, customer_id || ' @ ' || _position FROM orders`), "big-endian %t", big)
		require.Equal(t, map[string]string{"a.csv:4": "amount: cannot read 'x' as a number", "b.jsonl:2": "amount: cannot read 'x' as a number"},
			e.pairs(t, `SELECT position, reason FROM dead_letters`), "big-endian %t", big)
		again := e.run(t)
		for _, src := range again.Sources {
			require.Zero(t, src.Read, "an unchanged file is not read again: %s", src.Name)
		}
	}
}

// A compressed file is read as what its first bytes say, whatever its name: gzip or zstd named
// orders.csv (an extension forgotten), zstd named .gz. Before, such a CSV file failed the run
// ("the source does not have id, …; it has column0") and each JSON line was a dead letter.
func TestCompressedFilesAreToldByTheirContentNotTheirName(t *testing.T) {
	var zst bytes.Buffer
	zw, err := zstd.NewWriter(&zst)
	require.NoError(t, err)
	_, err = zw.Write([]byte("id,cust,ts,amt\nZ1,C1,2026-01-01 10:00:00,2\n\nZ3,C1,2026-01-02 10:00:00,x\n"))
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	e := setupRatio(t, ordersSource+`
  events:
    table: orders
    file: {paths: ["*.jsonl", "*.zst"]}
    mapping: {order_id: id, customer_id: cust, order_ts: ts, amount: amt, status: {const: completed}}`, map[string]string{
		"a.csv":        gzipped(t, "id,cust,ts,amt\nG1,C1,2026-01-01 10:00:00,1\n"),
		"b.csv":        zst.String(),
		"c.jsonl":      gzipped(t, `{"id":"J1","cust":"C1","ts":"2026-01-01T10:00:00Z","amt":3}`+"\n"),
		"d[1].csv.zst": gzipped(t, "id,cust,ts,amt\nD1,C1,2026-01-01 10:00:00,4\n"), // gzip under a zstd name, and a glob character
	}, 0.9)
	requireAccounted(t, e, e.run(t))
	require.Equal(t, map[string]string{"G1": "a.csv:2", "Z1": "b.csv:2", "J1": "c.jsonl:1", "D1": "d[1].csv.zst:2"},
		e.pairs(t, `SELECT order_id, _position FROM orders`))
	require.Equal(t, map[string]string{"b.csv:4": "amount: cannot read 'x' as a number"}, e.pairs(t, `SELECT position, reason FROM dead_letters`))
}

// Files joined end to end (cat a.csv b.csv) repeat the header line among the records. In a
// table of text columns it loaded as a customer named "customer_id"; now it is a dead letter at
// its line, whatever spaces and quotes the header had.
func TestARepeatedHeaderLineIsADeadLetterNotARecord(t *testing.T) {
	e := setupRatio(t, `  crm:
    table: customers
    file: {paths: ["c.txt"]}
    mapping: {customer_id: customer_id, segment: segment, region: region}`+"\n"+ordersSource, map[string]string{
		"c.txt": "customer_id, segment ,\" region\"\nC1,retail,north\ncustomer_id, segment ,\" region\"\nC2,b2b,south\n",
		"a.csv": "id,cust,ts,amt\nA1,C1,2026-01-01 10:00:00,1\nid,cust,ts,amt\nA2,C2,2026-01-02 10:00:00,3\nid,cust,ts,\n",
	}, 0.9)
	requireAccounted(t, e, e.run(t))
	require.Equal(t, map[string]string{"C1": "retail c.txt:2", "C2": "b2b c.txt:4"}, e.pairs(t, `SELECT customer_id, segment || ' ' || _position FROM customers`))
	require.Equal(t, map[string]string{"A1": "a.csv:2", "A2": "a.csv:4"}, e.pairs(t, `SELECT order_id, _position FROM orders`))
	const again = "the header line again (files joined end to end?)"
	require.Equal(t, map[string]string{"c.txt:3": again, "a.csv:3": again,
		"a.csv:5": "order_ts: cannot read 'ts' as a timestamp; missing amount (field amt)"}, // not the header: its last field is empty
		e.pairs(t, `SELECT position, reason FROM dead_letters`))
}

// Exports of European spreadsheets write decimal commas; decimal_separator: "," reads them, and
// a number with a thousands separator is still a dead letter rather than a guess.
func TestDecimalCommaNumbers(t *testing.T) {
	e := setupRatio(t, `  orders:
    table: orders
    decimal_separator: ","
    file: {paths: ["a.csv"]}
    mapping: {order_id: id, customer_id: cust, order_ts: ts, amount: amt, quantity: qty, status: {const: completed}}`, map[string]string{
		"a.csv": "id;cust;ts;amt;qty\nA2;C1;2026-01-01 10:00:00;1,5;2\nA3;C1;2026-01-01 10:00:00;-0,25;1,0\nB4;C1;2026-01-01 10:00:00;1.234,56;1\nA5;C1;2026-01-01 10:00:00;7;1\n",
	}, 1)
	requireAccounted(t, e, e.run(t))
	require.Equal(t, map[string]string{"A2": "1.5 x 2.0", "A3": "-0.25 x 1.0", "A5": "7.0 x 1.0"},
		e.pairs(t, `SELECT order_id, CAST(amount AS VARCHAR) || ' x ' || CAST(quantity AS VARCHAR) FROM orders`))
	require.Equal(t, map[string]string{"a.csv:4": "amount: cannot read '1.234,56' as a number"}, e.pairs(t, `SELECT position, reason FROM dead_letters`))
}

// Exports write placeholders for "no date": 1900-01-01 (spreadsheets, SQL Server), 0001-01-01
// (.NET and Go zero times), the Unix epoch. As orders they would date a customer's first purchase
// decades back; by default they are dead letters naming the bound, and a mapping's min takes
// older times where they are real.
func TestPlaceholderDatesAreDeadLettersUnlessTheMappingTakesThem(t *testing.T) {
	const orders = "id,cust,ts,amt\n" +
		"P1,C1,1900-01-01 00:00:00,10\n" + // line 2
		"P2,C1,0001-01-01,10\n" +
		"P3,C1,1970-01-01 23:59:59,10\n" + // Berlin: a second before the bound
		"P4,C1,1970-01-02 00:00:00,10\n" + // the bound itself
		"P5,C1,2026-01-05 10:00:00,10\n"
	feedback := `{"id":"F1","cust":"C1","ts":"2026-01-05T10:00:00Z","ack":"0001-01-01T00:00:00Z"}` + "\n" +
		`{"id":"F2","cust":"C1","ts":"2026-01-06T10:00:00Z","ack":"2026-01-07T10:00:00Z"}` + "\n"
	events := `
  events:
    table: feedback
    file: {paths: ["f.jsonl"]}
    mapping: {event_id: id, customer_id: cust, event_ts: ts, acknowledged_at: ack, direction: {const: inbound}, kind: {const: suggestion}}`
	e := setupRatio(t, ordersSource+events, map[string]string{"a.csv": orders, "f.jsonl": feedback}, 0.9)
	requireAccounted(t, e, e.run(t))
	require.Equal(t, map[string]string{"P4": "1970-01-01 23:00:00+00", "P5": "2026-01-05 09:00:00+00"},
		e.pairs(t, `SELECT order_id, strftime(order_ts AT TIME ZONE 'UTC', '%Y-%m-%d %H:%M:%S+00') FROM orders`))
	why := "the earliest %s taken unless the mapping sets min (a placeholder date?)"
	require.Equal(t, map[string]string{
		"a.csv:2":   "order_ts: '1900-01-01 00:00:00' is before 1970-01-02, " + fmt.Sprintf(why, "order_ts"),
		"a.csv:3":   "order_ts: '0001-01-01' is before 1970-01-02, " + fmt.Sprintf(why, "order_ts"),
		"a.csv:4":   "order_ts: '1970-01-01 23:59:59' is before 1970-01-02, " + fmt.Sprintf(why, "order_ts"),
		"f.jsonl:1": "acknowledged_at: '0001-01-01T00:00:00Z' is before 1970-01-02, " + fmt.Sprintf(why, "acknowledged_at"),
	}, e.pairs(t, `SELECT position, reason FROM dead_letters`))

	// A source whose history is older says so; min and max bind its own values, numbers too.
	e = setupRatio(t, `  orders:
    table: orders
    file: {paths: ["*.csv"]}
    mapping:
      order_id: id
      customer_id: cust
      order_ts: {from: ts, min: 1900-01-01}
      amount: {from: amt, max: 100}
      status: {const: completed}`, map[string]string{"a.csv": orders + "P6,C1,2026-01-06 10:00:00,100.5\nP7,C1,1899-12-31 23:59:59,1\n"}, 0.9)
	requireAccounted(t, e, e.run(t))
	require.Equal(t, map[string]string{"P1": "1899-12-31", "P3": "1970-01-01", "P4": "1970-01-01", "P5": "2026-01-05"},
		e.pairs(t, `SELECT order_id, strftime(order_ts AT TIME ZONE 'UTC', '%Y-%m-%d') FROM orders`))
	require.Equal(t, map[string]string{
		"a.csv:3": "order_ts: '0001-01-01' is before 1900-01-01, the mapping's min",
		"a.csv:7": "amount: '100.5' is above 100, the mapping's max",
		"a.csv:8": "order_ts: '1899-12-31 23:59:59' is before 1900-01-01, the mapping's min",
	}, e.pairs(t, `SELECT position, reason FROM dead_letters`))
}

// Excel reads a first line `sep=;` as the file's delimiter, and some exporters write it: the line
// names the delimiter and is not a record, and the records after it keep their true lines.
func TestAnExcelSeparatorLineNamesTheDelimiter(t *testing.T) {
	e := setupRatio(t, ordersSource, map[string]string{
		"a.csv": "\ufeffsep=;\r\nid;cust;ts;amt\r\nA1;C1;2026-01-01 10:00:00;1.5\r\nA2;C1;2026-01-02 10:00:00;x\r\nA3;\"C;3\";2026-01-03 10:00:00;3\r\n",
		"b.csv": "SEP=|\nid|cust|ts|amt\nB1|C1|2026-01-01 10:00:00|2\n",
		"c.csv": "sep=,\nid,cust,ts,amt\nC1,C1,2026-01-01 10:00:00,4\n",
	}, 0.9)
	requireAccounted(t, e, e.run(t))
	require.Equal(t, map[string]string{"A1": "a.csv:3 C1 1.5", "A3": "a.csv:5 C;3 3.0", "B1": "b.csv:3 C1 2.0", "C1": "c.csv:3 C1 4.0"},
		e.pairs(t, `SELECT order_id, _position || ' ' || customer_id || ' ' || CAST(amount AS VARCHAR) FROM orders`))
	require.Equal(t, map[string]string{"a.csv:4": "amount: cannot read 'x' as a number"}, e.pairs(t, `SELECT position, reason FROM dead_letters`))

	// A configured delimiter wins; the hint line is still no record.
	e = setupRatio(t, strings.Replace(ordersSource, `file: {paths: ["*.csv"]}`, `file: {paths: ["*.csv"], csv: {delimiter: ";"}}`, 1),
		map[string]string{"a.csv": "sep=,\nid;cust;ts;amt\nA1;C1;2026-01-01 10:00:00;1\n"}, 0.9)
	requireAccounted(t, e, e.run(t))
	require.Equal(t, map[string]string{"A1": "a.csv:3"}, e.pairs(t, `SELECT order_id, _position FROM orders`))
}

// A JSON Lines line over max_line_size is a dead letter holding its first 4 KiB, saying so; a bad
// line within the limit is kept whole, however long, so that its dead letter outlives the file.
// Each keeps its own bytes, not those of the lines read after it into the same buffer.
func TestAJSONLineOverTheLimitKeepsItsHeadAndOneWithinItIsKeptWhole(t *testing.T) {
	long := `{"id":"L1","cust":"C1","ts":"2026-01-01T10:00:00Z","amt":1,"note":"` + strings.Repeat("x", 20_000) + `"}`
	within := `{"id":"W1","cust":"C1","ts":"2026-01-01T10:00:00Z","amt":"many","note":"` + strings.Repeat("y", 5_000) + `"}`
	latin1 := `{"id":"X1","cust":"caf` + "\xe9" + `","ts":"2026-01-01T10:00:00Z","amt":1}`
	e := setupRatio(t, strings.Replace(eventsSource, `paths: ["*.jsonl"]`, `paths: ["*.jsonl"], max_line_size: 8KiB`, 1),
		map[string]string{"a.jsonl": long + "\n" + within + "\n" + latin1 + "\n" + `{"id":"G1","cust":"C1","ts":"2026-01-01T10:00:00Z","amt":1}` + "\n"}, 0.9)
	res := e.run(t)
	requireAccounted(t, e, res)
	require.EqualValues(t, []int64{4, 1, 3}, []int64{res.Sources[0].Read, res.Sources[0].Loaded, res.Sources[0].DeadLettered})
	var payload, reason string
	require.NoError(t, e.db().QueryRow(`SELECT payload, reason FROM dead_letters WHERE position = 'a.jsonl:1'`).Scan(&payload, &reason))
	require.Equal(t, long[:4096], payload)
	require.Equal(t, "line longer than max_line_size 8192 bytes (payload holds its first 4096 bytes)", reason)
	require.NoError(t, e.db().QueryRow(`SELECT payload FROM dead_letters WHERE position = 'a.jsonl:2'`).Scan(&payload))
	require.Equal(t, within, payload)
	require.NoError(t, e.db().QueryRow(`SELECT payload FROM dead_letters WHERE position = 'a.jsonl:3'`).Scan(&payload))
	require.Equal(t, "base64:"+base64.StdEncoding.EncodeToString([]byte(latin1)), payload)
}

// Names a glob matches that are no file to read: a named pipe (reading it would wait for a
// writer for good) and a link to nothing (a file that did not arrive). The run reads the other
// files and warns of each by name, `ckm validate --connect` lists them, and a source with
// nothing else to read is refused with what was found. A directory is passed over quietly.
func TestMatchesThatAreNotFilesAreNamedNotWaitedOn(t *testing.T) {
	e := setup(t, ordersSource, map[string]string{"orders.csv": ordersHeader + "A1,C1,2026-01-01 10:00:00,1\n"})
	require.NoError(t, syscall.Mkfifo(filepath.Join(e.dir, "pipe.csv"), 0o600))
	gone := filepath.Join(e.dir, "landing", "x.csv")
	require.NoError(t, os.Symlink(gone, filepath.Join(e.dir, "link.csv")))
	require.NoError(t, os.Mkdir(filepath.Join(e.dir, "archive.csv"), 0o700))

	var logged bytes.Buffer
	r := &pipelines.Runner{Config: e.cfg, Warehouse: e.w, Log: slog.New(slog.NewTextHandler(&logged, nil))}
	res, err := r.Run(context.Background(), pipelines.Request{Pipeline: "p", AsOf: time.Date(2026, 3, 31, 0, 0, 0, 0, time.UTC)})
	require.NoError(t, err)
	requireAccounted(t, e, res)
	require.EqualValues(t, 1, res.Sources[0].Loaded)
	linkProblem := "link.csv cannot be read: it links to " + gone + ", which does not exist"
	warned := func(problem string) string {
		return `level=WARN msg="matched but not read" .* source=orders problem="` + regexp.QuoteMeta(problem) + `"`
	}
	require.Regexp(t, warned(linkProblem), logged.String())
	require.Regexp(t, warned("pipe.csv is not a regular file but a named pipe"), logged.String())
	require.NotContains(t, logged.String(), "archive.csv")

	problems, err := r.Check(context.Background())
	require.NoError(t, err)
	require.Equal(t, []string{"source orders: " + linkProblem, "source orders: pipe.csv is not a regular file but a named pipe"}, problems)

	require.Contains(t, testutil.ConfigProblems(t, `warehouse: {path: ckm.duckdb}
sources:
  orders:
    table: orders
    file: {paths: ["`+filepath.Join(e.dir, "[lp]i*.csv")+`"]}
    mapping: {order_id: id, customer_id: cust, order_ts: ts, amount: amt, status: {const: completed}}
pipelines:
  p: {transforms: [rfm]}
`), `sources.orders.file.paths: no file matching "`+filepath.Join(e.dir, "[lp]i*.csv")+`" can be read: `+filepath.Join(e.dir, "link.csv")+
		` cannot be read: it links to `+gone+`, which does not exist; `+filepath.Join(e.dir, "pipe.csv")+` is not a regular file but a named pipe`)
}

// A small file is read with DuckDB's CSV buffer sized to it; a compressed one is not, as its
// content outgrows its size. Sized to the compressed file, DuckDB read a gzip file's content in
// several buffers and lost rows where they met (3 of 699,999), with no reject and no error.
func TestACompressedFileLoadsEveryLineWhateverItsContentOutgrows(t *testing.T) {
	var body strings.Builder
	body.WriteString(ordersHeader)
	const lines = 60_000
	for i := range lines {
		fmt.Fprintf(&body, "R%06d,C%04d,2026-01-%02d 10:00:00,%d.5\n", i, i%997, 1+i%28, i%500)
	}
	e := setup(t, strings.Replace(ordersSource, `file: {paths: ["*.csv"]}`, `file: {paths: ["*.csv*"], max_line_size: 4KiB}`, 1),
		map[string]string{"small.csv": ordersHeader + "P1,C1,2026-01-01 10:00:00,1\n", "big.csv.gz": gzipped(t, body.String())})
	res := e.run(t)
	requireAccounted(t, e, res)
	require.EqualValues(t, lines+1, res.Sources[0].Loaded)
	var distinct, last int64
	require.NoError(t, e.db().QueryRow(`SELECT count(DISTINCT order_id), max(CAST(split_part(_position, ':', 2) AS BIGINT)) FROM orders
		WHERE _stream = 'big.csv.gz'`).Scan(&distinct, &last))
	require.EqualValues(t, lines, distinct)
	require.EqualValues(t, lines+1, last, "the last line keeps its number")
}

// Header names match the mapping exactly. One spelled with other capitals fails the source as a
// missing column does, and the error says which name the file has.
func TestAHeaderNameInOtherCapitalsIsNamedInTheError(t *testing.T) {
	e := setup(t, ordersSource, map[string]string{"a.csv": "ID,cust,ts,AMT\nA1,C1,2026-01-01 10:00:00,1\n"})
	r := &pipelines.Runner{Config: e.cfg, Warehouse: e.w, Log: slog.New(slog.DiscardHandler)}
	_, err := r.Ingest(context.Background(), "orders", false)
	require.ErrorContains(t, err, "a.csv: mapping refers to id, amt, which the source does not have (it has ID, cust, ts, AMT; names match exactly, and id is ID there, amt is AMT there)")
	problems, err := r.Check(context.Background())
	require.NoError(t, err)
	require.Equal(t, []string{"source orders: a.csv has no column id, amt, which the mapping reads (it has ID, cust, ts, AMT; names match exactly, and id is ID there, amt is AMT there)"}, problems)
}

// A header naming a column twice: DuckDB's sniffer renames the second cust cust_1, and the
// column really named cust_1 cust_1_1, so a mapping reading cust_1 took the second cust without a
// word. Each name the header holds once keeps it; the columns it names twice are read by
// position, and reading the bare name fails the source naming both. Parquet files (pandas writes
// names that differ only in capitals) are read the same way.
func TestAHeaderNamingAColumnTwiceIsReadByPosition(t *testing.T) {
	const csv = "id,cust,ts,amt,Cust,cust_1\nA1,C1,2026-01-01 10:00:00,1,X1,Y1\nid,cust,ts,amt,Cust,cust_1\n"
	for _, format := range []string{"csv", "parquet"} {
		t.Run(format, func(t *testing.T) {
			source := strings.Replace(ordersSourceMayBeEmpty, `"*.csv"`, `"*.`+format+`"`, 1)
			file := func(e *env) {
				if format == "csv" {
					require.NoError(t, os.WriteFile(filepath.Join(e.dir, "a.csv"), []byte(csv), 0o644))
					return
				}
				// DuckDB writes no name twice: write Cusz, then rename it in the footer.
				path := filepath.Join(e.dir, "a.parquet")
				_, err := e.db().Exec(`COPY (SELECT 'A1' AS id, 'C1' AS cust, '2026-01-01 10:00:00' AS ts, '1' AS amt, 'X1' AS Cusz, 'Y1' AS cust_1)
					TO '` + path + `' (FORMAT parquet)`)
				require.NoError(t, err)
				body, err := os.ReadFile(path)
				require.NoError(t, err)
				require.NoError(t, os.WriteFile(path, bytes.ReplaceAll(body, []byte("Cusz"), []byte("Cust")), 0o644))
			}
			e := setup(t, source, nil)
			file(e)
			r := &pipelines.Runner{Config: e.cfg, Warehouse: e.w, Log: slog.New(slog.DiscardHandler)}
			_, err := r.Ingest(context.Background(), "orders", false)
			const has = `it has id, cust (column 2), ts, amt, Cust (column 5), cust_1; the source names cust more than once: read "cust (column 2)" or "Cust (column 5)"`
			require.ErrorContains(t, err, "a."+format+": mapping refers to cust, which the source does not have ("+has+")")
			problems, err := r.Check(context.Background())
			require.NoError(t, err)
			require.Equal(t, []string{"source orders: a." + format + " has no column cust, which the mapping reads (" + has + ")"}, problems)

			for from, want := range map[string]string{"cust_1": "Y1", `"Cust (column 5)"`: "X1", `"cust (column 2)"`: "C1"} {
				e := setup(t, strings.Replace(source, "customer_id: cust,", "customer_id: "+from+",", 1), nil)
				file(e)
				requireAccounted(t, e, e.run(t))
				require.Equal(t, map[string]string{"A1": want}, e.pairs(t, `SELECT order_id, customer_id FROM orders`), "customer_id read from %s", from)
				if format == "csv" {
					require.Equal(t, map[string]string{"a.csv:3": "the header line again (files joined end to end?)"}, e.pairs(t, `SELECT position, reason FROM dead_letters`))
				}
			}
		})
	}
}

// A file without a double quote in the lines DuckDB sniffs is still read quoting: a quoted
// value further down holds its comma. (Only a file whose every line was scanned for one, and
// that has none, skips sniffing again quoting.)
func TestAQuotedValuePastTheSniffedLinesKeepsItsComma(t *testing.T) {
	var body strings.Builder
	body.WriteString(ordersHeader)
	for i := range 20_600 {
		fmt.Fprintf(&body, "A%d,C1,2026-01-01 10:00:00,1\n", i)
	}
	body.WriteString("\"B,1\",C2,2026-01-01 10:00:00,2\n")
	e := setup(t, ordersSource, map[string]string{"a.csv": body.String()})
	requireAccounted(t, e, e.run(t))
	require.Equal(t, map[string]string{"B,1": "C2 a.csv:20602"}, e.pairs(t, `SELECT order_id, customer_id || ' ' || _position FROM orders WHERE customer_id = 'C2'`))
	require.Equal(t, map[string]string{"20601": "0"}, e.pairs(t, `SELECT count(*), (SELECT count(*) FROM dead_letters) FROM orders`))
}

// A file loaded in pieces keeps the first piece's names by position in every piece, and a
// repeated header line in a later piece is still told apart from a record. The header names
// cust twice in the same capitals: DuckDB named the second cust_1, and a mapping reading cust_1
// loaded it, not the column so named, without a word.
func TestAHeaderNamingAColumnTwiceHoldsInEveryPiece(t *testing.T) {
	var body strings.Builder
	body.WriteString("id,cust,ts,amt,cust,cust_1\n")
	for i := range 300 { // some 12 KiB: a dozen pieces of 1 KiB
		fmt.Fprintf(&body, "A%d,C%d,2026-01-01 10:00:00,1,X%d,Y%d\n", i, i, i, i)
	}
	body.WriteString("id,cust,ts,amt,cust,cust_1\n")
	source := strings.Replace(strings.Replace(ordersSource, "customer_id: cust,", "customer_id: cust_1,", 1),
		`file: {paths: ["*.csv"]}`, `file: {paths: ["*.csv"], batch_bytes: 1KiB}`, 1)
	e := setup(t, source, map[string]string{"a.csv": body.String()})
	requireAccounted(t, e, e.run(t))
	require.Equal(t, map[string]string{"300": "300"}, e.pairs(t, `SELECT count(*), count(*) FILTER (customer_id = 'Y' || substr(order_id, 2)) FROM orders`))
	require.Equal(t, map[string]string{"a.csv:302": "the header line again (files joined end to end?)"}, e.pairs(t, `SELECT position, reason FROM dead_letters`))
}

// A header name holding a line break (quoted, as CSV allows) or another character that does not
// print is quoted in an error, which stays one line: printed raw it would break the message, or
// forge a line of ckm's output.
func TestAHeaderNameThatDoesNotPrintIsQuotedInTheError(t *testing.T) {
	e := setup(t, ordersSource, map[string]string{"a.csv": "id,cust,ts,\"amt\nckm: run succeeded\"\nA1,C1,2026-01-01 10:00:00,1\n"})
	r := &pipelines.Runner{Config: e.cfg, Warehouse: e.w, Log: slog.New(slog.DiscardHandler)}
	_, err := r.Ingest(context.Background(), "orders", false)
	require.ErrorContains(t, err, `a.csv: mapping refers to amt, which the source does not have (it has id, cust, ts, "amt\nckm: run succeeded")`)
	require.NotContains(t, err.Error(), "\n")
	problems, err := r.Check(context.Background())
	require.NoError(t, err)
	require.Equal(t, []string{`source orders: a.csv has no column amt, which the mapping reads (it has id, cust, ts, "amt\nckm: run succeeded")`}, problems)

	// So is a value in the reason a run fails with, over max_bad_ratio.
	var lines strings.Builder
	lines.WriteString(ordersHeader)
	for i := range 6 {
		fmt.Fprintf(&lines, "A%d,C1,2026-01-01 10:00:00,\"1\nckm: run succeeded\"\n", i)
	}
	e = setupRatio(t, ordersSource, map[string]string{"b.csv": lines.String()}, 0.01)
	r = &pipelines.Runner{Config: e.cfg, Warehouse: e.w, Log: slog.New(slog.DiscardHandler)}
	_, err = r.Ingest(context.Background(), "orders", false)
	require.ErrorContains(t, err, `first at b.csv:2: "amount: cannot read '1\nckm: run succeeded' as a number"`)
	require.NotContains(t, err.Error(), "\n")
}

// File names are bytes: one from a Windows share may be Latin-1 (café as caf\xe9), which DuckDB
// takes as no text; it failed the whole source ("could not bind parameter"). It is read, and
// stored as caf\xe9.csv. A name with a line break is read too, and quoted where it is shown. A
// file whose name as stored is another's is not read.
func TestFileNamesThatAreNotUTF8AreStoredEscaped(t *testing.T) {
	latin1, newline := "caf\xe9.csv", "new\nline.csv"
	e := setup(t, ordersSource, map[string]string{
		latin1:   ordersHeader + "L1,C1,2026-01-01 10:00:00,1\n",
		newline:  ordersHeader + "N1,C1,2026-01-01 10:00:00,2\n",
		"ok.csv": ordersHeader + "O1,C1,2026-01-01 10:00:00,3\n",
	})
	requireAccounted(t, e, e.run(t))
	require.Equal(t, map[string]string{"L1": `caf\xe9.csv:2`, "N1": "new\nline.csv:2", "O1": "ok.csv:2"}, e.pairs(t, `SELECT order_id, _position FROM orders`))
	res := e.run(t)
	require.Zero(t, res.Sources[0].Read, "every file is known by its stored name")
	r := &pipelines.Runner{Config: e.cfg, Warehouse: e.w, Log: slog.New(slog.DiscardHandler)}
	problems, err := r.Check(context.Background())
	require.NoError(t, err)
	require.Empty(t, problems)

	writeFile(t, filepath.Join(e.dir, `caf\xe9.csv`), ordersHeader+"B1,C1,2026-01-01 10:00:00,4\n")
	problems, err = r.Check(context.Background())
	require.NoError(t, err)
	require.Equal(t, []string{`source orders: 2 files are stored under the name caf\xe9.csv (one of them not named in UTF-8): rename one`}, problems)
	requireAccounted(t, e, e.run(t))
	require.Equal(t, map[string]string{"L1": `caf\xe9.csv:2`, "N1": "new\nline.csv:2", "O1": "ok.csv:2"}, e.pairs(t, `SELECT order_id, _position FROM orders`),
		"neither file of the name is read, and what was loaded under it stays")
}

// An expression that cannot run over the source's records (text times a number: CSV and JSON
// fields are text) fails the source naming the expression's key and DuckDB's reason, not the
// generated SQL it failed in.
func TestAMappingExpressionThatCannotRunIsNamed(t *testing.T) {
	for name, c := range map[string]struct{ source, file, body, before string }{
		"csv": {`  orders:
    table: orders
    file: {paths: ["*.csv"]}
    mapping: {order_id: id, customer_id: {expr: "upper(cust)"}, order_ts: ts, amount: {expr: "amt * 2"}, status: {const: completed}}`,
			"a.csv", ordersHeader + "A1,C1,2026-01-01 10:00:00,1\n", ""},
		// Every such expression is named at once.
		"json": {`  orders:
    table: orders
    file: {paths: ["*.jsonl"]}
    filter: "json_extract_string(_doc, '$.amt') > 0"
    mapping: {order_id: id, customer_id: cust, order_ts: ts, amount: {expr: "json_extract_string(_doc, '$.amt') - 1"}, status: {const: completed}}`,
			"a.jsonl", `{"id":"A1","cust":"C1","ts":"2026-01-01 10:00:00","amt":1}` + "\n",
			"filter: Binder Error: Cannot compare values of type VARCHAR and type INTEGER_LITERAL - an explicit cast is required; "},
	} {
		t.Run(name, func(t *testing.T) {
			e := setup(t, c.source, map[string]string{c.file: c.body})
			r := &pipelines.Runner{Config: e.cfg, Warehouse: e.w, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
			_, err := r.Run(context.Background(), pipelines.Request{Pipeline: "p", AsOf: time.Date(2026, 3, 31, 0, 0, 0, 0, time.UTC)})
			require.ErrorContains(t, err, "source orders: read "+c.file+": "+c.before+"mapping.amount.expr: Binder Error: No function matches the given name and argument types")
			require.NotContains(t, err.Error(), mapping.InternalPrefix, "the generated SQL stays out of the message")
		})
	}
}

// `ckm validate --connect` binds the mapping's expressions over each file's fields with the types
// a run reads them with: a Parquet file's own (amt * 2 binds on a DOUBLE, upper() refuses a
// list), a CSV file's text (amt * 2 does not bind), JSON Lines' documents (whose fields are
// read from _doc, not by name). An empty file, which a run reads nothing of, has no problem.
func TestValidateConnectBindsExpressionsWithTheFilesTypes(t *testing.T) {
	e := setup(t, `  orders:
    table: orders
    file: {paths: ["*.parquet", "*.csv", "*.jsonl"], allow_empty: true}
    mapping: {order_id: id, customer_id: {expr: "upper(cust)"}, order_ts: ts, amount: {expr: "amt * 2"}, status: {const: completed}}`,
		map[string]string{"a.csv": ordersHeader + "A1,C1,2026-01-01 10:00:00,1\n", "empty.csv": "",
			"b.jsonl": `{"id":"J1","cust":"C1","ts":"2026-01-01 10:00:00","amt":1}` + "\n", "c.jsonl": `{"id":"J2"}` + "\n", "empty.jsonl": ""})
	for name, cust := range map[string]string{"good.parquet": "'C1'", "list.parquet": "['C1']"} {
		_, err := e.db().Exec(`COPY (SELECT 'P1' AS id, ` + cust + ` AS cust, TIMESTAMP '2026-01-01 10:00:00' AS ts, 1.5 AS amt)
			TO '` + filepath.Join(e.dir, name) + `' (FORMAT parquet)`)
		require.NoError(t, err)
	}
	r := &pipelines.Runner{Config: e.cfg, Warehouse: e.w, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	problems, err := r.Check(context.Background())
	require.NoError(t, err)
	require.Equal(t, []string{
		"source orders: a.csv: mapping.amount.expr: Binder Error: No function matches the given name and argument types '*(VARCHAR, INTEGER_LITERAL)'. You might need to add explicit type casts.",
		"source orders: list.parquet: mapping.customer_id.expr: Binder Error: No function matches the given name and argument types 'upper(VARCHAR[])'. You might need to add explicit type casts.",
		"source orders: b.jsonl, c.jsonl: mapping.amount.expr reads amt, which JSON documents do not have as columns: their fields are read from _doc, as in json_extract_string(_doc, '$.amt')",
		"source orders: b.jsonl, c.jsonl: mapping.customer_id.expr reads cust, which JSON documents do not have as columns: their fields are read from _doc, as in json_extract_string(_doc, '$.cust')",
	}, problems)

	// A JSON mapping that reads _doc is bound over the documents: text times a number does not bind.
	e = setup(t, `  orders:
    table: orders
    file: {paths: ["*.jsonl"]}
    mapping: {order_id: id, customer_id: cust, order_ts: ts, amount: {expr: "json_extract_string(_doc, '$.amt') * 2"}, status: {const: completed}}`,
		map[string]string{"b.jsonl": `{"id":"J1","cust":"C1","ts":"2026-01-01 10:00:00","amt":1}` + "\n"})
	r = &pipelines.Runner{Config: e.cfg, Warehouse: e.w, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	problems, err = r.Check(context.Background())
	require.NoError(t, err)
	require.Equal(t, []string{"source orders: b.jsonl: mapping.amount.expr: Binder Error: No function matches the given name and argument types " +
		"'*(VARCHAR, INTEGER_LITERAL)'. You might need to add explicit type casts."}, problems)
}

// An expression that raises an error on one record (a CAST of 'x', in a mapping expr or the
// filter) dead-letters that record, naming the expression, and the batch's other records load;
// before, the record failed its whole file with ckm's generated SQL in the message. Parts that
// expressions share (CAST(amt AS DOUBLE) twice in margin, and in amount) stay guarded, and a
// filter that fails does not skip the record. An expression DuckDB cannot guard (one calling a
// volatile function) still fails the file, named with DuckDB's error on the record.
func TestAnExpressionThatFailsOnARecordDeadLettersThatRecordAlone(t *testing.T) {
	const fails = " fails on this record (DuckDB raised an error; the log gives it)"
	for name, c := range map[string]struct {
		source, file, body string
		line               int // the second record's
	}{
		"csv": {`  orders:
    table: orders
    file: {paths: ["*.csv"]}
    filter: "CAST(qty AS INTEGER) > 0"
    mapping: {order_id: id, customer_id: cust, order_ts: ts, amount: {expr: "CAST(amt AS DOUBLE)"},
              margin: {expr: "CAST(amt AS DOUBLE) * 0.1 + CAST(amt AS DOUBLE)"}, quantity: {expr: "CAST(qty AS INTEGER)"}, status: {const: completed}}`,
			"a.csv", "id,cust,ts,amt,qty\nA1,C1,2026-01-01 10:00:00,5,1\nA2,C2,2026-01-02 10:00:00,x,1\nA3,C3,2026-01-03 10:00:00,7,zz\n" +
				"A4,C4,2026-01-04 10:00:00,8,0\nA5,C5,2026-01-05 10:00:00,10,2\n", 3},
		"json": {`  orders:
    table: orders
    file: {paths: ["*.jsonl"]}
    filter: "CAST(_doc->>'qty' AS INTEGER) > 0"
    mapping: {order_id: id, customer_id: cust, order_ts: ts, amount: {expr: "CAST(_doc->>'amt' AS DOUBLE)"},
              margin: {expr: "CAST(_doc->>'amt' AS DOUBLE) * 0.1 + CAST(_doc->>'amt' AS DOUBLE)"}, quantity: {expr: "CAST(_doc->>'qty' AS INTEGER)"},
              status: {const: completed}}`,
			"a.jsonl", `{"id":"A1","cust":"C1","ts":"2026-01-01 10:00:00","amt":5,"qty":1}` + "\n" + `{"id":"A2","cust":"C2","ts":"2026-01-02 10:00:00","amt":"x","qty":1}` + "\n" +
				`{"id":"A3","cust":"C3","ts":"2026-01-03 10:00:00","amt":7,"qty":"zz"}` + "\n" + `{"id":"A4","cust":"C4","ts":"2026-01-04 10:00:00","amt":8,"qty":0}` + "\n" +
				`{"id":"A5","cust":"C5","ts":"2026-01-05 10:00:00","amt":10,"qty":2}` + "\n", 2},
	} {
		t.Run(name, func(t *testing.T) {
			e := setup(t, c.source, map[string]string{c.file: c.body})
			var log bytes.Buffer
			r := &pipelines.Runner{Config: e.cfg, Warehouse: e.w, Log: slog.New(slog.NewTextHandler(&log, nil))}
			res, err := r.Run(context.Background(), pipelines.Request{Pipeline: "p", AsOf: time.Date(2026, 3, 31, 0, 0, 0, 0, time.UTC)})
			require.NoError(t, err)
			// DuckDB's error, from the expression evaluated again alone: JSON Lines are read
			// through an Arrow stream, which the mapping has consumed by then.
			require.Contains(t, log.String(), `expression=mapping.amount.expr records=1 error="Conversion Error: Could not convert string 'x' to DOUBLE`)
			st := res.Sources[0]
			require.EqualValues(t, [4]int64{5, 2, 2, 1}, [4]int64{st.Read, st.Loaded, st.DeadLettered, st.Skipped}, "read, loaded, dead letters, skipped")
			require.Equal(t, map[string]string{"A1": "5.0 5.5 1.0", "A5": "10.0 11.0 2.0"},
				e.pairs(t, `SELECT order_id, concat_ws(' ', amount, margin, quantity) FROM orders`))
			require.Equal(t, map[string]string{
				fmt.Sprintf("%s:%d", c.file, c.line):   "amount: mapping.amount.expr" + fails + "; margin: mapping.margin.expr" + fails,
				fmt.Sprintf("%s:%d", c.file, c.line+1): "quantity: mapping.quantity.expr" + fails + "; filter" + fails,
			}, e.pairs(t, `SELECT position, reason FROM dead_letters`))
		})
	}
	t.Run("beside an expression that cannot bind, which alone is named", func(t *testing.T) {
		e := setup(t, `  orders:
    table: orders
    file: {paths: ["a.csv"]}
    mapping: {order_id: id, customer_id: cust, order_ts: ts, amount: {expr: "CAST(amt AS DOUBLE) * nosuch"}, margin: {expr: "CAST(amt AS DOUBLE)"},
              status: {const: completed}}`, map[string]string{"a.csv": ordersHeader + "A1,C1,2026-01-01 10:00:00,1\nA2,C2,2026-01-02 10:00:00,x\n"})
		r := &pipelines.Runner{Config: e.cfg, Warehouse: e.w, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
		_, err := r.Run(context.Background(), pipelines.Request{Pipeline: "p", AsOf: time.Date(2026, 3, 31, 0, 0, 0, 0, time.UTC)})
		require.EqualError(t, err, `source orders: read a.csv: mapping.amount.expr: Binder Error: Referenced column "nosuch" not found in FROM clause!`,
			"margin's error on a record would make that record a dead letter: it is no reason the file failed")
	})
	for name, c := range map[string]struct{ file, amount, body string }{
		"csv": {"a.csv", "CAST(amt AS DOUBLE) + random() * 0", ordersHeader + "A1,C1,2026-01-01 10:00:00,1\nA2,C2,2026-01-02 10:00:00,x\n"},
		"json": {"a.jsonl", "CAST(_doc->>'amt' AS DOUBLE) + random() * 0",
			`{"id":"A1","cust":"C1","ts":"2026-01-01 10:00:00","amt":1}` + "\n" + `{"id":"A2","cust":"C2","ts":"2026-01-02 10:00:00","amt":"x"}` + "\n"},
	} {
		t.Run("a volatile function, which DuckDB cannot guard, "+name, func(t *testing.T) {
			e := setup(t, `  orders:
    table: orders
    file: {paths: ["`+c.file+`"]}
    mapping: {order_id: id, customer_id: cust, order_ts: ts, amount: {expr: "`+c.amount+`"}, status: {const: completed}}`, map[string]string{c.file: c.body})
			r := &pipelines.Runner{Config: e.cfg, Warehouse: e.w, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
			_, err := r.Run(context.Background(), pipelines.Request{Pipeline: "p", AsOf: time.Date(2026, 3, 31, 0, 0, 0, 0, time.UTC)})
			require.ErrorContains(t, err, "source orders: read "+c.file+": mapping.amount.expr: Conversion Error: Could not convert string 'x' to DOUBLE")
			require.NotContains(t, err.Error(), mapping.InternalPrefix, "the generated SQL stays out of the message")
		})
	}
}
