package pipelines

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"time"
	"unique"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/ckm-dev/ckm/transforms/arrowutil"
	"github.com/ckm-dev/ckm/transforms/clv"
	"github.com/ckm-dev/ckm/transforms/value"
	"github.com/ckm-dev/ckm/warehouse"
)

// clvState is what the clv transform hands to value: the summary stays in DuckDB (the temp
// table customer_summary, with value's inputs); Go keeps two numbers per customer in its row
// order.
type clvState struct {
	clv, pAlive []float64 // per customer_summary row, in rowid order
}

func (r *Runner) scoreCLV(ctx context.Context, st *scoring) (outputs, error) {
	done := r.step("score clv")
	defer done()
	p := r.Config.Scoring.CLV
	unit, err := p.UnitDays()
	if err != nil {
		return nil, err
	}
	if err := r.summarizeCustomers(ctx, st); err != nil {
		return nil, err
	}
	start := time.Now()
	// The fits work on the distinct histories, weighted, in a fixed order (their sums add in
	// it). The customers are then predicted from their own summary rows: the terms that cost
	// are shared per (x, T) pair in Go, so no customer needs a history number (numbering them
	// and joining it onto a copy of the summary took 0.9 s at 1M customers).
	histories, err := st.tuples(ctx, `SELECT x, t_x, t_cal, CAST(count(*) AS DOUBLE) AS weight FROM `+customerSummary+`
		GROUP BY x, t_x, t_cal ORDER BY x, t_x, t_cal`)
	if err != nil {
		return nil, err
	}
	spend, err := st.tuples(ctx, `SELECT x, zbar, CAST(count(*) AS DOUBLE) AS weight FROM `+customerSummary+`
		WHERE x > 0 AND zbar > 0 GROUP BY x, zbar ORDER BY x, zbar`)
	if err != nil {
		return nil, err
	}
	grouped := time.Since(start)

	start = time.Now()
	st.log.Info("fitting CLV models", "histories", len(histories), "spend_tuples", len(spend))
	bgFit, bgErr := clv.FitBGNBD(histories, p.MinRepeatCustomers)
	bgUse, bgFit, err := r.usableFit(ctx, st, bgFit, bgErr)
	if err != nil {
		return nil, err
	}
	ggFit, ggErr := clv.FitGammaGamma(spend, p.MinRepeatCustomers)
	ggUse, ggFit, err := r.usableFit(ctx, st, ggFit, ggErr)
	if err != nil {
		return nil, err
	}
	st.res.CLVStats.Tuples, st.res.CLVStats.Fit = len(histories), time.Since(start)
	st.log.Debug("CLV models fitted", "summary", st.res.CLVStats.Summary.Round(time.Millisecond).String(), "histories", grouped.Round(time.Millisecond).String(),
		"fit", st.res.CLVStats.Fit.Round(time.Millisecond).String(), "bgnbd_iterations", bgFit.Iterations, "gamma_gamma_iterations", ggFit.Iterations)
	byHistory := make([]clv.Customer, len(histories))
	for i, h := range histories {
		byHistory[i] = h.Customer
	}
	scorer, err := clv.NewScorer(byHistory, bgUse.BGNBD(), ggUse.GammaGamma(), p)
	if err != nil {
		return nil, err
	}
	st.res.Fits = append(st.res.Fits, bgFit, ggFit)
	n, err := st.rowCount(ctx, customerSummary)
	if err != nil {
		return nil, err
	}
	state := &clvState{clv: make([]float64, 0, n), pAlive: make([]float64, 0, n)}
	clvRows, err := st.stageChunks(ctx, "customer_clv", clv.OutputSchema, customerSummary, "customer_id, x, t_x, t_cal, zbar",
		func(rec arrow.RecordBatch) (arrow.RecordBatch, error) {
			out, err := scorer.Score(rec, st.mem)
			if err != nil {
				return nil, err
			}
			if state.clv, err = arrowutil.Float64s(state.clv, out, "clv"); err == nil {
				state.pAlive, err = arrowutil.Float64s(state.pAlive, out, "p_alive")
			}
			if err != nil {
				out.Release()
				return nil, err
			}
			st.res.CLVStats.Customers += int(out.NumRows())
			return out, nil
		}, `INSERT INTO customer_clv (as_of, customer_id, run_id, x, t_x, t_cal, avg_value,
			p_alive, expected_purchases, expected_avg_value, clv)
			SELECT CAST(? AS DATE), customer_id, ?, x, t_x, t_cal, avg_value, p_alive, expected_purchases, expected_avg_value, clv FROM `+scored)
	if err != nil {
		return nil, err
	}
	st.clv, st.clvStaged = state, true
	outs := outputs{clvRows, fitsOutput([]clv.Fit{bgFit, ggFit})}
	if p.HoldoutEnd != "" {
		h, err := r.holdout(ctx, st, bgUse.BGNBD(), unit)
		if err != nil {
			outs.release()
			return nil, fmt.Errorf("holdout: %w", err)
		}
		outs = append(outs, h)
	}
	st.doneWithSummary(ctx, "clv")
	return outs, nil
}

