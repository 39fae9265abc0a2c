package file_test

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ckm-dev/ckm/config"
	"github.com/ckm-dev/ckm/internal/testutil"
	"github.com/ckm-dev/ckm/pipelines"
	"github.com/ckm-dev/ckm/warehouse"
)

type env struct {
	dir string
	cfg *config.Config
	w   *warehouse.Warehouse
}

func setup(t *testing.T, sources string, files map[string]string) *env {
	return setupRatio(t, sources, files, 0.5)
}

func setupRatio(t *testing.T, sources string, files map[string]string, maxBad float64) *env {
	dir := t.TempDir()
	for name, body := range files {
		writeFile(t, filepath.Join(dir, name), body)
	}
	te := testutil.OpenYAML(t, dir, fmt.Sprintf("warehouse: {path: ckm.duckdb, threads: 2}\ntimezone: Europe/Berlin\nmax_bad_ratio: %g\nsources:\n", maxBad)+sources+"\npipelines:\n  p: {transforms: [rfm]}\n")
	return &env{dir: dir, cfg: te.Config, w: te.Warehouse}
}

func writeFile(t *testing.T, path, body string) {
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
	require.NoError(t, os.WriteFile(path, []byte(body), 0o644))
}

func (e *env) run(t *testing.T) *pipelines.Result {
	r := &pipelines.Runner{Config: e.cfg, Warehouse: e.w, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	res, err := r.Run(context.Background(), pipelines.Request{Pipeline: "p", AsOf: time.Date(2026, 3, 31, 0, 0, 0, 0, time.UTC)})
	require.NoError(t, err)
	return res
}

func (e *env) db() *sql.DB { return e.w.DB() }

// pairs runs a two-column query and returns its rows as a map from the first column to the second.
func (e *env) pairs(t *testing.T, query string) map[string]string {
	return testutil.Pairs(t, e.db(), query)
}

const ordersSource = `  orders:
    table: orders
    file: {paths: ["*.csv"]}
    mapping: {order_id: id, customer_id: cust, order_ts: ts, amount: amt, status: {const: completed}}`

func TestChangedFileReplacesOnlyItsOwnRows(t *testing.T) {
	e := setup(t, ordersSource, map[string]string{
		"a.csv": "id,cust,ts,amt\nA1,C1,2026-01-01 10:00:00,10\nA2,C2,2026-01-02 10:00:00,20\n",
		"b.csv": "id,cust,ts,amt\nB1,C1,2026-01-03 10:00:00,30\n",
	})
	e.run(t)
	writeFile(t, filepath.Join(e.dir, "a.csv"), "id,cust,ts,amt\nA1,C1,2026-01-01 10:00:00,11\nA3,C3,2026-01-04 10:00:00,40\n")
	res := e.run(t)
	require.EqualValues(t, 2, res.Sources[0].Read, "only the changed file is read again")
	rows, err := e.db().Query(`SELECT order_id, amount, _position FROM orders ORDER BY order_id`)
	require.NoError(t, err)
	defer rows.Close()
	type row struct {
		id  string
		amt float64
		pos string
	}
	var got []row
	for rows.Next() {
		var r row
		require.NoError(t, rows.Scan(&r.id, &r.amt, &r.pos))
		got = append(got, r)
	}
	require.Equal(t, []row{{"A1", 11, "a.csv:2"}, {"A3", 40, "a.csv:3"}, {"B1", 30, "b.csv:2"}}, got,
		"A2 left with the old version of a.csv; b.csv untouched")
}

// A file whose size and modification time match what was loaded is skipped without being read;
// one whose time moved is hashed, and skipped if its bytes are the same. A time too recent to
// trust (the file may change again within the file system's clock tick) is not kept.
// verify_unchanged hashes every file every run.
func TestUnchangedFilesAreRecognisedByTheirStatWithoutBeingRead(t *testing.T) {
	const (
		v1 = "id,cust,ts,amt\nA1,C1,2026-01-01 10:00:00,10\n"
		v2 = "id,cust,ts,amt\nA1,C1,2026-01-01 10:00:00,11\n" // same size
	)
	for _, verify := range []bool{false, true} {
		t.Run(fmt.Sprintf("verify_unchanged=%v", verify), func(t *testing.T) {
			source := strings.Replace(ordersSource, `paths: ["*.csv"]`, fmt.Sprintf(`paths: ["*.csv"], verify_unchanged: %v`, verify), 1)
			e := setup(t, source, map[string]string{"a.csv": v1})
			path := filepath.Join(e.dir, "a.csv")
			stamp := func(at time.Time) { require.NoError(t, os.Chtimes(path, at, at)) }
			stored := func() (amount float64, modified sql.NullInt64) {
				require.NoError(t, e.db().QueryRow(`SELECT (SELECT amount FROM orders), (SELECT modified_ns FROM ingest_files)`).Scan(&amount, &modified))
				return amount, modified
			}
			hour := time.Now().Add(-time.Hour).Truncate(time.Second)
			stamp(hour)
			require.EqualValues(t, 1, e.run(t).Sources[0].Read)
			amount, modified := stored()
			require.Equal(t, 10.0, amount)
			require.Equal(t, hour.UnixNano(), modified.Int64, "a settled modification time is kept")

			// Other bytes of the same size, the time put back: only hashing can tell.
			writeFile(t, path, v2)
			stamp(hour)
			res := e.run(t)
			amount, _ = stored()
			if verify {
				require.EqualValues(t, 1, res.Sources[0].Read)
				require.Equal(t, 11.0, amount, "verify_unchanged hashes the file and loads the change")
			} else {
				require.EqualValues(t, 0, res.Sources[0].Read)
				require.Equal(t, 10.0, amount, "same size and time: skipped without reading the file")
				stamp(hour.Add(time.Minute)) // the time moved: hashed, changed, loaded
				require.EqualValues(t, 1, e.run(t).Sources[0].Read)
				amount, _ = stored()
				require.Equal(t, 11.0, amount)
			}

			// Touched, not changed: hashed, skipped, and the new time kept.
			touched := hour.Add(2 * time.Minute)
			stamp(touched)
			require.EqualValues(t, 0, e.run(t).Sources[0].Read)
			_, modified = stored()
			require.Equal(t, touched.UnixNano(), modified.Int64)

			// Written just now: its time is not trusted yet.
			writeFile(t, path, v1)
			require.EqualValues(t, 1, e.run(t).Sources[0].Read)
			amount, modified = stored()
			require.Equal(t, 10.0, amount)
			require.False(t, modified.Valid, "a time within the clock tick of the last write is not kept")
		})
	}
}

func TestPositionsNameTrueLinesAroundRejectedLines(t *testing.T) {
	e := setupRatio(t, ordersSource, map[string]string{
		"a.csv": "id,cust,ts,amt\n" +
			"A1,C1,2026-01-01 10:00:00,10\n" + // line 2
			"A2,C1,2026-01-01 10:00:00,10,surplus\n" + // line 3: rejected by the CSV reader
			"A3,C1,2026-01-01 10:00:00,x\n" + // line 4: mapping fails
			"A4,C1,2026-01-01 10:00:00,1,2,3\n" + // line 5: rejected
			"A5,C1,2026-01-01 10:00:00,5\n", // line 6
	}, 0.9)
	res := e.run(t)
	require.EqualValues(t, 5, res.Sources[0].Read)
	require.EqualValues(t, 2, res.Sources[0].Loaded)
	require.EqualValues(t, 3, res.Sources[0].DeadLettered)
	require.Equal(t, map[string]string{"A1": "a.csv:2", "A5": "a.csv:6"}, e.pairs(t, `SELECT order_id, _position FROM orders`))
	dead := e.pairs(t, `SELECT position, reason FROM dead_letters`)
	require.Len(t, dead, 3)
	require.Contains(t, dead["a.csv:3"], "TOO MANY COLUMNS")
	require.Equal(t, "amount: cannot read 'x' as a number", dead["a.csv:4"])
	require.Contains(t, dead["a.csv:5"], "TOO MANY COLUMNS")
}

// A file large enough that DuckDB's threads read parts of it in parallel: the records are
// mapped on every core and numbered afterwards by the order they were stored in, so each must
// still name its own line, also after lines rejected by the reader and by the mapping.
func TestRecordsReadInParallelNameTheirOwnLines(t *testing.T) {
	const lines = 600_000 // about 40 MB, several of DuckDB's parallel CSV chunks
	var b strings.Builder
	b.WriteString("id,cust,ts,amt,line\n")
	want := map[int]string{} // line → reason a dead letter there gives
	for line := 2; line <= lines; line++ {
		switch line {
		case 150_001, 450_002:
			fmt.Fprintf(&b, "X%d,C1,2026-01-01 10:00:00,1,%d,surplus\n", line, line)
			want[line] = "TOO MANY COLUMNS"
		case 300_003, lines - 1:
			fmt.Fprintf(&b, "X%d,C1,2026-01-01 10:00:00,n/a,%d\n", line, line)
			want[line] = "amount: cannot read 'n/a' as a number"
		default:
			fmt.Fprintf(&b, "A%d,C%d,2026-01-01 10:00:00,%d.25,%d\n", line, line%5000, line%97, line)
		}
	}
	e := setupRatio(t, ordersSource+"\n    unknown_fields: keep", map[string]string{"big.csv": b.String()}, 0.9)
	res := e.run(t)
	require.EqualValues(t, lines-1, res.Sources[0].Read)
	require.EqualValues(t, lines-1-len(want), res.Sources[0].Loaded)

	var loaded, trueLines int64
	require.NoError(t, e.db().QueryRow(`SELECT count(*), count(*) FILTER (order_id = 'A' || _seq AND _position = 'big.csv:' || _seq
		AND CAST(_extra->>'line' AS BIGINT) = _seq) FROM orders`).Scan(&loaded, &trueLines))
	require.EqualValues(t, lines-1-len(want), loaded)
	require.Equal(t, loaded, trueLines, "every loaded record names its own line")
	dead := e.pairs(t, `SELECT position, reason FROM dead_letters`)
	require.Len(t, dead, len(want))
	for line, reason := range want {
		require.Contains(t, dead[fmt.Sprintf("big.csv:%d", line)], reason, "line %d", line)
	}
}

func TestParquetAndTimeZones(t *testing.T) {
	e := setup(t, `  orders:
    table: orders
    timezone: America/New_York
    file: {paths: ["o.parquet"], allow_empty: true}
    mapping: {order_id: id, customer_id: cust, order_ts: ts, amount: amt, status: {const: completed}}`, nil)
	_, err := e.db().Exec(`COPY (SELECT * FROM (VALUES ('P1', 'C1', '2026-01-01 10:00:00', 1.5),
		('P2', 'C1', '2026-01-01T10:00:00+01:00', 2.5), ('P3', 'C2', '2026-07-01 10:00:00', 3.5)) v(id, cust, ts, amt))
		TO '` + filepath.Join(e.dir, "o.parquet") + `' (FORMAT parquet)`)
	require.NoError(t, err)
	e.run(t)
	got := e.pairs(t, `SELECT order_id, strftime(order_ts AT TIME ZONE 'UTC', '%Y-%m-%d %H:%M') || ' @ ' || _position FROM orders`)
	require.Equal(t, map[string]string{
		"P1": "2026-01-01 15:00 @ o.parquet:row 1", // local New York winter time, UTC−5
		"P2": "2026-01-01 09:00 @ o.parquet:row 2", // an explicit offset wins over the source zone
		"P3": "2026-07-01 14:00 @ o.parquet:row 3", // summer time, UTC−4
	}, got)
}

// A list or struct column mapped where one value belongs is a dead letter per record: it would
// load as its text ('[C1]'), an id that matches nothing.
func TestNestedParquetValuesAreDeadLetters(t *testing.T) {
	e := setupRatio(t, `  orders:
    table: orders
    file: {paths: ["o.parquet"], allow_empty: true}
    mapping: {order_id: id, customer_id: cust, order_ts: ts, amount: amt, status: {const: completed}, product_id: {expr: "tags[1]"}}`, nil, 1)
	_, err := e.db().Exec(`COPY (SELECT * FROM (VALUES ('P1', ['C1'], TIMESTAMP '2026-01-01 10:00:00', 1.5, ['x']),
		('P2', ['C2'], TIMESTAMP '2026-01-01 10:00:00', 2.5, ['y'])) v(id, cust, ts, amt, tags))
		TO '` + filepath.Join(e.dir, "o.parquet") + `' (FORMAT parquet)`)
	require.NoError(t, err)
	res := e.run(t)
	requireAccounted(t, e, res)
	require.EqualValues(t, 0, res.Sources[0].Loaded)
	want := "customer_id: field cust is a VARCHAR[] in the source, not a single value"
	require.Equal(t, map[string]string{"o.parquet:row 1": want, "o.parquet:row 2": want}, e.pairs(t, `SELECT position, reason FROM dead_letters`),
		"an expression may read into a list (tags[1]); only a column mapped straight from one fails")
}

// Older Spark and Hive wrote text as Parquet byte arrays without a string type. DuckDB reads
// those as BLOB, whose cast to text loaded Café as Caf\xC3\xA9: the bytes are now read as UTF-8
// text, numbers too, and bytes that are not UTF-8 are a dead letter with that one reason.
func TestParquetTextWrittenAsBytesLoadsAsText(t *testing.T) {
	e := setupRatio(t, `  orders:
    table: orders
    file: {paths: ["o.parquet"], allow_empty: true}
    mapping: {order_id: id, customer_id: cust, order_ts: ts, amount: amt, status: {const: completed}}`, nil, 1)
	_, err := e.db().Exec(`COPY (SELECT id, CAST(cust AS BLOB) AS cust, ts, CAST(amt AS BLOB) AS amt FROM (VALUES
		('B1', 'Caf\xC3\xA9', TIMESTAMP '2026-01-01 10:00:00', '1.5'), ('B2', 'C2', TIMESTAMP '2026-01-01 10:00:00', '2.5'),
		('B3', '\xFF\xFEab', TIMESTAMP '2026-01-01 10:00:00', '3'), ('B4', 'C4', TIMESTAMP '2026-01-01 10:00:00', '\xC3')) v(id, cust, ts, amt))
		TO '` + filepath.Join(e.dir, "o.parquet") + `' (FORMAT parquet)`)
	require.NoError(t, err)
	requireAccounted(t, e, e.run(t))
	require.Equal(t, map[string]string{"B1": "Café 1.5", "B2": "C2 2.5"}, e.pairs(t, `SELECT order_id, customer_id || ' ' || CAST(amount AS VARCHAR) FROM orders`))
	require.Equal(t, map[string]string{
		"o.parquet:row 3": "customer_id: field cust holds bytes that are not UTF-8 text",
		"o.parquet:row 4": "amount: field amt holds bytes that are not UTF-8 text",
	}, e.pairs(t, `SELECT position, reason FROM dead_letters`))
}

func TestCustomersLatestUpdateWins(t *testing.T) {
	src := `  crm:
    table: customers
    file: {paths: ["c*.csv"]}
    mapping: {customer_id: id, region: region, contact_consent: consent, updated_at: updated}`
	e := setup(t, src, map[string]string{
		"c1.csv": "id,region,consent,updated\nC1,north,yes,2026-01-05T00:00:00Z\nC2,south,no,2026-01-05T00:00:00Z\nC1,east,1,2026-01-09T00:00:00Z\n",
	})
	e.run(t)
	// A later file carries an older record for C1 (ignored) and a newer one for C2 (wins).
	writeFile(t, filepath.Join(e.dir, "c2.csv"), "id,region,consent,updated\nC1,west,no,2026-01-01T00:00:00Z\nC2,west,true,2026-02-01T00:00:00Z\n")
	e.run(t)
	got := e.pairs(t, `SELECT customer_id, region || '/' || contact_consent FROM customers`)
	require.Equal(t, map[string]string{"C1": "east/true", "C2": "west/true"}, got)
}

// Worked by hand: C1's highest version sits in the middle of the file, one C1 record has none
// (ranks lowest), and C2's two records tie on the version, so the later line wins.
func TestRepeatedKeysInOneFileKeepTheirHighestRecord(t *testing.T) {
	e := setup(t, `  crm:
    table: customers
    file: {paths: ["c.csv"]}
    mapping: {customer_id: id, region: region, updated_at: updated}`, map[string]string{
		"c.csv": "id,region,updated\nC1,a,2026-01-05T00:00:00Z\nC1,b,2026-01-09T00:00:00Z\nC1,c,\nC1,d,2026-01-07T00:00:00Z\n" +
			"C2,e,2026-01-05T00:00:00Z\nC2,f,2026-01-05T00:00:00Z\nC3,g,2026-01-01T00:00:00Z\n",
	})
	res := e.run(t)
	require.EqualValues(t, 4, res.Sources[0].Collapsed)
	require.Equal(t, map[string]string{"C1": "b", "C2": "f", "C3": "g"}, e.pairs(t, `SELECT customer_id, region FROM customers`))
	require.Equal(t, map[string]string{"c.csv:2": "C1/a", "c.csv:4": "C1/c", "c.csv:5": "C1/d", "c.csv:6": "C2/e"},
		e.pairs(t, `SELECT _position, customer_id || '/' || region FROM customers_superseded`))
}

func TestOrderLinesRollUpIntoOrders(t *testing.T) {
	e := setup(t, `  lines:
    table: orders
    rollup_lines: true
    file: {paths: ["lines.csv"]}
    mapping:
      order_id: inv
      customer_id: cust
      order_ts: ts
      amount: {expr: "TRY_CAST(qty AS DOUBLE) * TRY_CAST(price AS DOUBLE)"}
      quantity: qty
      status: {expr: "CASE WHEN inv LIKE 'C%' THEN 'returned' ELSE 'completed' END"}`, map[string]string{
		"lines.csv": "inv,cust,ts,qty,price\nI1,C1,2026-01-01 10:00:00,2,1.5\nI1,C1,2026-01-01 10:00:00,1,4\nI1,,2026-01-01 10:00:00,1,100\nC9,C1,2026-01-03 10:00:00,-1,4\n" +
			"I2,C2,2026-01-04 10:00:00,1,0.1\nI2,C2,2026-01-04 10:00:00,1,0.2\nI2,C2,2026-01-04 10:00:00,1,0.3\n",
	})
	res := e.run(t)
	require.EqualValues(t, 1, res.Sources[0].DeadLettered, "the line without a customer")
	var amount, qty float64
	var pos string
	require.NoError(t, e.db().QueryRow(`SELECT amount, quantity, _position FROM orders WHERE order_id = 'I1'`).Scan(&amount, &qty, &pos))
	require.Equal(t, 7.0, amount)
	require.Equal(t, 3.0, qty)
	require.Equal(t, "lines.csv:2", pos, "an order is found at its first line")
	var status string
	require.NoError(t, e.db().QueryRow(`SELECT status, amount FROM orders WHERE order_id = 'C9'`).Scan(&status, &amount))
	require.Equal(t, "returned", status)
	require.Equal(t, -4.0, amount)
	// Whatever order the lines are added in: 0.1 + 0.2 + 0.3 in doubles is 0.6000000000000001.
	require.NoError(t, e.db().QueryRow(`SELECT amount FROM orders WHERE order_id = 'I2'`).Scan(&amount))
	require.Equal(t, 0.6, amount)
}

// An order's lines that a JSON Lines file's batches split (batch_size 2 lines) add up in the
// stored order as they would in one batch: worked by hand, and against the same file read in one
// batch. A changed file replaces its orders rather than adding to them, and an order of another
// file is another stream: the later file's order takes the place of this one's, whole.
func TestOrderLinesAddUpAcrossBatches(t *testing.T) {
	source := func(batchSize int) string {
		return fmt.Sprintf(`  lines:
    table: orders
    rollup_lines: true
    file: {paths: ["lines*.jsonl"], batch_size: %d}
    mapping: {order_id: inv, customer_id: cust, order_ts: ts, amount: amt, quantity: qty, margin: margin, status: {const: completed}}`, batchSize)
	}
	lines := `{"inv":"I1","cust":"C1","ts":"2026-01-01 10:00:00","amt":2,"qty":1}
{"inv":"I2","cust":"C2","ts":"2026-01-02 10:00:00","amt":5,"qty":1}
{"inv":"I1","cust":"C1","ts":"2026-01-01 10:00:00","amt":3,"qty":2}
{"inv":"I3","cust":"C1","ts":"2026-01-03 10:00:00","amt":1,"qty":1}
{"inv":"I1","cust":"C1","ts":"2026-01-01 10:00:00","amt":0.1,"qty":1,"margin":0.5}
{"inv":"I1","cust":"C1","ts":"2026-01-01 10:00:00","amt":0.2,"qty":1}
`
	orders := `SELECT order_id, concat_ws(' ', amount, quantity, coalesce(CAST(margin AS VARCHAR), '-'), _position, _seq) FROM orders`
	batched := setup(t, source(2), map[string]string{"lines.jsonl": lines})
	res := batched.run(t)
	requireAccounted(t, batched, res)
	require.EqualValues(t, 3, res.Sources[0].Collapsed, "I1's lines 3, 5 and 6")
	want := map[string]string{"I1": "5.3 5.0 0.5 lines.jsonl:1 1", "I2": "5.0 1.0 - lines.jsonl:2 2", "I3": "1.0 1.0 - lines.jsonl:4 4"}
	require.Equal(t, want, batched.pairs(t, orders))
	require.Empty(t, batched.pairs(t, `SELECT order_id, _position FROM orders_superseded`), "lines of one order give way to nothing")
	whole := setup(t, source(1000), map[string]string{"lines.jsonl": lines})
	requireAccounted(t, whole, whole.run(t))
	require.Equal(t, whole.pairs(t, orders), batched.pairs(t, orders))

	// The file sent again with I1 corrected: its orders are the new file's, not the sum of both.
	writeFile(t, filepath.Join(batched.dir, "lines.jsonl"), strings.ReplaceAll(lines, `"amt":3,`, `"amt":4,`))
	requireAccounted(t, batched, batched.run(t))
	want["I1"] = "6.3 5.0 0.5 lines.jsonl:1 1"
	require.Equal(t, want, batched.pairs(t, orders))

	// Another file's I1 is not more lines of this file's I1: the later stream's order wins whole.
	writeFile(t, filepath.Join(batched.dir, "lines2.jsonl"), `{"inv":"I1","cust":"C1","ts":"2026-01-01 10:00:00","amt":7,"qty":1}`+"\n")
	res = batched.run(t)
	requireAccounted(t, batched, res)
	require.EqualValues(t, 1, res.Sources[0].Replaced)
	want["I1"] = "7.0 1.0 - lines2.jsonl:1 1"
	require.Equal(t, want, batched.pairs(t, orders))
	require.Equal(t, map[string]string{"I1": "6.3 lines.jsonl:1"}, batched.pairs(t, `SELECT order_id, amount || ' ' || _position FROM orders_superseded`))
}

func TestUnknownColumnsAreIgnoredKeptOrRejected(t *testing.T) {
	const csv = "id,cust,ts,amt,coupon\nO1,C1,2026-01-05 10:00:00,5.5,WINTER\nO2,C2,2026-01-06 11:00:00,7,\n"
	for _, tc := range []struct{ policy, extra string }{{"ignore", ""}, {"keep", `{"coupon":"WINTER"}`}, {"fail", ""}} {
		t.Run(tc.policy, func(t *testing.T) {
			e := setupRatio(t, ordersSource+"\n    unknown_fields: "+tc.policy, map[string]string{"orders.csv": csv}, 1)
			res := e.run(t)
			if tc.policy == "fail" {
				require.EqualValues(t, 0, res.Sources[0].Loaded)
				require.Equal(t, map[string]string{"orders.csv:2": "unknown fields: coupon", "orders.csv:3": "unknown fields: coupon"},
					e.pairs(t, `SELECT position, reason FROM dead_letters`))
				return
			}
			require.EqualValues(t, 2, res.Sources[0].Loaded)
			got := e.pairs(t, `SELECT order_id, coalesce(CAST(_extra AS VARCHAR), '') FROM orders`)
			require.Equal(t, tc.extra, got["O1"])
		})
	}
}

// Only a streaming source follows: a file read by `ckm ingest --follow` is read as in a run, and
// max_bad_ratio judges all its records, not the latest 10,000 a follow session is judged over.
// 2,000 bad lines after 50,000 good ones, in batches of 1,000, are 3.8%: within 5%.
func TestAFileReadWhileFollowingIsJudgedAsARun(t *testing.T) {
	var body strings.Builder
	for i := range 50_000 {
		fmt.Fprintf(&body, `{"id":"J%d","cust":"C%d","ts":"2026-01-01T10:00:00Z","amt":1}`+"\n", i, i%100)
	}
	body.WriteString(strings.Repeat("not json\n", 2000))
	e := setupRatio(t, strings.Replace(eventsSource, `paths: ["*.jsonl"]`, `paths: ["*.jsonl"], batch_size: 1000`, 1),
		map[string]string{"a.jsonl": body.String()}, 0.05)
	r := &pipelines.Runner{Config: e.cfg, Warehouse: e.w, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	res, err := r.Ingest(context.Background(), "events", true)
	require.NoError(t, err)
	require.EqualValues(t, []int64{52_000, 50_000, 2000}, []int64{res.Read, res.Loaded, res.DeadLettered})
}

// After a mapping is fixed, `ckm ingest --reload` reads a source's files again from their start:
// the records the old mapping dead-lettered load, each file's earlier rows are replaced (nothing
// doubled) and its old dead letters are marked superseded by the reload, while a record still bad
// is a current dead letter again. A plain ingest reads nothing: the files did not change.
func TestReloadReadsTheFilesAgainAfterAMappingFix(t *testing.T) {
	const source = `  orders:
    table: orders
    file: {paths: ["*.csv"]}
    mapping: {order_id: id, customer_id: cust, order_ts: ts, amount: amt, status: %s}`
	e := setupRatio(t, fmt.Sprintf(source, "state"), map[string]string{
		"a.csv": "id,cust,ts,amt,state\nA1,C1,2026-01-01 10:00:00,10,completed\nA2,C2,2026-01-02 10:00:00,20,done\nA3,C3,2026-01-04 10:00:00,x,completed\n",
		"b.csv": "id,cust,ts,amt,state\nB1,C1,2026-01-03 10:00:00,30,done\n",
	}, 0.9)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	res, err := (&pipelines.Runner{Config: e.cfg, Warehouse: e.w, Log: quiet}).Ingest(context.Background(), "orders", false)
	require.NoError(t, err)
	require.EqualValues(t, []int64{4, 1, 3}, []int64{res.Read, res.Loaded, res.DeadLettered}, "'done' is no status, 'x' no amount")

	path := filepath.Join(e.dir, "fixed.yaml")
	writeFile(t, path, "warehouse: {path: ckm.duckdb, threads: 2}\ntimezone: Europe/Berlin\nmax_bad_ratio: 0.9\nsources:\n"+
		fmt.Sprintf(source, "{const: completed}")+"\n")
	fixed, err := config.Load(path)
	require.NoError(t, err)
	r := &pipelines.Runner{Config: fixed, Warehouse: e.w, Log: quiet}
	res, err = r.Ingest(context.Background(), "orders", false)
	require.NoError(t, err)
	require.Zero(t, res.Read, "the files did not change")

	res, err = r.Reload(context.Background(), "orders")
	require.NoError(t, err)
	require.EqualValues(t, []int64{4, 3, 1}, []int64{res.Read, res.Loaded, res.DeadLettered})
	require.Equal(t, map[string]string{"A1": "a.csv:2", "A2": "a.csv:3", "B1": "b.csv:2"}, e.pairs(t, `SELECT order_id, _position FROM orders`))
	var superseded int
	require.NoError(t, e.db().QueryRow(`SELECT count(*) FROM dead_letters
		WHERE superseded_by = (SELECT run_id FROM dead_letters WHERE superseded_by IS NULL)`).Scan(&superseded))
	require.Equal(t, 3, superseded, "the first ingest's, by the reload")
	require.Equal(t, map[string]string{"a.csv:4": "amount: cannot read 'x' as a number"},
		e.pairs(t, `SELECT position, reason FROM dead_letters WHERE superseded_by IS NULL`), "the reload's own dead letter is current")
	var collapsed int
	require.NoError(t, e.db().QueryRow(`SELECT count(*) FROM orders_superseded`).Scan(&collapsed))
	require.Zero(t, collapsed, "a file's reloaded rows replace its own, they do not supersede them")

	res, err = r.Ingest(context.Background(), "orders", false)
	require.NoError(t, err)
	require.Zero(t, res.Read, "after a reload the files are known as loaded")
}

// A changed file supersedes its earlier dead letters, not its own: a line still bad in the new
// version is a current dead letter, which a query of what is still to fix finds.
func TestAChangedFileKeepsItsOwnDeadLettersCurrent(t *testing.T) {
	bad := "A2,C2,2026-01-02 10:00:00,x\n"
	e := setupRatio(t, ordersSource, map[string]string{"a.csv": "id,cust,ts,amt\nA1,C1,2026-01-01 10:00:00,10\n" + bad}, 0.9)
	first := e.run(t)
	writeFile(t, filepath.Join(e.dir, "a.csv"), "id,cust,ts,amt\nA1,C1,2026-01-01 10:00:00,11\n"+bad)
	second := e.run(t)
	require.Equal(t, map[string]string{first.RunID: second.RunID, second.RunID: ""},
		e.pairs(t, `SELECT run_id, coalesce(superseded_by, '') FROM dead_letters WHERE position = 'a.csv:3'`))
}

// --restart forgets a source's stream positions; a file source's files are read again with
// --reload instead (each replacing its own rows), and a restart leaves its positions be.
func TestRestartRefusesAFileSource(t *testing.T) {
	e := setup(t, ordersSource, map[string]string{"a.csv": "id,cust,ts,amt\nA1,C1,2026-01-01 10:00:00,10\n"})
	e.run(t)
	r := &pipelines.Runner{Config: e.cfg, Warehouse: e.w, Log: slog.New(slog.DiscardHandler)}
	require.EqualError(t, r.Restart(context.Background(), "orders", []string{"a.csv"}),
		"source orders: the file connector's streams are read again with --reload, not restarted")
	var positions int
	require.NoError(t, e.db().QueryRow(`SELECT count(*) FROM source_positions WHERE source = 'orders'`).Scan(&positions))
	require.Equal(t, 1, positions)
}

// Event streams often write times as Unix time: format unix, unix_ms, unix_us or unix_ns reads
// such a number (written as a JSON number or string, whole or with a fraction) exactly; a date
// column takes its day in the field's time zone. A number that is no such time (milliseconds
// read as seconds land past the year 9999) is a dead letter saying the format, as is the epoch.
func TestUnixTimesAreReadInTheirUnit(t *testing.T) {
	const source = `  events:
    table: orders
    file: {paths: ["*.jsonl"]}
    mapping: {order_id: id, customer_id: {const: C1}, amount: {const: "1"}, status: {const: completed},
              order_ts: {from: ts, format: unix_ms}, product_launch_date: {from: launched, format: unix, timezone: Europe/Berlin}}`
	const ms, launched = 1767225600123, 1767222000 // 2026-01-01 00:00:00.123 UTC; 2025-12-31 23:00 UTC, midnight in Berlin
	body := fmt.Sprintf(`{"id":"A","ts":%d,"launched":%d}
{"id":"B","ts":"%d"}
{"id":"C","ts":%g}
{"id":"D","ts":"soon"}
{"id":"E","ts":%d}
{"id":"F","ts":0}
`, ms, launched, ms, float64(ms), ms*1000)
	e := setupRatio(t, source, map[string]string{"a.jsonl": body}, 0.9)
	e.run(t)
	at := time.UnixMilli(ms).UTC().Format("2006-01-02 15:04:05.000")
	require.Equal(t, map[string]string{"A": at, "B": at, "C": at},
		e.pairs(t, `SELECT order_id, strftime(order_ts AT TIME ZONE 'UTC', '%Y-%m-%d %H:%M:%S.%g') FROM orders`))
	require.Equal(t, map[string]string{"A": time.Unix(launched, 0).In(mustZone(t, "Europe/Berlin")).Format(time.DateOnly)},
		e.pairs(t, `SELECT order_id, CAST(product_launch_date AS VARCHAR) FROM orders WHERE product_launch_date IS NOT NULL`))
	require.Equal(t, map[string]string{
		"a.jsonl:4": "order_ts: cannot read 'soon' as a timestamp in format unix_ms",
		"a.jsonl:5": fmt.Sprintf("order_ts: cannot read '%d' as a timestamp in format unix_ms", ms*1000),
		"a.jsonl:6": "order_ts: '0' is before 1970-01-02, the earliest order_ts taken unless the mapping sets min (a placeholder date?)",
	}, e.pairs(t, `SELECT position, reason FROM dead_letters`))
}

func mustZone(t *testing.T, name string) *time.Location {
	loc, err := time.LoadLocation(name)
	require.NoError(t, err)
	return loc
}
