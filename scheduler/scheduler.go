package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Overlap says what happens when a pipeline's time comes while its previous run is still going.
type Overlap string

const (
	OverlapSkip  Overlap = "skip"  // the new time is dropped (and counted)
	OverlapQueue Overlap = "queue" // the new time runs when the previous run ends
)

// CatchUp says which scheduled times missed while ckm was down run when it starts again.
type CatchUp string

const (
	CatchUpNone   CatchUp = "none"   // none; the schedule resumes from now
	CatchUpLatest CatchUp = "latest" // only the most recent missed time
	CatchUpAll    CatchUp = "all"    // every missed time, oldest first
)

// Job is one scheduled pipeline.
type Job struct {
	Pipeline string
	Schedule *Schedule
	Overlap  Overlap
	CatchUp  CatchUp
}

// ErrAlreadyRan is returned by Runs.RunScheduled when the warehouse shows that the scheduled
// time has already run, e.g. in another ckm serve on the same warehouse.
var ErrAlreadyRan = errors.New("scheduled time already ran")

// Runs is what the scheduler needs from the pipelines: running one scheduled time, and the
// history that catch-up is decided from.
type Runs interface {
	// RunScheduled runs pipeline for the time scheduledFor. It must refuse (ErrAlreadyRan) a
	// time that has already run, so two schedulers on one warehouse never run a time twice.
	RunScheduled(ctx context.Context, pipeline string, scheduledFor time.Time) error
	// LastScheduled is the latest scheduled time of pipeline that needs no catch-up (it ran to
	// an end, successful or not). Runs cut short by a crash or shutdown do not count, so they
	// are caught up. ok is false when the pipeline has never run on a schedule.
	LastScheduled(ctx context.Context, pipeline string) (last time.Time, ok bool, err error)
}

// Scheduler starts each job's runs at its scheduled times, one run at a time: runs of different
// pipelines share the warehouse's sources, so they queue behind each other.
type Scheduler struct {
	Jobs  []Job
	Runs  Runs
	Clock Clock
	Log   *slog.Logger
	// Grace is how long a run in progress may go on after shutdown is asked for before it is
	// cancelled (and rolls back).
	Grace time.Duration
	// Events, when set, hears what the scheduler decides (for metrics).
	Events func(Event)

	mu    sync.Mutex
	state map[string]*jobState
	queue []due
	wake  chan struct{}
}

// Event is one decision of the scheduler.
type Event struct {
	Pipeline     string
	Kind         EventKind
	ScheduledFor time.Time
	Next         time.Time // for EventPlanned: the next time the job is due
	Err          error     // for EventFinished
}

// EventKind names a scheduler decision.
type EventKind string

const (
	EventPlanned    EventKind = "planned"     // the job's next time is known
	EventSkipped    EventKind = "skipped"     // overlap policy skip dropped a time
	EventQueued     EventKind = "queued"      // a time waits for the worker
	EventStarted    EventKind = "started"     // a run began
	EventFinished   EventKind = "finished"    // a run ended (Err says how)
	EventAlreadyRan EventKind = "already_ran" // another scheduler ran this time
)

type due struct {
	pipeline     string
	scheduledFor time.Time
	catchUp      bool
}

type jobState struct {
	queued, running int
	next            time.Time
}

// Status is what the scheduler is doing for one pipeline.
type Status struct {
	Pipeline string
	Next     time.Time
	Queued   int
	Running  bool
}

// Status reports each job's state, in job order.
func (s *Scheduler) Status() []Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Status, 0, len(s.Jobs))
	for _, j := range s.Jobs {
		st := s.state[j.Pipeline]
		if st == nil {
			out = append(out, Status{Pipeline: j.Pipeline})
			continue
		}
		out = append(out, Status{Pipeline: j.Pipeline, Next: st.next, Queued: st.queued, Running: st.running > 0})
	}
	return out
}

// Run schedules until ctx ends, then lets a run in progress finish within Grace (cancelling it
// after that) and returns. Times still queued are left to the next start's catch-up.
func (s *Scheduler) Run(ctx context.Context) error {
	if s.Clock == nil {
		s.Clock = RealClock{}
	}
	if s.Log == nil {
		s.Log = slog.New(slog.DiscardHandler)
	}
	s.mu.Lock()
	s.state = map[string]*jobState{}
	for _, j := range s.Jobs {
		s.state[j.Pipeline] = &jobState{}
	}
	s.wake = make(chan struct{}, 1)
	s.mu.Unlock()

	now := s.Clock.Now()
	for _, j := range s.Jobs {
		missed, err := s.missed(ctx, j, now)
		if err != nil {
			return err
		}
		for _, t := range missed {
			s.enqueue(j, t, true)
		}
	}

	// Runs get their own context: shutdown gives them Grace before cancelling it.
	runCtx, cancelRuns := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelRuns()
	var workers sync.WaitGroup
	workers.Go(func() { s.work(ctx, runCtx) })
	var timers sync.WaitGroup
	for _, j := range s.Jobs {
		timers.Go(func() { s.tick(ctx, j, now) })
	}
	<-ctx.Done()
	timers.Wait()

	finished := make(chan struct{})
	go func() { workers.Wait(); close(finished) }()
	if s.busy() {
		s.Log.Info("shutting down: waiting for the run in progress", "grace", s.Grace.String())
	}
	select {
	case <-finished:
	case <-s.Clock.After(s.Grace):
		s.Log.Warn("grace period over: cancelling the run in progress; it rolls back")
		cancelRuns()
		<-finished
	}
	return nil
}

