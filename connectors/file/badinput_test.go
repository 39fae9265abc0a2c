package file_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// badRecordSources read the cases below: orders from CSV, feedback from JSON Lines.
const badRecordSources = `  orders:
    table: orders
    timezone: Europe/Berlin
    file: {paths: ["*.csv"], allow_empty: true}
    mapping: {order_id: id, customer_id: cust, order_ts: ts, amount: amt, quantity: qty, status: status}
  events:
    table: feedback
    file: {paths: ["*.jsonl"], allow_empty: true}
    mapping: {event_id: id, customer_id: customer.id, event_ts: ts, direction: direction, kind: kind, channel: channel,
              rating: rating, responded: responded}`

// One bad record among good ones, per kind of breakage the README's "Bad input: what happens"
// table lists: what happens to it (loaded, dead-lettered with its position and reason, skipped,
// collapsed into another record) while the good record beside it loads.
func TestBadRecordsAreHandledOneByOne(t *testing.T) {
	const csvHeader = "id,cust,ts,amt,qty,status\n"
	const good = "G1,C1,2026-01-05 10:00:00,10,1,completed\n"
	const goodEvent = `{"id":"G1","customer":{"id":"C1"},"ts":"2026-01-05T10:00:00Z","direction":"inbound","kind":"review","rating":5}` + "\n"
	for _, tc := range []struct {
		name   string
		file   string // its name decides the format
		body   string // after the header, before the good record
		want   string // "dead: <reason part>", "loaded", "skipped", "collapsed"
		column string // for "loaded": the value loaded, as SQL text of this column
		value  string
	}{
		{"too many columns", "a.csv", "B1,C1,2026-01-05 10:00:00,1,1,completed,extra\n", "dead: TOO MANY COLUMNS", "", ""},
		{"missing columns", "a.csv", "B1,C1\n", "dead: MISSING COLUMNS", "", ""},
		// In a file that quotes values a quote that is never closed is a dead letter, and takes the
		// lines up to the next quote along (here: the good record after it); the quoted values
		// around it keep their commas and lose their quotes.
		{"unterminated quote", "a.csv", "Q1,\"C, 1\",2026-01-05 10:00:00,1,1,completed\nB1,\"C1,2026-01-05 10:00:00,1,1,completed\n",
			"dead at 3: UNQUOTED VALUE", "customer_id", "C, 1"},
		// In a file that does not quote, a double quote is a character like any other.
		{"stray quote", "a.csv", "B1,5\" screen,2026-01-05 10:00:00,1,1,completed\n", "loaded", "customer_id", "5\" screen"},
		{"not UTF-8", "a.csv", "B1,caf\xe9,2026-01-05 10:00:00,1,1,completed\n", "dead: INVALID ENCODING", "", ""},
		{"NUL byte", "a.csv", "B1,C\x001,2026-01-05 10:00:00,1,1,completed\n", "dead: customer_id: contains a NUL byte", "", ""},
		{"empty id", "a.csv", ",C1,2026-01-05 10:00:00,1,1,completed\n", "dead: missing order_id (field id)", "", ""},
		{"blank customer", "a.csv", "B1,   ,2026-01-05 10:00:00,1,1,completed\n", "dead: missing customer_id (field cust)", "", ""},
		{"unparseable timestamp", "a.csv", "B1,C1,2025-13-45 25:61:00,1,1,completed\n", "dead: order_ts: cannot read '2025-13-45 25:61:00' as a timestamp", "", ""},
		{"impossible date", "a.csv", "B1,C1,2026-02-30 10:00:00,1,1,completed\n", "dead: order_ts: cannot read '2026-02-30 10:00:00' as a timestamp", "", ""},
		{"infinite timestamp", "a.csv", "B1,C1,infinity,1,1,completed\n", "dead: order_ts: 'infinity' is not a finite timestamp", "", ""},
		{"time in the DST gap", "a.csv", "B1,C1,2026-03-29 02:30:00,1,1,completed\n", "loaded", "strftime(order_ts AT TIME ZONE 'UTC', '%H:%M')", "01:30"},
		{"time in the repeated hour", "a.csv", "B1,C1,2026-10-25 02:30:00,1,1,completed\n", "loaded", "strftime(order_ts AT TIME ZONE 'UTC', '%H:%M')", "01:30"},
		{"explicit offset", "a.csv", "B1,C1,2026-01-05T10:00:00-05:00,1,1,completed\n", "loaded", "strftime(order_ts AT TIME ZONE 'UTC', '%H:%M')", "15:00"},
		{"not a number", "a.csv", "B1,C1,2026-01-05 10:00:00,n/a,1,completed\n", "dead: amount: cannot read 'n/a' as a number", "", ""},
		{"decimal comma", "a.csv", "B1,C1,2026-01-05 10:00:00,\"1,5\",1,completed\n", "dead: amount: cannot read '1,5' as a number", "", ""},
		{"NaN", "a.csv", "B1,C1,2026-01-05 10:00:00,NaN,1,completed\n", "dead: amount: 'NaN' is not a finite number", "", ""},
		{"infinity", "a.csv", "B1,C1,2026-01-05 10:00:00,-inf,1,completed\n", "dead: amount: '-inf' is not a finite number", "", ""},
		{"overflowing number", "a.csv", "B1,C1,2026-01-05 10:00:00,1e400,1,completed\n", "dead: amount: '1e400' is not a finite number", "", ""},
		{"absurd amount", "a.csv", "B1,C1,2026-01-05 10:00:00,1e33,1,completed\n", "dead: amount: '1e33' is not a finite number within ±1e+15", "", ""},
		{"refund", "a.csv", "B1,C1,2026-01-05 10:00:00,-4.5,1,returned\n", "loaded", "amount", "-4.5"},
		{"wrong-case vocabulary", "a.csv", "B1,C1,2026-01-05 10:00:00,1,1,Completed\n", "dead: status: 'Completed' is not one of completed, cancelled, returned", "", ""},
		{"value outside the vocabulary", "a.csv", "B1,C1,2026-01-05 10:00:00,1,1,shipped\n", "dead: status: 'shipped' is not one of", "", ""},
		{"duplicate key", "a.csv", "G1,C1,2026-01-05 10:00:00,99,1,completed\n", "collapsed", "", ""},
		{"byte order mark before the header", "a.csv", "", "loaded", "amount", "10.0"},
		{"byte order mark before JSON", "a.jsonl", "\ufeff" + `{"id":"B1","customer":{"id":"C1"},"ts":"2026-01-05T10:00:00Z","direction":"inbound","kind":"review"}` + "\n",
			"loaded", "customer_id", "C1"},
		{"malformed JSON", "a.jsonl", `{"id":"B1","customer":{"id":"C1"}` + "\n", "dead: not valid JSON", "", ""},
		{"not a JSON object", "a.jsonl", "[1, 2, 3]\n", "dead: not a JSON object", "", ""},
		{"wrong JSON type", "a.jsonl", `{"id":"B1","customer":{"id":"C1"},"ts":"2026-01-05T10:00:00Z","direction":"inbound","kind":"review","rating":"great"}` + "\n",
			"dead: rating: cannot read 'great' as a whole number", "", ""},
		{"JSON array for a value", "a.jsonl", `{"id":"B1","customer":{"id":["C1"]},"ts":"2026-01-05T10:00:00Z","direction":"inbound","kind":"review"}` + "\n",
			"dead: customer_id: field customer.id is a JSON array, not a single value", "", ""},
		{"JSON object for a value", "a.jsonl", `{"id":{"n":1},"customer":{"id":"C1"},"ts":"2026-01-05T10:00:00Z","direction":"inbound","kind":"review"}` + "\n",
			"dead: event_id: field id is a JSON object, not a single value", "", ""},
		{"text in brackets", "a.jsonl", `{"id":"B1","customer":{"id":"[C1] {x}"},"ts":"2026-01-05T10:00:00Z","direction":"inbound","kind":"review"}` + "\n",
			"loaded", "customer_id", "[C1] {x}"},
		{"rating 4.6", "a.jsonl", `{"id":"B1","customer":{"id":"C1"},"ts":"2026-01-05T10:00:00Z","direction":"inbound","kind":"review","rating":4.6}` + "\n",
			"dead: rating: cannot read '4.6' as a whole number", "", ""},
		{"rating out of range", "a.jsonl", `{"id":"B1","customer":{"id":"C1"},"ts":"2026-01-05T10:00:00Z","direction":"inbound","kind":"review","rating":7}` + "\n",
			"dead: rating: 7 is outside 1..5", "", ""},
		{"rating 4.0", "a.jsonl", `{"id":"B1","customer":{"id":"C1"},"ts":"2026-01-05T10:00:00Z","direction":"inbound","kind":"review","rating":4.0}` + "\n",
			"loaded", "rating", "4"},
		{"unreadable boolean", "a.jsonl", `{"id":"B1","customer":{"id":"C1"},"ts":"2026-01-05T10:00:00Z","direction":"outbound","kind":"survey_invite","responded":"maybe"}` + "\n",
			"dead: responded: cannot read 'maybe' as true/false", "", ""},
		{"missing JSON field", "a.jsonl", `{"id":"B1","customer":{},"ts":"2026-01-05T10:00:00Z","direction":"inbound","kind":"review"}` + "\n",
			"dead: missing customer_id (field customer.id)", "", ""},
		{"escaped NUL in JSON", "a.jsonl", `{"id":"B1","customer":{"id":"C\u00001"},"ts":"2026-01-05T10:00:00Z","direction":"inbound","kind":"review"}` + "\n",
			"dead: customer_id: contains a NUL byte", "", ""},
		{"not UTF-8 in JSON", "a.jsonl", `{"id":"B1","customer":{"id":"caf` + "\xe9" + `"},"ts":"2026-01-05T10:00:00Z","direction":"inbound","kind":"review"}` + "\n",
			"dead: line is not valid UTF-8", "", ""},
		// DuckDB reads the first of a key named twice, most JSON libraries the last: the
		// producer may have meant either. A key named twice that the mapping does not read is harmless.
		{"JSON key named twice", "a.jsonl", `{"id":"B1","customer":{"id":"C1"},"ts":"2026-01-05T10:00:00Z","direction":"inbound","kind":"review","id":"B2"}` + "\n",
			`dead: event_id: field id is ambiguous: the JSON document names "id" more than once`, "", ""},
		{"JSON key named twice among 100 keys", "a.jsonl", `{"id":"B1","customer":{"id":"C1"},"ts":"2026-01-05T10:00:00Z","direction":"inbound","kind":"review",` +
			manyKeys(100) + `,"id":"B2"}` + "\n", `dead: event_id: field id is ambiguous: the JSON document names "id" more than once`, "", ""},
		{"JSON key named twice, once escaped", "a.jsonl", `{"id":"B1","customer":{"id":"C1"},"ts":"2026-01-05T10:00:00Z","direction":"inbound","kind":"review","k\u0069nd":"praise"}` + "\n",
			`dead: kind: field kind is ambiguous: the JSON document names "kind" more than once`, "", ""},
		{"nested JSON key named twice", "a.jsonl", `{"id":"B1","customer":{"id":"C1","id":"C2"},"ts":"2026-01-05T10:00:00Z","direction":"inbound","kind":"review"}` + "\n",
			`dead: customer_id: field customer.id is ambiguous: its JSON object names "id" more than once`, "", ""},
		{"JSON object named twice", "a.jsonl", `{"id":"B1","customer":{"id":"C1"},"customer":{"id":"C2"},"ts":"2026-01-05T10:00:00Z","direction":"inbound","kind":"review"}` + "\n",
			`dead: customer_id: field customer.id is ambiguous: the JSON document names "customer" more than once`, "", ""},
		{"unread JSON key named twice", "a.jsonl", `{"id":"B1","customer":{"id":"C1","tier":1,"tier":2},"ts":"2026-01-05T10:00:00Z","direction":"inbound","kind":"review","note":"a","note":"b"}` + "\n",
			"loaded", "customer_id", "C1"},
		{"blank line", "a.jsonl", "   \n", "skipped", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body string
			switch {
			case tc.name == "byte order mark before the header":
				body = "\ufeff" + csvHeader + good
			case strings.HasSuffix(tc.file, ".csv"):
				body = csvHeader + tc.body + good
			default:
				body = tc.body + goodEvent
			}
			e := setupRatio(t, badRecordSources, map[string]string{tc.file: body}, 1)
			res := e.run(t)
			requireAccounted(t, e, res)
			var loaded, dead, collapsed, skipped int64
			for _, s := range res.Sources {
				loaded, dead, collapsed, skipped = loaded+s.Loaded, dead+s.DeadLettered, collapsed+s.Collapsed, skipped+s.Skipped
			}
			table, position := "orders", tc.file+":2"
			if strings.HasSuffix(tc.file, ".jsonl") {
				table, position = "feedback", tc.file+":1"
			}
			want, reason, _ := strings.Cut(tc.want, ": ")
			if line, ok := strings.CutPrefix(want, "dead at "); ok {
				want, position = "dead", tc.file+":"+line
			}
			switch want {
			case "dead":
				require.EqualValues(t, 1, loaded, "the good record loads")
				require.EqualValues(t, 1, dead)
				got := e.pairs(t, `SELECT position, reason FROM dead_letters`)
				require.Contains(t, got[position], reason, "dead letters: %v", got)
				if tc.column != "" {
					require.Equal(t, map[string]string{"Q1": tc.value}, e.pairs(t, `SELECT order_id, `+tc.column+` FROM orders`))
				}
			case "loaded":
				require.EqualValues(t, 0, dead, "%v", e.pairs(t, `SELECT position, reason FROM dead_letters`))
				if tc.column != "" {
					id := "B1"
					if tc.name == "byte order mark before the header" {
						id = "G1"
					}
					key := map[string]string{"orders": "order_id", "feedback": "event_id"}[table]
					got := e.pairs(t, fmt.Sprintf(`SELECT %s, CAST(%s AS VARCHAR) FROM %s`, key, tc.column, table))
					require.Equal(t, tc.value, got[id])
				}
			case "collapsed":
				require.EqualValues(t, 1, loaded)
				require.EqualValues(t, 1, collapsed)
				require.Equal(t, map[string]string{"G1": "10.0"}, e.pairs(t, `SELECT order_id, CAST(amount AS VARCHAR) FROM orders`),
					"the later line of the key is current")
			case "skipped":
				require.EqualValues(t, 1, loaded)
				require.EqualValues(t, 1, skipped)
			default:
				t.Fatalf("case %q: unknown outcome %q", tc.name, tc.want)
			}
		})
	}
}

// manyKeys is n JSON members "k0":0, "k1":1, …: an object of more keys than is usual.
func manyKeys(n int) string {
	members := make([]string, n)
	for i := range members {
		members[i] = fmt.Sprintf(`"k%d":%d`, i, i)
	}
	return strings.Join(members, ",")
}
