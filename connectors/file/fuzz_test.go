package file_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/ckm-dev/ckm/config"
	"github.com/ckm-dev/ckm/pipelines"
	"github.com/ckm-dev/ckm/warehouse"
)

// Fuzzed files go to one warehouse per fuzzing process: opening DuckDB for every input would
// leave little time for inputs.
var fuzzTarget struct {
	once sync.Once
	dir  string
	r    *pipelines.Runner
	err  error
	n    int
}

const fuzzConfig = `warehouse: {path: ckm.duckdb, threads: 2}
timezone: Europe/Berlin
max_bad_ratio: 1
sources:
  orders:
    table: orders
    file: {paths: ["in/*.csv"], allow_empty: true}
    mapping: {order_id: id, customer_id: cust, order_ts: ts, amount: amt, quantity: qty, status: {const: completed}}
  events:
    table: feedback
    file: {paths: ["in/*.jsonl"], allow_empty: true}
    mapping: {event_id: id, customer_id: customer.id, event_ts: ts, direction: direction, kind: kind, rating: rating, text: text}
pipelines:
  p: {transforms: [rfm]}
`

// TestMain removes the fuzzing warehouse, which outlives each input by design.
func TestMain(m *testing.M) {
	code := m.Run()
	if fuzzTarget.r != nil {
		_ = fuzzTarget.r.Warehouse.Close()
	}
	if fuzzTarget.dir != "" {
		_ = os.RemoveAll(fuzzTarget.dir)
	}
	os.Exit(code)
}

