// Package conformance is the test suite every connector must pass, in the spirit of Conduit's
// acceptance tests: records are delivered, a restart resumes from the checkpoint, redelivered
// records are absorbed by the canonical key, and bad records land in dead_letters while good
// ones load. It drives a real warehouse file through the public pipeline runner.
package conformance

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ckm-dev/ckm/internal/testutil"
	"github.com/ckm-dev/ckm/pipelines"
)

// Order is one test record, written by the harness in its connector's own format.
type Order struct {
	ID       string
	Customer string
	TS       time.Time
	Amount   float64
}

// Harness adapts one connector kind to the suite.
type Harness interface {
	// Setup prepares an empty medium (a directory, a topic) for one test.
	Setup(t *testing.T, dir string)
	// SourceYAML is the source's connector block and mapping, indented under `sources.orders:`,
	// mapping fields order_id, customer_id, order_ts, amount onto table orders.
	SourceYAML() string
	// Append delivers records as new data in the medium.
	Append(t *testing.T, orders []Order)
	// AppendBad delivers n malformed records (unparseable, wrong types or missing keys).
	AppendBad(t *testing.T, n int)
}

// Run runs the suite against a harness.
func Run(t *testing.T, newHarness func() Harness) {
	t.Run("delivers every record", func(t *testing.T) {
		s := start(t, newHarness())
		s.h.Append(t, orders(0, 500))
		res := s.run(t)
		require.EqualValues(t, 500, res.Read)
		require.EqualValues(t, 500, res.Loaded)
		s.requireOrders(t, 0, 500)
	})
	t.Run("resumes from its checkpoint", func(t *testing.T) {
		s := start(t, newHarness())
		s.h.Append(t, orders(0, 300))
		s.run(t)
		again := s.run(t)
		require.EqualValues(t, 0, again.Read, "a rerun with nothing new reads nothing")
		s.h.Append(t, orders(300, 450))
		next := s.run(t)
		require.EqualValues(t, 150, next.Read, "only the new records are read")
		s.requireOrders(t, 0, 450)
	})
	t.Run("absorbs redelivered records", func(t *testing.T) {
		s := start(t, newHarness())
		s.h.Append(t, orders(0, 200))
		s.run(t)
		redelivered := orders(100, 250)
		for i := range redelivered {
			redelivered[i].Amount += 1000 // a correction: the newest delivery wins
		}
		s.h.Append(t, redelivered)
		s.run(t)
		var n, corrected int
		require.NoError(t, s.db().QueryRow(`SELECT count(*), count(*) FILTER (amount >= 1000) FROM orders`).Scan(&n, &corrected))
		require.Equal(t, 250, n, "each order_id once")
		require.Equal(t, 150, corrected, "redelivered records replace the earlier version")
	})
	t.Run("dead-letters bad records and loads the good", func(t *testing.T) {
		s := start(t, newHarness())
		s.h.Append(t, orders(0, 400))
		s.h.AppendBad(t, 7)
		res := s.run(t)
		require.EqualValues(t, 400, res.Loaded)
		require.EqualValues(t, 7, res.DeadLettered)
		s.requireOrders(t, 0, 400)
		rows, err := s.db().Query(`SELECT source, position, reason FROM dead_letters ORDER BY position`)
		require.NoError(t, err)
		defer rows.Close()
		n := 0
		for rows.Next() {
			var src, pos, reason string
			require.NoError(t, rows.Scan(&src, &pos, &reason))
			require.Equal(t, "orders", src)
			require.NotEmpty(t, pos, "a dead letter names where the record was")
			require.NotEmpty(t, reason, "a dead letter says why")
			n++
		}
		require.Equal(t, 7, n)
	})
	t.Run("fails the run past max_bad_ratio and loads nothing of that batch", func(t *testing.T) {
		s := start(t, newHarness())
		s.h.AppendBad(t, 5)
		s.h.Append(t, orders(0, 5))
		_, err := s.runErr(t)
		require.Error(t, err)
		require.Contains(t, err.Error(), "max_bad_ratio")
		var n int
		require.NoError(t, s.db().QueryRow(`SELECT count(*) FROM orders`).Scan(&n))
		require.LessOrEqual(t, n, 5, "records of a rejected batch are not half-loaded")
	})
}

type suite struct {
	h   Harness
	dir string
	env *testutil.Env
}

func start(t *testing.T, h Harness) *suite {
	dir := t.TempDir()
	h.Setup(t, dir)
	yaml := fmt.Sprintf("warehouse: {path: ckm.duckdb, threads: 2}\ntimezone: UTC\nmax_bad_ratio: 0.1\nsources:\n  orders:\n%s\npipelines:\n  p: {transforms: [rfm]}\n", h.SourceYAML())
	return &suite{h: h, dir: dir, env: testutil.OpenYAML(t, dir, yaml)}
}

func (s *suite) db() *sql.DB { return s.env.Warehouse.DB() }

func (s *suite) runErr(t *testing.T) (pipelines.SourceResult, error) {
	res, err := s.env.Runner().Run(context.Background(), pipelines.Request{Pipeline: "p", AsOf: time.Date(2026, 1, 31, 0, 0, 0, 0, time.UTC)})
	if res == nil || len(res.Sources) == 0 {
		return pipelines.SourceResult{}, err
	}
	return res.Sources[0], err
}

func (s *suite) run(t *testing.T) pipelines.SourceResult {
	res, err := s.runErr(t)
	require.NoError(t, err)
	return res
}

// requireOrders checks the orders table holds exactly orders(from, to), each once, with its amount.
func (s *suite) requireOrders(t *testing.T, from, to int) {
	want := orders(from, to)
	var n, distinct int
	var total float64
	require.NoError(t, s.db().QueryRow(`SELECT count(*), count(DISTINCT order_id), coalesce(sum(amount), 0) FROM orders`).Scan(&n, &distinct, &total))
	require.Equal(t, len(want), n)
	require.Equal(t, len(want), distinct)
	var wantTotal float64
	for _, o := range want {
		wantTotal += o.Amount
	}
	require.InDelta(t, wantTotal, total, 1e-6)
	var id, customer string
	var ts time.Time
	var amount float64
	first := want[0]
	require.NoError(t, s.db().QueryRow(`SELECT order_id, customer_id, order_ts, amount FROM orders WHERE order_id = ?`, first.ID).Scan(&id, &customer, &ts, &amount))
	require.Equal(t, first.Customer, customer)
	require.True(t, first.TS.Equal(ts), "order_ts %s, want %s", ts, first.TS)
	require.InDelta(t, first.Amount, amount, 1e-9)
}

// orders are deterministic test records with ids from..to-1 over January 2026.
func orders(from, to int) []Order {
	out := make([]Order, 0, to-from)
	for i := from; i < to; i++ {
		out = append(out, Order{
			ID:       fmt.Sprintf("O%06d", i),
			Customer: fmt.Sprintf("C%04d", i%97),
			TS:       time.Date(2026, 1, 1+i%30, i%24, i%60, 0, 0, time.UTC),
			Amount:   float64(1+i%50) + 0.25,
		})
	}
	return out
}
