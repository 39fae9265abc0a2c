package scheduler_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ckm-dev/ckm/scheduler"
	"github.com/ckm-dev/ckm/scheduler/schedulertest"
)

// recorder is a scheduler.Runs that notes each scheduled time and can hold runs until released.
type recorder struct {
	mu       sync.Mutex
	ran      map[string][]time.Time
	last     map[string]time.Time // history for catch-up
	hold     chan struct{}        // when set, each run waits for a value (or its ctx)
	active   int
	maxAlive int
	ctxErrs  []error
}

func newRecorder() *recorder {
	return &recorder{ran: map[string][]time.Time{}, last: map[string]time.Time{}}
}

func (r *recorder) RunScheduled(ctx context.Context, pipeline string, t time.Time) error {
	r.mu.Lock()
	r.active++
	r.maxAlive = max(r.maxAlive, r.active)
	r.ran[pipeline] = append(r.ran[pipeline], t)
	hold := r.hold
	r.mu.Unlock()
	var err error
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	r.mu.Lock()
	r.active--
	r.ctxErrs = append(r.ctxErrs, err)
	r.mu.Unlock()
	return err
}

func (r *recorder) LastScheduled(_ context.Context, pipeline string) (time.Time, bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.last[pipeline]
	return t, ok, nil
}

func (r *recorder) times(pipeline string) []time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]time.Time(nil), r.ran[pipeline]...)
}

// harness runs a scheduler on a fake clock.
type harness struct {
	t      *testing.T
	clock  *schedulertest.Clock
	sched  *scheduler.Scheduler
	cancel context.CancelFunc
	done   chan error
	mu     sync.Mutex
	events []scheduler.Event
}

func start(t *testing.T, now time.Time, runs scheduler.Runs, jobs ...scheduler.Job) *harness {
	return startWithGrace(t, now, 5*time.Second, runs, jobs...)
}

func startWithGrace(t *testing.T, now time.Time, grace time.Duration, runs scheduler.Runs, jobs ...scheduler.Job) *harness {
	h := &harness{t: t, clock: schedulertest.NewClock(now), done: make(chan error, 1)}
	h.sched = &scheduler.Scheduler{Jobs: jobs, Runs: runs, Clock: h.clock, Grace: grace, Events: func(e scheduler.Event) {
		h.mu.Lock()
		h.events = append(h.events, e)
		h.mu.Unlock()
	}}
	ctx, cancel := context.WithCancel(t.Context())
	h.cancel = cancel
	go func() { h.done <- h.sched.Run(ctx) }()
	t.Cleanup(func() { h.stop() })
	return h
}

func (h *harness) settle()             { schedulertest.Settle(h.t, h.clock, h.sched) }
func (h *harness) until(end time.Time) { schedulertest.Drive(h.t, h.clock, h.sched, end) }
func (h *harness) advanceTo(at time.Time) {
	schedulertest.AdvanceTo(h.t, h.clock, h.sched, at)
}

func (h *harness) stop() error {
	if h.cancel == nil {
		return nil
	}
	h.cancel()
	h.cancel = nil
	return h.stopped()
}

// stopped waits for the scheduler's Run to return once stopping was asked for.
func (h *harness) stopped() error {
	h.t.Helper()
	select {
	case err := <-h.done:
		return err
	case <-time.After(10 * time.Second):
		h.t.Fatal("scheduler did not stop")
		return nil
	}
}

func (h *harness) count(kind scheduler.EventKind) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, e := range h.events {
		if e.Kind == kind {
			n++
		}
	}
	return n
}

func job(t *testing.T, name, expr, zoneName string) scheduler.Job {
	s, err := scheduler.Parse(expr, zone(t, zoneName))
	require.NoError(t, err)
	return scheduler.Job{Pipeline: name, Schedule: s, Overlap: scheduler.OverlapSkip, CatchUp: scheduler.CatchUpNone}
}

// The loop, driven by a fake clock through both 2026 transitions in both zones, starts exactly
// one run per scheduled day and hands over the scheduled instant.
func TestLoopAcrossDSTTransitions(t *testing.T) {
	windows := []struct {
		zone       string
		special    string // local date of the transition
		specialUTC time.Time
		expr       string
	}{
		{"Europe/Berlin", "2026-03-29", utc("2026-03-29T01:00:00Z"), "30 2 * * *"},
		{"Europe/Berlin", "2026-10-25", utc("2026-10-25T00:30:00Z"), "30 2 * * *"},
		{"America/New_York", "2026-03-08", utc("2026-03-08T07:00:00Z"), "30 2 * * *"},
		{"America/New_York", "2026-11-01", utc("2026-11-01T05:30:00Z"), "30 1 * * *"},
	}
	const week = 7
	for _, w := range windows {
		t.Run(w.zone+" "+w.special, func(t *testing.T) {
			loc := zone(t, w.zone)
			special, err := time.ParseInLocation(time.DateOnly, w.special, loc)
			require.NoError(t, err)
			// From the start of the day a week before the transition to the end of the day a week after.
			from, to := special.AddDate(0, 0, -week), special.AddDate(0, 0, week+1)
			rec := newRecorder()
			h := start(t, from, rec, job(t, "nightly", w.expr, w.zone))
			h.until(to)
			require.NoError(t, h.stop())
			ran := rec.times("nightly")
			require.Len(t, ran, 2*week+1, "one run per day: %v", ran)
			days := map[string]time.Time{}
			for _, r := range ran {
				day := r.In(loc).Format(time.DateOnly)
				require.NotContains(t, days, day, "two runs on %s", day)
				days[day] = r
			}
			for d := from; d.Before(to); d = d.AddDate(0, 0, 1) {
				require.Contains(t, days, d.Format(time.DateOnly), "no run on %s", d.Format(time.DateOnly))
			}
			require.Equal(t, w.specialUTC, days[w.special].UTC())
		})
	}
}