// tuples reads weighted tuples (see clv.ReadTuples) from a query.
func (st *scoring) tuples(ctx context.Context, query string) ([]clv.Tuple, error) {
	batches, release, err := st.batches(ctx, query)
	if err != nil {
		return nil, err
	}
	defer release()
	return clv.ReadTuples(batches)
}

// usableFit returns the fit to score with — this run's when it converged, otherwise the
// latest converged fit of the same model from an earlier run — and the attempt as model_fits
// records it, with the reason and the fallback in its message.
func (r *Runner) usableFit(ctx context.Context, st *scoring, fit clv.Fit, fitErr error) (use, attempt clv.Fit, err error) {
	if fitErr == nil && fit.Converged {
		return fit, fit, nil
	}
	reason := fit.Message
	if fitErr != nil {
		reason = fitErr.Error()
	}
	prev, runID, asOf, err := lastGoodFit(ctx, st.conn, fit.Model)
	if err != nil {
		return fit, fit, fmt.Errorf("%s fit failed (%s); no earlier converged fit to fall back on: %w", fit.Model, reason, err)
	}
	fit.Converged = false
	fit.Message = fmt.Sprintf("%s; scored with the fit of run %s (as_of %s)", reason, runID, asOf.Format(time.DateOnly))
	st.log.Warn("CLV model did not fit; falling back to the last good fit", "model", fit.Model, "reason", reason, "fallback_run", runID)
	st.res.Warnings = append(st.res.Warnings, fit.Model+": "+fit.Message)
	return prev, fit, nil
}

// lastGoodFit reads the latest converged fit of model from model_fits.
func lastGoodFit(ctx context.Context, conn *warehouse.Conn, model string) (clv.Fit, string, time.Time, error) {
	var runID string
	var asOf time.Time
	err := conn.QueryRowContext(ctx, `SELECT run_id, as_of FROM model_fits WHERE model = ? AND converged
		ORDER BY as_of DESC, run_id DESC LIMIT 1`, model).Scan(&runID, &asOf)
	if errors.Is(err, sql.ErrNoRows) {
		return clv.Fit{}, "", time.Time{}, errors.New("model_fits holds none")
	}
	if err != nil {
		return clv.Fit{}, "", time.Time{}, err
	}
	rows, err := conn.QueryContext(ctx, `SELECT parameter, estimate FROM model_fits WHERE model = ? AND run_id = ?`, model, runID)
	if err != nil {
		return clv.Fit{}, "", time.Time{}, err
	}
	defer rows.Close()
	fit := clv.Fit{Model: model, Converged: true}
	for rows.Next() {
		var e clv.Estimate
		if err := rows.Scan(&e.Name, &e.Value); err != nil {
			return clv.Fit{}, "", time.Time{}, err
		}
		fit.Params = append(fit.Params, e)
	}
	return fit, runID, asOf, rows.Err()
}

