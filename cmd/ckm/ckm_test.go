package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ckm-dev/ckm/cli"
	"github.com/ckm-dev/ckm/warehouse"
)

var ckmBin string

func TestMain(m *testing.M) {
	if path := os.Getenv(snapshotReaderEnv); path != "" {
		os.Exit(readSnapshotsUntilStopped(path))
	}
	if path := os.Getenv(holderEnv); path != "" {
		os.Exit(holdWarehouseUntilStopped(path))
	}
	dir, err := os.MkdirTemp("", "ckm-bin")
	if err != nil {
		panic(err)
	}
	ckmBin = filepath.Join(dir, "ckm")
	build := exec.Command("go", "build", "-tags", "duckdb_arrow", "-o", ckmBin, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build ckm:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// ckm runs the command in-process and returns its exit code, stdout and stderr.
func ckm(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := cli.Main(args, &out, &errb)
	return code, out.String(), errb.String()
}

const crashConfig = `warehouse: {path: ckm.duckdb, threads: 2}
timezone: Europe/Berlin
sources:
  shop_orders:
    table: orders
    file: {paths: ["data/orders-*.csv"]}
    mapping: {order_id: order_id, customer_id: customer_id, order_ts: order_ts, amount: amount, status: status,
              product_launch_date: product_launch_date}
  feedback_events:
    table: feedback
    file: {paths: ["data/feedback.jsonl"]}
    mapping: {event_id: event_id, customer_id: customer.id, event_ts: ts, direction: direction, kind: kind, channel: channel,
              rating: rating, department: department, responded: responded, status: status,
              acknowledged_at: acknowledged_at, converted_at: converted_at, implemented_at: implemented_at}
pipelines:
  nightly: {transforms: [rfm, clv, value, knowledge]}
`

// splitOrders writes the generated orders as two files; the second is added later.
func splitOrders(t *testing.T, dir string) (first, second []byte) {
	data, err := os.ReadFile(filepath.Join(dir, "gen", "orders.csv"))
	require.NoError(t, err)
	lines := strings.SplitAfter(string(data), "\n")
	header, body := lines[0], lines[1:]
	half := len(body) / 2
	return []byte(header + strings.Join(body[:half], "")), []byte(header + strings.Join(body[half:], ""))
}

type outputState struct {
	hash    string // of the as_of partition of every output, run ids left out
	runID   string
	rows    int
	orders  int
	uniqIDs int
}

func readState(t *testing.T, dir, asOf string) outputState {
	// A serve process may hold the file for a run: wait for it.
	w, err := warehouse.Open(context.Background(), warehouse.Options{Path: filepath.Join(dir, "ckm.duckdb"), ReadOnly: true, LockWait: time.Minute})
	require.NoError(t, err)
	defer w.Close()
	db := w.DB()
	var s outputState
	var runIDs int
	var hash sql.NullString
	var runID sql.NullString
	// Every output of the as_of, at full precision, run ids left out.
	require.NoError(t, db.QueryRow(`WITH parts AS (
		SELECT 'rfm' AS t, customer_id AS k, run_id, concat_ws('|', recency_days, frequency, monetary::VARCHAR, rfm_cell, segment) AS v FROM customer_rfm WHERE as_of = $1
		UNION ALL SELECT 'clv', customer_id, run_id, concat_ws('|', x, t_x, t_cal, avg_value::VARCHAR, p_alive::VARCHAR, expected_purchases::VARCHAR, clv::VARCHAR) FROM customer_clv WHERE as_of = $1
		UNION ALL SELECT 'value', customer_id, run_id, concat_ws('|', current_value::VARCHAR, potential_value::VARCHAR, value_tier, lifecycle_stage) FROM customer_value WHERE as_of = $1
		UNION ALL SELECT 'fit', model || parameter, run_id, concat_ws('|', estimate::VARCHAR, std_error::VARCHAR, log_likelihood::VARCHAR) FROM model_fits WHERE as_of = $1
		UNION ALL SELECT 'knowledge', customer_id, run_id, concat_ws('|', *COLUMNS(* EXCLUDE (run_id))) FROM customer_knowledge WHERE as_of = $1
		UNION ALL SELECT 'mix', department || knowledge_type, run_id, concat_ws('|', events, customers) FROM knowledge_mix WHERE as_of = $1)
		SELECT md5(string_agg(concat_ws('|', t, k, v), ',' ORDER BY t, k)), count(*), count(DISTINCT run_id), any_value(run_id) FROM parts`, asOf).Scan(&hash, &s.rows, &runIDs, &runID))
	s.hash, s.runID = hash.String, runID.String
	require.LessOrEqual(t, runIDs, 1, "an as_of partition holds one run's result, never a mix")
	if s.rows > 0 {
		// The visible result belongs to a run recorded as succeeded, with matching row count.
		var status string
		var rowsOut int
		require.NoError(t, db.QueryRow(`SELECT status, rows_out FROM pipeline_runs WHERE run_id = ?`, s.runID).Scan(&status, &rowsOut))
		require.Equal(t, "succeeded", status)
		require.Equal(t, s.rows, rowsOut)
	}
	require.NoError(t, db.QueryRow(`SELECT count(*), count(DISTINCT order_id) FROM orders`).Scan(&s.orders, &s.uniqIDs))
	require.Equal(t, s.orders, s.uniqIDs, "no order is doubled")
	return s
}

func TestQuickstartOnShippedSample(t *testing.T) {
	t.Setenv("CKM_WAREHOUSE", filepath.Join(t.TempDir(), "ckm.duckdb"))
	cfg := filepath.Join("..", "..", "config.yaml")
	code, out, stderr := ckm("run", "--config", cfg, "--as-of", "2026-06-30")
	require.Zero(t, code, stderr)
	require.Contains(t, out, "succeeded")
	require.Contains(t, out, "customers scored:")
	require.Contains(t, out, "Champions")
	require.Contains(t, out, "key knowledge sources:")
	require.Regexp(t, `(?m)^1 +C\d{7} +0\.\d{3} +key_source`, out, "the top key sources are listed with their rank")

	code, out, stderr = ckm("sql", "--config", cfg, "--format", "csv",
		"SELECT (SELECT count(*) FROM customers) > 0 AND (SELECT count(*) FROM orders) > 0 AND (SELECT count(*) FROM feedback) > 0 AND (SELECT count(*) FROM customer_rfm) > 0 AS all_loaded, (SELECT status FROM pipeline_runs) AS status")
	require.Zero(t, code, stderr)
	require.Equal(t, "all_loaded,status\ntrue,succeeded\n", out)

	// Loading the same files twice adds nothing.
	code, out, stderr = ckm("run", "--config", cfg, "--as-of", "2026-06-30")
	require.Zero(t, code, stderr)
	require.Regexp(t, `shop_orders\s+orders\s+0\s+0\s+0`, out)

	code, out, _ = ckm("status", "--config", cfg)
	require.Zero(t, code)
	require.Equal(t, 2, strings.Count(out, "succeeded"))

	code, _, stderr = ckm("sql", "--config", cfg, "DELETE FROM orders")
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "read-only")
	require.Equal(t, 1, strings.Count(stderr, "\n"), "one clear line")
}

func TestFailuresExitNonZeroWithOneClearLine(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "config.yaml")
	require.NoError(t, os.WriteFile(bad, []byte("sources:\n  s:\n    table: orders\n    file: {paths: [nothing-here.csv]}\n    mapping: {order_id: a}\n"), 0o644))
	code, _, stderr := ckm("validate", "--config", bad)
	require.Equal(t, 78, code, "an invalid config has its own exit code, apart from Go's 2 for a crash")
	require.Contains(t, stderr, "config.yaml:4: sources.s.file.paths: no file matches")
	require.Contains(t, stderr, "required column customer_id is not mapped")

	code, _, stderr = ckm("run", "--config", filepath.Join(dir, "absent.yaml"))
	require.Equal(t, 1, code)
	require.Equal(t, 1, strings.Count(stderr, "\n"))
	require.Contains(t, stderr, "absent.yaml")
	// A name in the error holding an escape sequence or a line break is written escaped: the
	// terminal would obey it.
	code, _, stderr = ckm("run", "--config", filepath.Join(dir, "a\x1b[2J\nb.yaml"))
	require.Equal(t, 1, code)
	require.Equal(t, 1, strings.Count(stderr, "\n"))
	require.Contains(t, stderr, `a\x1b[2J b.yaml`)
	require.NotContains(t, stderr, "\x1b")

	code, _, stderr = ckm("run", "--config", filepath.Join("..", "..", "config.yaml"), "--as-of", "30/06/2026")
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "want a date as YYYY-MM-DD")
	code, _, stderr = ckm("run", "--config", filepath.Join("..", "..", "config.yaml"), "--as-of", "2026-06-31")
	require.Equal(t, 1, code)
	require.Equal(t, "ckm: --as-of 2026-06-31: not a calendar date\n", stderr)
	code, _, stderr = ckm("ingest", "--config", filepath.Join("..", "..", "config.yaml"), "--reload")
	require.Equal(t, 1, code)
	require.Equal(t, "ckm: --reload needs the sources to read again: --source S\n", stderr)
	code, _, stderr = ckm("ingest", "--config", filepath.Join("..", "..", "config.yaml"), "--restart", "orders/0")
	require.Equal(t, 1, code)
	require.Equal(t, "ckm: --restart names streams of one source: --source S\n", stderr)
}

func TestGenerateIsDeterministic(t *testing.T) {
	digest := func(seed string) string {
		dir := t.TempDir()
		code, _, stderr := ckm("generate", "--customers", "300", "--seed", seed, "--out", dir)
		require.Zero(t, code, stderr)
		h := sha256.New()
		for _, f := range []string{"customers.csv", "orders.csv", "feedback.jsonl", "truth.csv"} {
			b, err := os.ReadFile(filepath.Join(dir, f))
			require.NoError(t, err)
			h.Write(b)
		}
		return fmt.Sprintf("%x", h.Sum(nil))
	}
	require.Equal(t, digest("9"), digest("9"))
	require.NotEqual(t, digest("9"), digest("10"))
}
