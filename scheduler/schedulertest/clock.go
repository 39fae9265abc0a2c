// Package schedulertest drives a scheduler on a fake clock, so tests cover weeks of schedule
// (daylight-saving transitions included) in moments.
package schedulertest

import (
	"runtime"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/ckm-dev/ckm/scheduler"
)

// Clock is a scheduler.Clock that moves only when Advance is called.
type Clock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []waiter
}

type waiter struct {
	at time.Time
	ch chan time.Time
}

// NewClock returns a clock stopped at now.
func NewClock(now time.Time) *Clock { return &Clock{now: now} }

// Now is the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// After fires when Advance reaches now+d.
func (c *Clock) After(d time.Duration) <-chan time.Time {
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

// Advance moves the clock to the earliest waiter's time and wakes every waiter due by then.
func (c *Clock) Advance() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.waiters) == 0 {
		return
	}
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

// WaitingFor tells whether a wait ends exactly at at.
func (c *Clock) WaitingFor(at time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, w := range c.waiters {
		if w.at.Equal(at) {
			return true
		}
	}
	return false
}

// Waiting is how many waits are pending.
func (c *Clock) Waiting() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.waiters)
}

// WaitFor polls cond without sleeping (a week of minute-by-minute steps must stay fast) and
// fails the test after 30 s.
func WaitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 30s")
		}
		runtime.Gosched()
	}
}

// Settle waits until every job of s waits on the clock and no run is queued or in progress.
func Settle(t testing.TB, c *Clock, s *scheduler.Scheduler) {
	t.Helper()
	WaitFor(t, func() bool {
		if c.Waiting() < len(s.Jobs) {
			return false
		}
		for _, st := range s.Status() {
			if st.Queued > 0 || st.Running {
				return false
			}
		}
		return true
	})
}

// AdvanceTo steps the clock until it reaches at, without waiting for runs.
func AdvanceTo(t testing.TB, c *Clock, s *scheduler.Scheduler, at time.Time) {
	t.Helper()
	for c.Now().Before(at) {
		WaitFor(t, func() bool { return c.Waiting() >= len(s.Jobs) })
		c.Advance()
	}
}

// Drive steps the clock until it reaches end, letting every run finish after each step.
func Drive(t testing.TB, c *Clock, s *scheduler.Scheduler, end time.Time) {
	t.Helper()
	for Settle(t, c, s); c.Now().Before(end); Settle(t, c, s) {
		c.Advance()
	}
}
