package pipelines

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ckm-dev/ckm/config"
	"github.com/ckm-dev/ckm/scheduler"
	"github.com/ckm-dev/ckm/warehouse"
)

// Service runs pipelines for `ckm serve` (it is the scheduler's Runs). It opens the warehouse
// for each run and closes it after: DuckDB lets one process write and keeps other processes'
// readers out meanwhile, so between runs `ckm status`, `ckm sql`, a backfill or a second
// serve can use the file.
type Service struct {
	Config  *config.Config
	Log     *slog.Logger
	Metrics *Metrics
	// Open opens the warehouse for writing, waiting a while for another process to let go.
	Open func(ctx context.Context) (*warehouse.Warehouse, error)
}

// Jobs are the config's scheduled pipelines.
func Jobs(cfg *config.Config) ([]scheduler.Job, error) {
	var jobs []scheduler.Job
	for _, name := range cfg.PipelineNames() {
		p := cfg.Pipelines[name]
		if p.Schedule == "" {
			continue
		}
		loc, err := time.LoadLocation(p.Timezone)
		if err != nil {
			return nil, fmt.Errorf("pipeline %s: %w", name, err)
		}
		s, err := scheduler.Parse(p.Schedule, loc)
		if err != nil {
			return nil, fmt.Errorf("pipeline %s: %w", name, err)
		}
		jobs = append(jobs, scheduler.Job{Pipeline: name, Schedule: s,
			Overlap: scheduler.Overlap(p.Overlap), CatchUp: scheduler.CatchUp(p.CatchUp)})
	}
	return jobs, nil
}

// ScheduledAsOf is the as_of date a scheduled time scores: the day before it, in the config's
// time zone, the last complete day (as `ckm run` defaults to).
func ScheduledAsOf(at time.Time, loc *time.Location) time.Time {
	return civilDate(at.In(loc).AddDate(0, 0, -1))
}

// Start checks that the warehouse opens (and migrates it) and loads the metrics' history.
func (s *Service) Start(ctx context.Context) error {
	return s.withWarehouse(ctx, func(w *warehouse.Warehouse) error {
		return s.Metrics.LoadLastSuccess(ctx, w.DB())
	})
}

// RunScheduled runs pipeline for the time at (see scheduler.Runs).
func (s *Service) RunScheduled(ctx context.Context, pipeline string, at time.Time) error {
	return s.withWarehouse(ctx, func(w *warehouse.Warehouse) error {
		r := &Runner{Config: s.Config, Warehouse: w, Log: s.Log, Step: s.Metrics.Stage(pipeline)}
		res, err := r.Run(ctx, Request{Pipeline: pipeline, AsOf: ScheduledAsOf(at, s.Config.Location()), Trigger: Schedule, ScheduledFor: &at})
		if errors.Is(err, scheduler.ErrAlreadyRan) {
			return err
		}
		s.Metrics.Run(pipeline, Schedule, res, err)
		s.recordLag(ctx, r, pipeline)
		return err
	})
}

// LastScheduled reads pipeline's latest scheduled time that ran to an end (see scheduler.Runs).
func (s *Service) LastScheduled(ctx context.Context, pipeline string) (last time.Time, ok bool, err error) {
	err = s.withWarehouse(ctx, func(w *warehouse.Warehouse) error {
		last, ok, err = LastScheduled(ctx, w.DB(), pipeline)
		return err
	})
	return last, ok, err
}

// recordLag measures the backlog of the pipeline's streaming sources for the metrics.
func (s *Service) recordLag(ctx context.Context, r *Runner, pipeline string) {
	for _, name := range s.Config.SourceNames(s.Config.Pipelines[pipeline].Sources) {
		backlog, err := r.Backlog(ctx, name)
		if err != nil {
			s.Log.Warn("could not measure source backlog", "source", name, "error", err)
			continue
		}
		s.Metrics.Lag(name, backlog)
	}
}

func (s *Service) withWarehouse(ctx context.Context, fn func(*warehouse.Warehouse) error) error {
	w, err := s.Open(ctx)
	if err != nil {
		return err
	}
	return errors.Join(fn(w), w.Close())
}
