package pipelines_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ckm-dev/ckm/generate"
	"github.com/ckm-dev/ckm/internal/testutil"
	"github.com/ckm-dev/ckm/pipelines"
)

type fitRow struct {
	estimate, stdError, ll float64
	converged              bool
}

func modelFits(t *testing.T, env *testutil.Env, asOf string) map[string]fitRow {
	rows, err := env.Warehouse.DB().Query(`SELECT model || '.' || parameter, coalesce(estimate, 'NaN'), coalesce(std_error, 'NaN'),
		coalesce(log_likelihood, 'NaN'), converged FROM model_fits WHERE as_of = CAST(? AS DATE)`, asOf)
	require.NoError(t, err)
	defer rows.Close()
	out := map[string]fitRow{}
	for rows.Next() {
		var k string
		var r fitRow
		require.NoError(t, rows.Scan(&k, &r.estimate, &r.stdError, &r.ll, &r.converged))
		out[k] = r
	}
	require.NoError(t, rows.Err())
	return out
}

func TestCDNOWExampleReproducesPublishedFits(t *testing.T) {
	env := testutil.Open(t, filepath.Join(testutil.RepoRoot(), "examples", "cdnow", "config.yaml"))
	env.Run(t, "cdnow", "1997-09-30")
	fits := modelFits(t, env, "1997-09-30")
	for param, want := range map[string]float64{
		"bgnbd.r": 0.2425945, "bgnbd.alpha": 4.4136019, "bgnbd.a": 0.7929199, "bgnbd.b": 2.4258881,
		"gamma_gamma.p": 6.2496, "gamma_gamma.q": 3.7442, "gamma_gamma.gamma": 15.4435,
	} {
		got, ok := fits[param]
		require.True(t, ok, param)
		require.True(t, got.converged, param)
		require.InDelta(t, want, got.estimate, 0.005*want, "%s within 0.5%% of the published MLE", param)
	}
	require.InDelta(t, -9582.43, fits["bgnbd.r"].ll, 0.05)
	require.InDelta(t, -4055.92, fits["gamma_gamma.p"].ll, 0.05)

	// Every customer's calibration summary equals the published one (rounded there to 2 decimals).
	summary := filepath.Join(testutil.RepoRoot(), "examples", "cdnow", "cdnow_customers_summary_with_transactions.csv")
	var customers, mismatched int
	require.NoError(t, env.Warehouse.DB().QueryRow(`SELECT count(*), count(*) FILTER (
			c.customer_id IS NULL OR p.ID IS NULL OR c.x <> p.x OR abs(c.t_x - p.t_x) > 0.006
			OR abs(c.t_cal - p.T) > 0.006 OR abs(c.avg_value - p.zbar) > 0.006)
		FROM (SELECT * FROM customer_clv WHERE as_of = DATE '1997-09-30') c
		FULL JOIN read_csv(?) p ON c.customer_id = CAST(p.ID AS VARCHAR)`, summary).Scan(&customers, &mismatched))
	require.Equal(t, 2357, customers)
	require.Zero(t, mismatched)

	// Calibration quality for BI: predicted vs actual repeat purchases over the 39-week holdout.
	var groups int
	var expected, actual, mae float64
	require.NoError(t, env.Warehouse.DB().QueryRow(`SELECT (SELECT count(*) FROM clv_holdout), expected_mean, actual_mean, mean_abs_error
		FROM clv_holdout WHERE frequency = 'all'`).Scan(&groups, &expected, &actual, &mae))
	require.Equal(t, 9, groups, "frequencies 0..6, 7+ and all")
	require.InDelta(t, actual, expected, 0.15*actual, "BG/NBD's known slight under-prediction on CDNOW, not a miss")
	require.Greater(t, mae, 0.0)
}

// The fit recovers the parameters ckm generate drew the data from, within 3 standard errors.
func TestFitRecoversGeneratorTruth(t *testing.T) {
	dir := t.TempDir()
	p := generate.Defaults().ExactBGNBD()
	p.Customers, p.Seed = 100_000, 11
	_, err := generate.Write(filepath.Join(dir, "data"), p)
	require.NoError(t, err)
	cfg := `warehouse: {path: ckm.duckdb}
timezone: Europe/Berlin
sources:
  orders:
    table: orders
    file: {paths: [data/orders.csv]}
    mapping: {order_id: order_id, customer_id: customer_id, order_ts: order_ts, amount: amount, status: status}
pipelines:
  p: {transforms: [clv]}
`
	require.NoError(t, os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(cfg), 0o644))
	env := testutil.Open(t, filepath.Join(dir, "config.yaml"))
	env.Run(t, "p", p.End.Format(time.DateOnly))
	fits := modelFits(t, env, p.End.Format(time.DateOnly))
	truth := map[string]float64{"bgnbd.r": p.R, "bgnbd.alpha": p.Alpha, "bgnbd.a": p.A, "bgnbd.b": p.B,
		"gamma_gamma.p": p.P, "gamma_gamma.q": p.Q, "gamma_gamma.gamma": p.Gamma}
	for name, want := range truth {
		got := fits[name]
		require.True(t, got.converged, name)
		require.False(t, math.IsNaN(got.stdError), name)
		t.Logf("%-18s true %8.4f  fitted %8.4f ± %.4f  (%+.1f SE)", name, want, got.estimate, got.stdError, (got.estimate-want)/got.stdError)
		require.InDelta(t, want, got.estimate, 3*got.stdError, "%s: fitted %g ± %g, true %g", name, got.estimate, got.stdError, want)
	}
}

func TestFailedFitFallsBackToLastGoodFit(t *testing.T) {
	env := testutil.Open(t, filepath.Join(testutil.RepoRoot(), "config.yaml"))
	// Two weeks into the data nobody has repeat purchases yet: nothing to fit and nothing to fall back on.
	r := &pipelines.Runner{Config: env.Config, Warehouse: env.Warehouse, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	_, err := r.Run(context.Background(), pipelines.Request{Pipeline: "nightly", AsOf: time.Date(2024, 1, 14, 0, 0, 0, 0, time.UTC)})
	require.ErrorContains(t, err, "no earlier converged fit to fall back on")
	require.ErrorContains(t, err, "customers with repeat purchases, at least 20 needed")

	good := env.Run(t, "nightly", "2026-06-30")
	require.Empty(t, good.Warnings)
	early := env.Run(t, "nightly", "2024-01-14")
	require.NotEmpty(t, early.Warnings)
	fits := modelFits(t, env, "2024-01-14")
	require.False(t, fits["bgnbd.none"].converged)
	var msg string
	require.NoError(t, env.Warehouse.DB().QueryRow(`SELECT message FROM model_fits WHERE as_of = DATE '2024-01-14' AND model = 'bgnbd'`).Scan(&msg))
	require.Contains(t, msg, fmt.Sprintf("scored with the fit of run %s (as_of 2026-06-30)", good.RunID))
	// The early customers were scored with the June fit's parameters.
	var scored int
	require.NoError(t, env.Warehouse.DB().QueryRow(`SELECT count(*) FROM customer_clv WHERE as_of = DATE '2024-01-14' AND clv > 0`).Scan(&scored))
	require.Greater(t, scored, 10)
}