// fitsOutput writes one model_fits row per parameter (one row naming the failure when a fit produced none).
func fitsOutput(fits []clv.Fit) output {
	return output{table: "model_fits", write: func(ctx context.Context, conn *warehouse.Conn, res *Result) (int64, error) {
		var n int64
		for _, f := range fits {
			params := f.Params
			if len(params) == 0 {
				params = []clv.Estimate{{Name: "none", Value: math.NaN(), StdError: math.NaN()}}
			}
			for _, p := range params {
				_, err := conn.ExecContext(ctx, `INSERT INTO model_fits (as_of, run_id, model, parameter, estimate, std_error,
					log_likelihood, n_customers, converged, iterations, message) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
					res.AsOf, res.RunID, f.Model, p.Name, nullable(p.Value), nullable(p.StdError), nullable(f.LogLikelihood),
					f.Customers, f.Converged, f.Iterations, nullString(f.Message))
				if err != nil {
					return n, err
				}
				n++
			}
		}
		return n, nil
	}}
}

func nullable(v float64) any {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return v
}

func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// holdout compares predicted repeat purchases over (as_of, holdout_end] with what happened.
func (r *Runner) holdout(ctx context.Context, st *scoring, bg clv.BGNBD, unit float64) (output, error) {
	end, _ := time.Parse(time.DateOnly, r.Config.Scoring.CLV.HoldoutEnd)
	z := st.zone
	batches, release, err := st.batches(ctx, `WITH actual AS (
			SELECT customer_id, count(DISTINCT `+z.LocalDate("order_ts")+`) AS n
			FROM orders WHERE status = 'completed'
			  AND order_ts >= `+z.DayStart("CAST(? AS DATE) + 1")+`
			  AND order_ts <  `+z.DayStart("CAST(? AS DATE) + 1")+`
			GROUP BY customer_id)
		SELECT s.x, s.t_x, s.t_cal, CAST(coalesce(a.n, 0) AS DOUBLE) AS weight
		FROM `+customerSummary+` s LEFT JOIN actual a USING (customer_id)
		ORDER BY s.customer_id`, st.res.AsOf, end) // the group means add in a fixed order: a rerun writes the same bits
	if err != nil {
		return output{}, err
	}
	defer release()
	rows, err := clv.ReadTuples(batches) // the weight column holds each customer's actual purchases
	if err != nil {
		return output{}, err
	}
	customers := make([]clv.Customer, len(rows))
	actual := make([]float64, len(rows))
	for i, t := range rows {
		customers[i], actual[i] = t.Customer, t.Weight
	}
	days := end.Sub(st.res.AsOf).Hours() / 24
	groups := clv.Holdout(customers, actual, bg, days/unit)
	st.res.Holdout = groups
	return output{table: "clv_holdout", write: func(ctx context.Context, conn *warehouse.Conn, res *Result) (int64, error) {
		for _, g := range groups {
			if _, err := conn.ExecContext(ctx, `INSERT INTO clv_holdout (as_of, run_id, holdout_end, frequency, customers,
				expected_mean, actual_mean, mean_abs_error) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
				res.AsOf, res.RunID, end, g.Group, g.Customers, g.Expected, g.Actual, g.MeanAbsError); err != nil {
				return 0, err
			}
		}
		return int64(len(groups)), nil
	}}, nil
}

func (r *Runner) scoreValue(ctx context.Context, st *scoring) (outputs, error) {
	done := r.step("score value")
	defer done()
	if st.clv == nil {
		return nil, errors.New("needs the clv transform in the same pipeline")
	}
	p := r.Config.Scoring.Value
	// The thresholds need every active customer's current and potential value: two numbers
	// each, in customer_summary's row order like the CLV values.
	n, err := st.rowCount(ctx, customerSummary)
	if err != nil {
		return nil, err
	}
	active, current := make([]int64, 0, n), make([]float64, 0, n)
	err = st.chunks(ctx, customerSummary, "active, current_value", func(rec arrow.RecordBatch) error {
		var err error
		if active, err = arrowutil.Int64s(active, rec, "active"); err != nil {
			return err
		}
		current, err = arrowutil.Float64s(current, rec, "current_value")
		return err
	})
	if err != nil {
		return nil, err
	}
	if len(active) != len(st.clv.clv) {
		return nil, fmt.Errorf("%d customers in %s but %d CLV values", len(active), customerSummary, len(st.clv.clv))
	}
	activeCurrent, activePotential := make([]float64, 0, n), make([]float64, 0, n)
	for i, a := range active {
		if a == 1 {
			activeCurrent = append(activeCurrent, current[i])
			activePotential = append(activePotential, st.clv.clv[i])
		}
	}
	th := value.NewThresholds(activeCurrent, activePotential, p)
	row := 0
	out, err := st.stageChunks(ctx, "customer_value", value.OutputSchema, customerSummary,
		"customer_id, current_value, active, tenure_days, purchase_days, recent_amount, before_amount",
		func(rec arrow.RecordBatch) (arrow.RecordBatch, error) {
			n := int(rec.NumRows())
			out, err := value.Score(rec, st.clv.clv[row:row+n], st.clv.pAlive[row:row+n], th, p, st.mem)
			if err != nil {
				return nil, err
			}
			row += n
			tiers, stages := out.Column(3).(*array.String), out.Column(4).(*array.String)
			for i := 0; i < tiers.Len(); i++ {
				st.res.TierStage[[2]string{unique.Make(tiers.Value(i)).Value(), unique.Make(stages.Value(i)).Value()}]++ // interned: they outlive the batch
			}
			return out, nil
		}, `INSERT INTO customer_value (as_of, customer_id, run_id, current_value,
		potential_value, value_tier, lifecycle_stage, trend)
		SELECT CAST(? AS DATE), customer_id, ?, current_value, potential_value, value_tier, lifecycle_stage, trend FROM `+scored)
	if err != nil {
		return nil, err
	}
	st.valueStaged = true
	st.doneWithSummary(ctx, "value")
	return outputs{out}, nil
}
