package pipelines

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
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
	// Open opens the warehouse: for writing it waits a while for another process to let go;
	// read-only it does not wait.
	Open func(ctx context.Context, readOnly bool) (*warehouse.Warehouse, error)

	// mu keeps this process's own uses of the file apart: DuckDB refuses a second open of a
	// file in one process with other settings (read-only beside read-write).
	mu        sync.Mutex
	streaming map[string]bool // sources that reported a backlog: their lag is worth refreshing
}

// Jobs are the config's scheduled pipelines.
func Jobs(cfg *config.Config) ([]scheduler.Job, error) {
	var jobs []scheduler.Job
	for _, name := range cfg.PipelineNames() {
		p := cfg.Pipelines[name]
		if p.Schedule == "" {
			continue
		}
		loc, err := cfg.ScheduleLocation(p)
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

// DayBefore is the as_of a run at the instant at scores by default: the day before it in loc,
// the last complete day (`ckm run` without --as-of, and every scheduled run).
func DayBefore(at time.Time, loc *time.Location) time.Time {
	return civilDate(at.In(loc).AddDate(0, 0, -1))
}

// Start checks that the warehouse opens (and migrates it), loads the metrics' history, and
// publishes the newest successful run if a crash kept it from being published.
func (s *Service) Start(ctx context.Context) error {
	return s.withWarehouse(ctx, false, func(w *warehouse.Warehouse) error {
		if err := s.Metrics.LoadLastSuccess(ctx, w.DB()); err != nil {
			return err
		}
		r := &Runner{Config: s.Config, Warehouse: w, Log: s.Log}
		s.recordLag(ctx, r, s.Config.SourceNames(nil)) // also learns which sources stream
		return r.RepublishIfBehind(ctx)
	})
}

// RunScheduled runs pipeline for the time at (see scheduler.Runs).
func (s *Service) RunScheduled(ctx context.Context, pipeline string, at time.Time) error {
	return s.withWarehouse(ctx, false, func(w *warehouse.Warehouse) error {
		r := &Runner{Config: s.Config, Warehouse: w, Log: s.Log, Step: s.Metrics.Stage(pipeline)}
		res, err := r.Run(ctx, Request{Pipeline: pipeline, AsOf: DayBefore(at, s.Config.Location()), Trigger: Schedule, ScheduledFor: &at})
		if errors.Is(err, scheduler.ErrAlreadyRan) {
			return err
		}
		s.Metrics.Run(pipeline, Schedule, res)
		s.recordLag(ctx, r, s.Config.SourceNames(s.Config.Pipelines[pipeline].Sources))
		return err
	})
}

// LastScheduled reads pipeline's latest scheduled time that ran to an end (see scheduler.Runs).
func (s *Service) LastScheduled(ctx context.Context, pipeline string) (last time.Time, ok bool, err error) {
	err = s.withWarehouse(ctx, false, func(w *warehouse.Warehouse) error {
		last, ok, err = LastScheduled(ctx, w.DB(), pipeline)
		return err
	})
	return last, ok, err
}

// BetweenRuns keeps the metrics current while no run goes on: the last successful run of each
// pipeline (runs by other processes, such as a backfill, count too) and the lag of streaming
// sources; with ingest it first loads what is new in those sources (each batch committed with
// its offsets, as `ckm ingest` does). It does nothing while a run holds the warehouse. Without
// ingest the warehouse is only read, and another process holding it skips a turn.
func (s *Service) BetweenRuns(ctx context.Context, ingest bool) {
	if !s.mu.TryLock() {
		return
	}
	defer s.mu.Unlock()
	var sources []string
	for _, name := range s.Config.SourceNames(nil) {
		if s.streaming[name] {
			sources = append(sources, name)
		}
	}
	err := s.open(ctx, !ingest || len(sources) == 0, func(w *warehouse.Warehouse) error {
		if err := s.Metrics.LoadLastSuccess(ctx, w.DB()); err != nil {
			s.Log.Warn("could not read the last successful runs", "error", err)
		}
		r := &Runner{Config: s.Config, Warehouse: w, Log: s.Log}
		if ingest {
			for _, name := range sources {
				sr, err := r.Ingest(ctx, name, false)
				s.Metrics.Ingested(sr)
				if err != nil && ctx.Err() == nil {
					s.Log.Error("ingest between runs failed", "source", name, "error", err)
				}
			}
		}
		s.recordLag(ctx, r, sources)
		return nil
	})
	if err != nil {
		s.Log.Debug("metrics not refreshed: warehouse busy", "error", err)
	}
}

// recordLag measures the backlog of streaming sources for the metrics.
func (s *Service) recordLag(ctx context.Context, r *Runner, sources []string) {
	for _, name := range sources {
		backlog, err := r.Backlog(ctx, name)
		if err != nil {
			s.Log.Warn("could not measure source backlog", "source", name, "error", err)
			continue
		}
		if s.streaming == nil {
			s.streaming = map[string]bool{}
		}
		s.streaming[name] = backlog != nil
		s.Metrics.Lag(name, backlog)
	}
}

// withWarehouse waits for this process's other use of the file to end, then opens it for fn.
func (s *Service) withWarehouse(ctx context.Context, readOnly bool, fn func(*warehouse.Warehouse) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.open(ctx, readOnly, fn)
}

// open opens the warehouse, runs fn and closes it; the caller holds mu.
func (s *Service) open(ctx context.Context, readOnly bool, fn func(*warehouse.Warehouse) error) error {
	w, err := s.Open(ctx, readOnly)
	if err != nil {
		return err
	}
	return errors.Join(fn(w), w.Close())
}
