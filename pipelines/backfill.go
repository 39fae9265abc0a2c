package pipelines

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// BackfillStep is told about each date of a backfill as it ends.
type BackfillStep struct {
	AsOf          time.Time
	Index, Total  int
	Skipped       bool   // already succeeded before, and not forced
	PreviousRunID string // the earlier successful run, when skipped
	Result        *Result
	Elapsed       time.Duration
}

// Backfill runs pipeline for every as_of from..to (inclusive) in order. Each run replaces its
// as_of partition, so a backfill can be repeated; dates that already succeeded are skipped
// unless force, so an interrupted backfill resumes where it stopped.
func (r *Runner) Backfill(ctx context.Context, pipeline string, from, to time.Time, force, allowFuture bool, progress func(BackfillStep)) error {
	from, to = civilDate(from), civilDate(to)
	if to.Before(from) {
		return fmt.Errorf("backfill %s: --to %s is before --from %s", pipeline, to.Format(time.DateOnly), from.Format(time.DateOnly))
	}
	if err := r.checkAsOf(to, allowFuture); err != nil {
		return fmt.Errorf("backfill %s: %w", pipeline, err)
	}
	total := int(to.Sub(from).Hours()/24) + 1
	i := 0
	for d := from; !d.After(to); d = d.AddDate(0, 0, 1) {
		i++
		step := BackfillStep{AsOf: d, Index: i, Total: total}
		if !force {
			prev, err := r.succeededRun(ctx, pipeline, d)
			if err != nil {
				return err
			}
			if prev != "" {
				step.Skipped, step.PreviousRunID = true, prev
				progress(step)
				continue
			}
		}
		start := time.Now()
		res, err := r.Run(ctx, Request{Pipeline: pipeline, AsOf: d, Trigger: Backfill, AllowFuture: allowFuture})
		if err != nil {
			return fmt.Errorf("backfill %s stopped at as_of %s (%d of %d; earlier dates are done, rerun to resume): %w",
				pipeline, d.Format(time.DateOnly), i, total, err)
		}
		step.Result, step.Elapsed = res, time.Since(start)
		progress(step)
	}
	return nil
}

// succeededRun is the latest successful run of pipeline for asOf, or "" if there is none.
func (r *Runner) succeededRun(ctx context.Context, pipeline string, asOf time.Time) (string, error) {
	var id string
	err := r.Warehouse.DB().QueryRowContext(ctx, `SELECT run_id FROM pipeline_runs WHERE pipeline = ? AND as_of = ?
		AND status = 'succeeded' ORDER BY finished_at DESC LIMIT 1`, pipeline, asOf).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read runs of %s for %s: %w", pipeline, asOf.Format(time.DateOnly), err)
	}
	return id, nil
}