// missed lists the times of j to catch up at start, from the run history.
func (s *Scheduler) missed(ctx context.Context, j Job, now time.Time) ([]time.Time, error) {
	if j.CatchUp == CatchUpNone || j.CatchUp == "" {
		return nil, nil
	}
	last, ok, err := s.Runs.LastScheduled(ctx, j.Pipeline)
	if err != nil {
		return nil, fmt.Errorf("catch-up for pipeline %s: %w", j.Pipeline, err)
	}
	if !ok {
		return nil, nil // never ran on a schedule: nothing was missed
	}
	missed := j.Schedule.Between(last, now)
	if j.CatchUp == CatchUpLatest && len(missed) > 1 {
		missed = missed[len(missed)-1:]
	}
	if len(missed) > 0 {
		s.Log.Info("catching up missed scheduled runs", "pipeline", j.Pipeline, "policy", string(j.CatchUp),
			"missed", len(missed), "first", missed[0].UTC(), "last", missed[len(missed)-1].UTC())
	}
	return missed, nil
}

// tick waits for each of j's times after start and hands it to the worker.
func (s *Scheduler) tick(ctx context.Context, j Job, start time.Time) {
	next := j.Schedule.Next(start)
	for !next.IsZero() {
		s.mu.Lock()
		s.state[j.Pipeline].next = next
		s.mu.Unlock()
		s.emit(Event{Pipeline: j.Pipeline, Kind: EventPlanned, Next: next})
		if !s.sleepUntil(ctx, next) {
			return
		}
		s.fire(j, next)
		next = j.Schedule.Next(next)
	}
	s.Log.Warn("schedule has no further times", "pipeline", j.Pipeline, "schedule", j.Schedule.String())
}

// sleepUntil waits for the clock to reach t, waking at least every minute so a wall clock set
// forward or back (NTP, suspend) is noticed. It reports false when ctx ended first.
func (s *Scheduler) sleepUntil(ctx context.Context, t time.Time) bool {
	for {
		wait := t.Sub(s.Clock.Now())
		if wait <= 0 {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-s.Clock.After(min(wait, time.Minute)):
		}
	}
}

// fire applies the overlap policy to a time that has come.
func (s *Scheduler) fire(j Job, t time.Time) {
	s.mu.Lock()
	st := s.state[j.Pipeline]
	busy := st.running+st.queued > 0
	s.mu.Unlock()
	if busy && j.Overlap != OverlapQueue {
		s.Log.Warn("skipping scheduled run: the previous run has not finished", "pipeline", j.Pipeline,
			"scheduled_for", t.UTC(), "overlap", string(OverlapSkip))
		s.emit(Event{Pipeline: j.Pipeline, Kind: EventSkipped, ScheduledFor: t})
		return
	}
	s.enqueue(j, t, false)
}

func (s *Scheduler) enqueue(j Job, t time.Time, catchUp bool) {
	s.mu.Lock()
	s.state[j.Pipeline].queued++
	s.queue = append(s.queue, due{pipeline: j.Pipeline, scheduledFor: t, catchUp: catchUp})
	s.mu.Unlock()
	s.emit(Event{Pipeline: j.Pipeline, Kind: EventQueued, ScheduledFor: t})
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// busy reports whether a run is in progress.
func (s *Scheduler) busy() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range s.state {
		if st.running > 0 {
			return true
		}
	}
	return false
}

// work runs queued times one at a time until stop ends.
func (s *Scheduler) work(stop, runCtx context.Context) {
	for {
		s.mu.Lock()
		if len(s.queue) == 0 {
			s.mu.Unlock()
			select {
			case <-stop.Done():
				return
			case <-s.wake:
				continue
			}
		}
		if stop.Err() != nil {
			s.mu.Unlock()
			return
		}
		d := s.queue[0]
		s.queue = s.queue[1:]
		st := s.state[d.pipeline]
		st.queued--
		st.running++
		s.mu.Unlock()

		s.execute(runCtx, d)

		s.mu.Lock()
		st.running--
		s.mu.Unlock()
	}
}

func (s *Scheduler) execute(ctx context.Context, d due) {
	log := s.Log.With("pipeline", d.pipeline, "scheduled_for", d.scheduledFor.UTC())
	s.emit(Event{Pipeline: d.pipeline, Kind: EventStarted, ScheduledFor: d.scheduledFor})
	log.Info("scheduled run starting", "catch_up", d.catchUp)
	err := s.Runs.RunScheduled(ctx, d.pipeline, d.scheduledFor)
	switch {
	case errors.Is(err, ErrAlreadyRan):
		log.Info("scheduled time already ran (another ckm serve on this warehouse?): not running it again")
		s.emit(Event{Pipeline: d.pipeline, Kind: EventAlreadyRan, ScheduledFor: d.scheduledFor})
		return
	case err != nil:
		log.Error("scheduled run failed", "error", err)
	}
	s.emit(Event{Pipeline: d.pipeline, Kind: EventFinished, ScheduledFor: d.scheduledFor, Err: err})
}

func (s *Scheduler) emit(e Event) {
	if s.Events != nil {
		s.Events(e)
	}
}
