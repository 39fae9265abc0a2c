package scheduler

import (
	"context"
	"runtime"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// fakeClock moves only when the test advances it to the next waiter's time.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []waiter
}

type waiter struct {
	at time.Time
	ch chan time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.waiters = append(c.waiters, waiter{c.now.Add(d), ch})
	return ch
}

// advance moves the clock to the earliest waiter's time and wakes every waiter due by then.
func (c *fakeClock) advance() {
	c.mu.Lock()
	defer c.mu.Unlock()
	sort.Slice(c.waiters, func(i, j int) bool { return c.waiters[i].at.Before(c.waiters[j].at) })
	c.now = c.waiters[0].at
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if w.at.After(c.now) {
			kept = append(kept, w)
			continue
		}
		w.ch <- c.now
	}
	c.waiters = kept
}

func (c *fakeClock) waiting() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.waiters)
}

// recorder is a Runs that notes each scheduled time and can hold runs until released.
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
	clock  *fakeClock
	sched  *Scheduler
	cancel context.CancelFunc
	done   chan error
	mu     sync.Mutex
	events []Event
}

func start(t *testing.T, now time.Time, runs Runs, jobs ...Job) *harness {
	h := &harness{t: t, clock: &fakeClock{now: now}, done: make(chan error, 1)}
	h.sched = &Scheduler{Jobs: jobs, Runs: runs, Clock: h.clock, Grace: 5 * time.Second, Events: func(e Event) {
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

// waitFor polls cond without sleeping: a week of minute-by-minute clock steps must stay fast.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		runtime.Gosched()
	}
}

// advanceTo steps the clock until it reaches at; runs are not waited for.
func (h *harness) advanceTo(at time.Time) {
	for h.clock.Now().Before(at) {
		waitFor(h.t, func() bool { return h.clock.waiting() >= len(h.sched.Jobs) })
		h.clock.advance()
	}
}

// settle waits until every job waits on the clock and no run is queued or in progress.
func (h *harness) settle() {
	waitFor(h.t, func() bool {
		if h.clock.waiting() < len(h.sched.Jobs) {
			return false
		}
		for _, s := range h.sched.Status() {
			if s.Queued > 0 || s.Running {
				return false
			}
		}
		return true
	})
}

// until advances the clock waiter by waiter until it reaches end, letting runs finish between.
func (h *harness) until(end time.Time) {
	for h.settle(); h.clock.Now().Before(end); h.settle() {
		h.clock.advance()
	}
}

func (h *harness) stop() error {
	if h.cancel == nil {
		return nil
	}
	h.cancel()
	h.cancel = nil
	select {
	case err := <-h.done:
		return err
	case <-time.After(10 * time.Second):
		h.t.Fatal("scheduler did not stop")
		return nil
	}
}

func (h *harness) count(kind EventKind) int {
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

func job(t *testing.T, name, expr, zoneName string) Job {
	s, err := Parse(expr, zone(t, zoneName))
	require.NoError(t, err)
	return Job{Pipeline: name, Schedule: s, Overlap: OverlapSkip, CatchUp: CatchUpNone}
}

// The loop, driven by a fake clock through both 2026 transitions in both zones, starts exactly
// one run per scheduled day and hands over the scheduled instant.
func TestLoopAcrossDSTTransitions(t *testing.T) {
	windows := []struct {
		zone       string
		from, to   string // local dates
		special    string // local date of the transition
		specialUTC time.Time
		expr       string
	}{
		{"Europe/Berlin", "2026-03-26", "2026-04-02", "2026-03-29", utc("2026-03-29T01:00:00Z"), "30 2 * * *"},
		{"Europe/Berlin", "2026-10-22", "2026-10-29", "2026-10-25", utc("2026-10-25T00:30:00Z"), "30 2 * * *"},
		{"America/New_York", "2026-03-05", "2026-03-12", "2026-03-08", utc("2026-03-08T07:00:00Z"), "30 2 * * *"},
		{"America/New_York", "2026-10-29", "2026-11-05", "2026-11-01", utc("2026-11-01T05:30:00Z"), "30 1 * * *"},
	}
	for _, w := range windows {
		t.Run(w.zone+" "+w.special, func(t *testing.T) {
			loc := zone(t, w.zone)
			from, _ := time.ParseInLocation(time.DateOnly, w.from, loc)
			to, _ := time.ParseInLocation(time.DateOnly, w.to, loc)
			rec := newRecorder()
			h := start(t, from, rec, job(t, "nightly", w.expr, w.zone))
			h.until(to)
			require.NoError(t, h.stop())
			ran := rec.times("nightly")
			require.Len(t, ran, 7, "one run per day: %v", ran)
			days := map[string]time.Time{}
			for _, r := range ran {
				day := r.In(loc).Format(time.DateOnly)
				require.NotContains(t, days, day, "two runs on %s", day)
				days[day] = r
			}
			require.Equal(t, w.specialUTC, days[w.special].UTC())
		})
	}
}

// Overlap skip drops a time that comes while the previous run goes on; queue runs it after.
// Never two runs of one pipeline at once.
func TestOverlapPolicies(t *testing.T) {
	for _, policy := range []Overlap{OverlapSkip, OverlapQueue} {
		t.Run(string(policy), func(t *testing.T) {
			rec := newRecorder()
			rec.hold = make(chan struct{})
			j := job(t, "hourly", "0 * * * *", "UTC")
			j.Overlap = policy
			h := start(t, utc("2026-06-01T00:30:00Z"), rec, j)
			h.advanceTo(utc("2026-06-01T01:00:00Z")) // the first run starts and is held
			waitFor(t, func() bool { return len(rec.times("hourly")) == 1 })
			h.advanceTo(utc("2026-06-01T02:00:00Z")) // while 01:00 still runs
			h.advanceTo(utc("2026-06-01T03:00:00Z")) // while 01:00 still runs
			waitFor(t, func() bool { return h.clock.waiting() == 1 })
			close(rec.hold) // the first run ends; queued ones may go
			h.settle()
			require.NoError(t, h.stop())
			ran := rec.times("hourly")
			require.Equal(t, 1, rec.maxAlive, "never two runs at once")
			if policy == OverlapSkip {
				require.Equal(t, []time.Time{utc("2026-06-01T01:00:00Z")}, utcs(ran))
				require.Equal(t, 2, h.count(EventSkipped))
			} else {
				require.Equal(t, []time.Time{utc("2026-06-01T01:00:00Z"), utc("2026-06-01T02:00:00Z"), utc("2026-06-01T03:00:00Z")}, utcs(ran))
				require.Equal(t, 0, h.count(EventSkipped))
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
	for policy, want := range map[CatchUp][]time.Time{
		CatchUpNone:   nil,
		CatchUpLatest: missed[3:],
		CatchUpAll:    missed,
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
		j.CatchUp = CatchUpAll
		h := start(t, restart, rec, j)
		h.settle()
		require.NoError(t, h.stop())
		require.Empty(t, rec.times("nightly"), "a pipeline that never ran on a schedule missed nothing")
	})
}

// Shutdown lets a run finish within the grace period, and cancels it after.
func TestGracefulShutdown(t *testing.T) {
	for _, finishes := range []bool{true, false} {
		rec := newRecorder()
		rec.hold = make(chan struct{})
		h := start(t, utc("2026-06-01T00:30:00Z"), rec, job(t, "hourly", "0 * * * *", "UTC"))
		h.sched.Grace = 300 * time.Millisecond
		h.advanceTo(utc("2026-06-01T01:00:00Z"))
		waitFor(t, func() bool { return len(rec.times("hourly")) == 1 })
		if finishes {
			go func() { time.Sleep(50 * time.Millisecond); close(rec.hold) }()
		}
		began := time.Now()
		require.NoError(t, h.stop())
		rec.mu.Lock()
		require.Len(t, rec.ctxErrs, 1)
		if finishes {
			require.NoError(t, rec.ctxErrs[0], "finished within the grace period")
		} else {
			require.ErrorIs(t, rec.ctxErrs[0], context.Canceled, "cancelled after the grace period")
			require.GreaterOrEqual(t, time.Since(began), 300*time.Millisecond)
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
