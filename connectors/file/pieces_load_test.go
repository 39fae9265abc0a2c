package file_test

import (
	"fmt"
	"strings"
	"testing"
	"unicode/utf16"

	"github.com/stretchr/testify/require"
)

// piecesSource is ordersSource reading its files in pieces of at most size (or whole, for "").
func piecesSource(size string) string {
	if size == "" {
		return ordersSource
	}
	return strings.Replace(ordersSource, `file: {paths: ["*.csv"]}`, `file: {paths: ["*.csv"], batch_bytes: `+size+`}`, 1)
}

// loaded is what a load left: every order with its lineage, every dead letter, and the counts.
func loaded(t *testing.T, e *env, read, loadedN, dead int64) string {
	var b strings.Builder
	fmt.Fprintf(&b, "read %d, loaded %d, dead letters %d\n", read, loadedN, dead)
	rows, err := e.db().Query(`SELECT order_id || ' | ' || customer_id || ' | ' || order_ts || ' | ' || amount || ' @ ' || _position || ' ' || _stream || ' ' || _seq
		FROM orders UNION ALL SELECT 'dead ' || position || ': ' || reason || ' | ' || payload FROM dead_letters ORDER BY 1`)
	require.NoError(t, err)
	defer rows.Close()
	for rows.Next() {
		var s string
		require.NoError(t, rows.Scan(&s))
		b.WriteString(s + "\n")
	}
	require.NoError(t, rows.Err())
	return b.String()
}

// A CSV file larger than batch_bytes loads in pieces, a transaction each, and ends up exactly as
// it loads whole: the same rows on the same lines, the same dead letters at the same positions
// for the same reasons, whatever the file throws at the cuts (an Excel separator line, a byte
// order mark, \r\n endings, blank lines, quoted delimiters and doubled quotes, short and long
// rows, a repeated header, a line that is not UTF-8, a quote never closed), compressed under a
// name that does not say so, or in UTF-16.
func TestACSVFileLoadsInPiecesAsItLoadsWhole(t *testing.T) {
	lines := []string{
		"\ufeffsep=;",                                 // 1
		"id;cust;ts;amt",                              // 2
		"A3;\"C; 1\";2026-01-01 10:00:00;3",           // 3
		"A4;\"say \"\"hi\"\"\";2026-01-02 10:00:00;4", // 4
		"",                                   // 5
		"B6;C1",                              // 6: a short row
		"A7;C2;2026-01-03 10:00:00;7",        // 7
		"id;cust;ts;amt",                     // 8: the header again
		"B9;C3;2026-01-04 10:00:00;x",        // 9: the mapping fails
		"",                                   // 10
		"",                                   // 11
		"B12;C3;2026-01-04 10:00:00;1;extra", // 12: a long row
		"B13;caf\xe9;2026-01-04 10:00:00;13", // 13: Latin-1
		"B14;C4;1900-01-01 00:00:00;14",      // 14: a placeholder date
		"A15;C5;2026-01-05 10:00:00;15",      // 15
		"B16;C6;2026-01-05 10:00:00;\"16",    // 16: a quote never closed
	}
	crlf := strings.Join(lines, "\r\n") + "\r\n"
	toUTF16 := func(s string) string {
		units := utf16.Encode([]rune("\ufeff" + s))
		out := make([]byte, 0, 2*len(units))
		for _, u := range units {
			out = append(out, byte(u), byte(u>>8))
		}
		return string(out)
	}
	utf8Only := strings.Replace(strings.Join(lines, "\n")+"\n", "caf\xe9", "café", 1) // UTF-16 cannot carry the Latin-1 byte
	for _, file := range []struct{ name, body string }{
		{"crlf", crlf},
		{"gzip named .csv", gzipped(t, crlf)},
		{"utf-16", toUTF16(utf8Only)},
	} {
		t.Run(file.name, func(t *testing.T) {
			var whole string
			for _, size := range []string{"", "1B", "70B"} {
				e := setupRatio(t, piecesSource(size), map[string]string{"a.csv": file.body}, 1)
				res := e.run(t)
				requireAccounted(t, e, res)
				s := res.Sources[0]
				got := loaded(t, e, s.Read, s.Loaded, s.DeadLettered)
				if size == "" {
					whole = got
					require.Contains(t, got, "A15 | C5 | 2026-01-05 10:00:00+01 | 15.0 @ a.csv:15 a.csv 15", "the whole load is the reference")
					continue
				}
				require.Equal(t, whole, got, "in pieces of %s", size)
				var partial int
				require.NoError(t, e.db().QueryRow(`SELECT count(*) FROM source_positions WHERE position LIKE '%partial:%'`).Scan(&partial))
				require.Zero(t, partial, "the last piece stored the file's version")
				again := e.run(t)
				require.Zero(t, again.Sources[0].Read, "an unchanged file is not read again")
			}
		})
	}
}