// Overlap skip drops a time that comes while the previous run goes on; queue runs it after.
// Never two runs of one pipeline at once.
func TestOverlapPolicies(t *testing.T) {
	for _, policy := range []scheduler.Overlap{scheduler.OverlapSkip, scheduler.OverlapQueue} {
		t.Run(string(policy), func(t *testing.T) {
			rec := newRecorder()
			rec.hold = make(chan struct{})
			j := job(t, "hourly", "0 * * * *", "UTC")
			j.Overlap = policy
			h := start(t, utc("2026-06-01T00:30:00Z"), rec, j)
			h.advanceTo(utc("2026-06-01T01:00:00Z")) // the first run starts and is held
			schedulertest.WaitFor(t, func() bool { return len(rec.times("hourly")) == 1 })
			h.advanceTo(utc("2026-06-01T02:00:00Z")) // while 01:00 still runs
			h.advanceTo(utc("2026-06-01T03:00:00Z")) // while 01:00 still runs
			schedulertest.WaitFor(t, func() bool { return h.clock.Waiting() == 1 })
			close(rec.hold) // the first run ends; queued ones may go
			h.settle()
			require.NoError(t, h.stop())
			ran := rec.times("hourly")
			require.Equal(t, 1, rec.maxAlive, "never two runs at once")
			if policy == scheduler.OverlapSkip {
				require.Equal(t, []time.Time{utc("2026-06-01T01:00:00Z")}, utcs(ran))
				require.Equal(t, 2, h.count(scheduler.EventSkipped))
			} else {
				require.Equal(t, []time.Time{utc("2026-06-01T01:00:00Z"), utc("2026-06-01T02:00:00Z"), utc("2026-06-01T03:00:00Z")}, utcs(ran))
				require.Equal(t, 0, h.count(scheduler.EventSkipped))
			}
		})
	}
}

// After downtime the missed daily times run according to the policy, oldest first, then the
// schedule goes on.
func TestCatchUpPolicies(t *testing.T) {
	berlin := zone(t, "Europe/Berlin")
	last := time.Date(2026, 3, 26, 2, 30, 0, 0, berlin) // the last run before the downtime
	restart := time.Date(2026, 3, 30, 12, 0, 0, 0, berlin)
	missed := []time.Time{
		time.Date(2026, 3, 27, 2, 30, 0, 0, berlin),
		time.Date(2026, 3, 28, 2, 30, 0, 0, berlin),
		utc("2026-03-29T01:00:00Z"), // the jump
		time.Date(2026, 3, 30, 2, 30, 0, 0, berlin),
	}
	for policy, want := range map[scheduler.CatchUp][]time.Time{
		scheduler.CatchUpNone:   nil,
		scheduler.CatchUpLatest: missed[3:],
		scheduler.CatchUpAll:    missed,
	} {
		t.Run(string(policy), func(t *testing.T) {
			rec := newRecorder()
			rec.last["nightly"] = last
			j := job(t, "nightly", "30 2 * * *", "Europe/Berlin")
			j.CatchUp = policy
			h := start(t, restart, rec, j)
			h.until(time.Date(2026, 3, 31, 12, 0, 0, 0, berlin))
			require.NoError(t, h.stop())
			next := time.Date(2026, 3, 31, 2, 30, 0, 0, berlin)
			require.Equal(t, utcs(append(append([]time.Time(nil), want...), next)), utcs(rec.times("nightly")))
		})
	}
	t.Run("never ran", func(t *testing.T) {
		rec := newRecorder()
		j := job(t, "nightly", "30 2 * * *", "Europe/Berlin")
		j.CatchUp = scheduler.CatchUpAll
		h := start(t, restart, rec, j)
		h.settle()
		require.NoError(t, h.stop())
		require.Empty(t, rec.times("nightly"), "a pipeline that never ran on a schedule missed nothing")
	})
}

// Shutdown lets a run finish within the grace period, and cancels it after. The grace period
// runs on the scheduler's clock, so the test decides which comes first without racing real time.
func TestGracefulShutdown(t *testing.T) {
	const grace = 30 * time.Second // before the ticks' next minute wake-up, so Advance ends it first
	for _, finishes := range []bool{true, false} {
		rec := newRecorder()
		rec.hold = make(chan struct{})
		h := startWithGrace(t, utc("2026-06-01T00:30:00Z"), grace, rec, job(t, "hourly", "0 * * * *", "UTC"))
		h.advanceTo(utc("2026-06-01T01:00:00Z"))
		schedulertest.WaitFor(t, func() bool { return len(rec.times("hourly")) == 1 })
		h.cancel()
		h.cancel = nil
		// Shutdown has begun once the scheduler waits for the grace period to end.
		schedulertest.WaitFor(t, func() bool { return h.clock.WaitingFor(h.clock.Now().Add(grace)) })
		if finishes {
			close(rec.hold) // the run ends before the grace period does
		} else {
			h.clock.Advance() // the grace period ends with the run still going
		}
		require.NoError(t, h.stopped())
		rec.mu.Lock()
		require.Len(t, rec.ctxErrs, 1)
		if finishes {
			require.NoError(t, rec.ctxErrs[0], "finished within the grace period")
		} else {
			require.ErrorIs(t, rec.ctxErrs[0], context.Canceled, "cancelled after the grace period")
		}
		rec.mu.Unlock()
	}
}

func utcs(ts []time.Time) []time.Time {
	out := make([]time.Time, len(ts))
	for i, t := range ts {
		out[i] = t.UTC()
	}
	return out
}
