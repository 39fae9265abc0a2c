package pipelines_test

import (
	"bytes"
	"context"
	"database/sql"
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
)

const lookupConfig = `warehouse: {path: ckm.duckdb}
max_bad_ratio: 0.5
sources:
  reviews:
    table: feedback
    file: {paths: [reviews.csv]}
    lookups:
      order: {file: orders.csv, key: order_id, on: order_id}
      person: {file: people.csv, key: buyer, on: order.buyer}
    mapping: {event_id: id, customer_id: person.person_id, event_ts: ts, direction: {const: inbound}, kind: {const: review}}
pipelines:
  p: {transforms: [rfm]}
`

func TestLookupsEnrichRecordsAndRefuseAmbiguousKeys(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644))
	}
	write("config.yaml", lookupConfig)
	write("reviews.csv", "id,order_id,ts\nr1,o1,2026-01-01 10:00:00\nr2,o2,2026-01-02 10:00:00\nr3,o9,2026-01-03 10:00:00\n")
	write("orders.csv", "order_id,buyer\no1,b1\no2,b2\n")
	write("people.csv", "buyer,person_id\nb1,P1\nb2,P1\n")
	env := testutil.Open(t, filepath.Join(dir, "config.yaml"))
	res := env.Run(t, "p", "2026-01-31")
	require.EqualValues(t, 2, res.Sources[0].Loaded)
	require.EqualValues(t, 1, res.Sources[0].DeadLettered, "an order nobody knows leaves the customer unmapped")
	var people string
	require.NoError(t, env.Warehouse.DB().QueryRow(`SELECT string_agg(event_id || '→' || customer_id, ' ' ORDER BY event_id) FROM feedback`).Scan(&people))
	require.Equal(t, "r1→P1 r2→P1", people)
	var reason string
	require.NoError(t, env.Warehouse.DB().QueryRow(`SELECT reason FROM dead_letters`).Scan(&reason))
	require.Contains(t, reason, "customer_id")

	// A key that repeats would double records: the batch fails and says which key.
	write("people.csv", "buyer,person_id\nb1,P1\nb1,P2\nb2,P1\n")
	write("reviews.csv", "id,order_id,ts\nr4,o1,2026-01-04 10:00:00\n")
	r := &pipelines.Runner{Config: env.Config, Warehouse: env.Warehouse, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	_, err := r.Run(context.Background(), pipelines.Request{Pipeline: "p", AsOf: time.Date(2026, 1, 31, 0, 0, 0, 0, time.UTC)})
	require.ErrorContains(t, err, `lookup person: key buyer is not unique`)
	require.ErrorContains(t, err, `"b1"`)
}

// A lookup file whose header names a column twice (in any capitals) is refused: DuckDB names
// the second Person_ID_1, and person.person_id would read one of the two without a word. A
// column really named person_id_1 beside person_id is no repeat, and is read by its name.
func TestALookupHeaderNamingAColumnTwiceIsRefused(t *testing.T) {
	for _, format := range []string{"csv", "parquet"} {
		t.Run(format, func(t *testing.T) {
			dir := t.TempDir()
			write := func(name, body string) {
				require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644))
			}
			people := func(header string) {
				body := header + "\nb1,P1,X1\nb2,P2,X2\n"
				if format == "csv" {
					write("people.csv", body)
					return
				}
				write("people.tmp.csv", body)
				// DuckDB writes no name twice: the duplicate is made by renaming a column in the footer.
				db, err := sql.Open("duckdb", "")
				require.NoError(t, err)
				defer db.Close()
				_, err = db.Exec(`COPY (SELECT * FROM read_csv('` + filepath.Join(dir, "people.tmp.csv") + `', header = true, all_varchar = true)) TO '` +
					filepath.Join(dir, "people.parquet") + `' (FORMAT parquet)`)
				require.NoError(t, err)
				if strings.Contains(header, "Person_XX") { // in the schema and in the column's path
					raw, err := os.ReadFile(filepath.Join(dir, "people.parquet"))
					require.NoError(t, err)
					require.Equal(t, 2, bytes.Count(raw, []byte("Person_XX")))
					require.NoError(t, os.WriteFile(filepath.Join(dir, "people.parquet"), bytes.ReplaceAll(raw, []byte("Person_XX"), []byte("Person_ID")), 0o644))
				}
			}
			write("reviews.csv", "id,order_id,ts\nr1,o1,2026-01-01 10:00:00\nr2,o2,2026-01-02 10:00:00\n")
			write("orders.csv", "order_id,buyer\no1,b1\no2,b2\n")

			twice := "buyer,person_id,Person_ID"
			if format == "parquet" {
				twice = "buyer,person_id,Person_XX"
			}
			people(twice)
			cfg := strings.ReplaceAll(lookupConfig, "people.csv", "people."+format)
			write("config.yaml", cfg)
			env := testutil.Open(t, filepath.Join(dir, "config.yaml"))
			r := &pipelines.Runner{Config: env.Config, Warehouse: env.Warehouse, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
			_, err := r.Run(context.Background(), pipelines.Request{Pipeline: "p", AsOf: time.Date(2026, 1, 31, 0, 0, 0, 0, time.UTC)})
			require.ErrorContains(t, err, "lookup person: "+filepath.Join(dir, "people."+format)+" names a column more than once (person_id and Person_ID; names match in any capitals)")
			problems, err := r.Check(context.Background())
			require.NoError(t, err)
			require.Len(t, problems, 1)
			require.Contains(t, problems[0], "person_id and Person_ID")

			people("buyer,person_id,person_id_1")
			write("config.yaml", strings.Replace(cfg, "person.person_id", "person.person_id_1", 1))
			env2 := testutil.Open(t, filepath.Join(dir, "config.yaml"))
			env2.Run(t, "p", "2026-01-31")
			require.Equal(t, map[string]string{"r1": "X1", "r2": "X2"}, testutil.Pairs(t, env2.Warehouse.DB(), `SELECT event_id, customer_id FROM feedback`))
		})
	}
}

func TestLookupCycleFailsValidation(t *testing.T) {
	dir := t.TempDir()
	cfg := `sources:
  s:
    table: feedback
    file: {paths: [x.csv], allow_empty: true}
    lookups:
      a: {file: x.csv, key: k, on: b.k}
      b: {file: x.csv, key: k, on: a.k}
    mapping: {event_id: id, customer_id: c, event_ts: ts, direction: d, kind: k}
`
	require.NoError(t, os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(cfg), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "x.csv"), []byte("k\n1\n"), 0o644))
	_, err := config.Load(filepath.Join(dir, "config.yaml"))
	require.ErrorContains(t, err, "lookups a, b match on each other in a cycle")
}