// A quoted value may hold line breaks; a piece never ends inside one. Pieces start at their true
// line, so in pieces of a record each, every record names its first line even after records of
// several lines (a file read whole counts such a record as one line for the records after it).
func TestQuotedValuesOverLinesAreNeverCut(t *testing.T) {
	file := "id,cust,ts,amt\n" + // 1
		"A2,\"two\nlines\",2026-01-01 10:00:00,2\n" + // 2–3
		"A4,C1,2026-01-01 10:00:00,4\n" + // 4
		"A5,\"three\n\n\"\"lines\"\"\",2026-01-01 10:00:00,5\n" + // 5–7
		"A8,C1,2026-01-01 10:00:00,8\n" // 8
	values := `SELECT order_id, customer_id || ' ' || amount FROM orders`
	whole := setup(t, ordersSource, map[string]string{"a.csv": file})
	requireAccounted(t, whole, whole.run(t))
	e := setup(t, piecesSource("1B"), map[string]string{"a.csv": file})
	requireAccounted(t, e, e.run(t))
	require.Equal(t, map[string]string{"A2": "two\nlines 2.0", "A4": "C1 4.0", "A5": "three\n\n\"lines\" 5.0", "A8": "C1 8.0"}, e.pairs(t, values))
	require.Equal(t, whole.pairs(t, values), e.pairs(t, values))
	require.Equal(t, map[string]string{"A2": "a.csv:2", "A4": "a.csv:4", "A5": "a.csv:5", "A8": "a.csv:8"},
		e.pairs(t, `SELECT order_id, _position FROM orders`))
}

// A file of order lines loads in pieces like any other: an order whose lines two pieces hold adds
// the later piece's lines to what the earlier one stored, so the orders equal the file read whole.
func TestOrderLinesSplitAcrossPiecesAddUp(t *testing.T) {
	source := func(batchBytes string) string {
		return `  lines:
    table: orders
    rollup_lines: true
    file: {paths: ["lines.csv"], batch_bytes: ` + batchBytes + `}
    mapping: {order_id: inv, customer_id: cust, order_ts: ts, amount: amt, quantity: qty, status: {const: completed}}`
	}
	lines := "inv,cust,ts,amt,qty\nI1,C1,2026-01-01 10:00:00,2,1\nI2,C2,2026-01-01 10:00:00,5,1\nI1,C1,2026-01-01 10:00:00,3,2\nI1,C1,2026-01-01 10:00:00,0.1,1\n"
	orders := `SELECT order_id, concat_ws(' ', amount, quantity, _position) FROM orders`
	e := setup(t, source("1B"), map[string]string{"lines.csv": lines})
	res := e.run(t)
	requireAccounted(t, e, res)
	require.EqualValues(t, 2, res.Sources[0].Collapsed, "I1's second and third lines")
	require.Equal(t, map[string]string{"I1": "5.1 4.0 lines.csv:2", "I2": "5.0 1.0 lines.csv:3"}, e.pairs(t, orders))
	whole := setup(t, source("1GiB"), map[string]string{"lines.csv": lines})
	requireAccounted(t, whole, whole.run(t))
	require.Equal(t, whole.pairs(t, orders), e.pairs(t, orders))
}