func fuzzRunner(t testing.TB) (*pipelines.Runner, string) {
	fuzzTarget.once.Do(func() {
		dir, err := os.MkdirTemp("", "ckm-fuzz-")
		if err != nil {
			fuzzTarget.err = err
			return
		}
		if err := os.MkdirAll(filepath.Join(dir, "in"), 0o700); err != nil {
			fuzzTarget.err = err
			return
		}
		path := filepath.Join(dir, "config.yaml")
		if err := os.WriteFile(path, []byte(fuzzConfig), 0o600); err != nil {
			fuzzTarget.err = err
			return
		}
		cfg, err := config.Load(path)
		if err != nil {
			fuzzTarget.err = err
			return
		}
		w, err := warehouse.Open(context.Background(), warehouse.Options{Path: cfg.Warehouse.Path, Threads: 2})
		if err != nil {
			fuzzTarget.err = err
			return
		}
		fuzzTarget.dir = dir
		fuzzTarget.r = &pipelines.Runner{Config: cfg, Warehouse: w, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	})
	if fuzzTarget.err != nil {
		t.Fatal(fuzzTarget.err)
	}
	return fuzzTarget.r, fuzzTarget.dir
}

// Layouts of a fuzzed input: CSV after a fixed header (the bytes are the records), CSV with the
// bytes as the whole file (the header too), JSON Lines.
const (
	csvBody = iota
	csvWhole
	jsonLines
	layouts
)

// FuzzFileConnector feeds arbitrary bytes through the file connector and the mapping, as CSV or
// JSON Lines. Whatever the bytes: no panic, every record read is accounted for (read = loaded +
// dead-lettered + collapsed + skipped), and every dead letter names a position and a reason.
// A file may only fail as a whole for the mapping's sake: a header without the mapped columns.
//
// make test runs it for 20 s after the unit tests; run it longer with
//
//	go test -tags duckdb_arrow -run '^$' -fuzz '^FuzzFileConnector$' -fuzztime 10m ./connectors/file
//
// New failing inputs land in testdata/fuzz/FuzzFileConnector: commit them with the fix.
func FuzzFileConnector(f *testing.F) {
	for _, seed := range []struct {
		data   string
		layout uint8
	}{
		{"A1,C1,2026-01-01 10:00:00,1.5,2\n", csvBody},
		{"A2,caf\xe9,2026-01-01 10:00:00,1,1\n", csvBody},
		{"A3,C1,2026-01-01 10:00:00,NaN,1\nA4,C1,2026-01-01 10:00:00,1e400,1\nA5,C1,2026-01-01 10:00:00,-inf,1\n", csvBody},
		{"A6,C1,infinity,1,1\nA7,C\x001,2026-01-01 10:00:00,1,1\n", csvBody},
		{"A8,C1,2026-01-01 10:00:00,1,1,extra\nA9,C1\n\"A10,C1,2026-01-01 10:00:00,1,1\n", csvBody},
		{"A11,C1,2026-01-01 10:00:00,1,1\r\nA12,C1,2026-01-01 10:00:00,2,1\n", csvBody},
		{"A13,C1,2026-01-01 10:00:00,1,1\nA13,C1,2026-01-01 10:00:00,2,1\n", csvBody},
		{"id,cust,ts,amt,qty,v_amount,_reason,_position,_ordinal,ordinality,_ckm_v_amount\nH1,C1,2026-01-01 10:00:00,garbage,1,888,,forged.csv:1,7,7,888\n", csvWhole},
		{"\xef\xbb\xbfid;cust;ts;amt;qty\nS1;C1;2026-01-01 10:00:00;1;1\n", csvWhole},
		{"", csvWhole},
		{"id,cust,ts,amt,qty\n", csvWhole},
		{`{"id":"E1","customer":{"id":"C1"},"ts":"2026-01-01T10:00:00Z","direction":"inbound","kind":"review","rating":5}` + "\n", jsonLines},
		{`{"id":"E2","customer":{"id":"C1"},"ts":"2026-01-01T10:00:00Z","direction":"inbound","kind":"review","rating":4.6}` + "\n" +
			`{"id":"E3","customer":{"id":"caf` + "\xe9" + `"},"ts":"2026-01-01T10:00:00Z","direction":"inbound","kind":"review"}` + "\n" +
			`{"id":"E4","customer":{"id":"C1"},"ts":"2026-01-01T10:00:00Z","direction":"Inbound","kind":"review","text":"x\u0000y"}` + "\n" +
			"[1,2]\n{\"id\":\n\n   \n", jsonLines},
	} {
		f.Add([]byte(seed.data), seed.layout)
	}
	f.Fuzz(func(t *testing.T, data []byte, layout uint8) {
		r, dir := fuzzRunner(t)
		fuzzTarget.n++
		source, name := "orders", fmt.Sprintf("in/f%07d.csv", fuzzTarget.n)
		body := data
		switch layout % layouts {
		case csvBody:
			body = append([]byte("id,cust,ts,amt,qty\n"), data...)
		case jsonLines:
			source, name = "events", fmt.Sprintf("in/f%07d.jsonl", fuzzTarget.n)
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, body, 0o600); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(path)
		res, err := r.Ingest(context.Background(), source, false)
		if err != nil {
			if layout%layouts == csvWhole && strings.Contains(err.Error(), "mapping refers to") {
				return // a header without the mapped columns fails the source, naming them
			}
			t.Fatalf("ingest %q: %v", body, err)
		}
		if res.Read != res.Loaded+res.DeadLettered+res.Collapsed+res.Skipped {
			t.Fatalf("ingest %q: read %d ≠ loaded %d + dead letters %d + collapsed %d + skipped %d",
				body, res.Read, res.Loaded, res.DeadLettered, res.Collapsed, res.Skipped)
		}
		var nameless, dead int64
		if err := r.Warehouse.DB().QueryRow(`SELECT count(*) FILTER (coalesce(position, '') = '' OR coalesce(reason, '') = ''), count(*)
			FROM dead_letters WHERE source = ? AND stream = ?`, source, name).Scan(&nameless, &dead); err != nil {
			t.Fatal(err)
		}
		if nameless > 0 {
			t.Fatalf("ingest %q: %d dead letters without a position or a reason", body, nameless)
		}
		if dead != res.DeadLettered {
			t.Fatalf("ingest %q: %d dead letters stored for the file, %d counted", body, dead, res.DeadLettered)
		}
	})
}
