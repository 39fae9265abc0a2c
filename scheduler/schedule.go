// Package scheduler decides when pipelines run: cron schedules in a pipeline's own time zone
// (with the daylight-saving cases cron libraries get wrong), overlap and catch-up policies, and
// a graceful stop. What a run does is the caller's: the scheduler only calls Runs.
package scheduler

import (
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// parser reads standard five-field expressions, an optional leading seconds field and
// descriptors such as @daily or @every 1h.
var parser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// Schedule is a cron expression read as wall-clock times in one time zone.
//
// robfig/cron evaluates expressions on instants in the zone, so a time inside a spring-forward
// gap never matches and a time in the repeated autumn hour may match twice. Here the expression
// is evaluated on wall-clock readings (held as UTC, which has no transitions) and each reading is
// then resolved to an instant: a reading inside a gap runs at the instant of the jump, a repeated
// reading runs at its first occurrence only.
type Schedule struct {
	spec  cron.Schedule
	every time.Duration // @every: a fixed interval of real time, not of wall-clock time
	loc   *time.Location
	text  string
}

// Parse reads a cron expression for loc.
func Parse(expr string, loc *time.Location) (*Schedule, error) {
	expr = strings.TrimSpace(expr)
	if strings.HasPrefix(expr, "TZ=") || strings.HasPrefix(expr, "CRON_TZ=") {
		return nil, fmt.Errorf("schedule %q: set the pipeline's timezone instead of a TZ= prefix", expr)
	}
	spec, err := parser.Parse(expr)
	if err != nil {
		return nil, fmt.Errorf("schedule %q: %w", expr, err)
	}
	s := &Schedule{spec: spec, loc: loc, text: expr}
	if c, ok := spec.(cron.ConstantDelaySchedule); ok {
		s.every = c.Delay
	}
	return s, nil
}

func (s *Schedule) String() string { return s.text + " (" + s.loc.String() + ")" }

// Location is the zone the schedule's wall-clock times are read in.
func (s *Schedule) Location() *time.Location { return s.loc }

// Next is the first scheduled instant strictly after after.
func (s *Schedule) Next(after time.Time) time.Time {
	if s.every > 0 {
		return after.Truncate(time.Second).Add(s.every)
	}
	wall := wallClock(after.In(s.loc))
	for {
		wall = s.spec.Next(wall)
		if wall.IsZero() {
			return time.Time{} // the expression never matches (e.g. 30 February)
		}
		// In the repeated autumn hour the wall clock runs a second time; readings whose first
		// occurrence is already past are skipped, so each one runs once.
		if t := resolve(wall, s.loc); t.After(after) {
			return t
		}
	}
}

// Between lists the scheduled instants in (from, to], oldest first.
func (s *Schedule) Between(from, to time.Time) []time.Time {
	var out []time.Time
	for t := s.Next(from); !t.IsZero() && !t.After(to); t = s.Next(t) {
		out = append(out, t)
	}
	return out
}

// wallClock holds t's wall-clock reading as the same reading in UTC.
func wallClock(t time.Time) time.Time {
	return time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), t.Nanosecond(), time.UTC)
}

// resolve finds the instant at which loc's clocks show wall. A reading that occurs twice
// resolves to its first occurrence; one that never occurs (skipped by a jump forward)
// resolves to the instant of the jump.
func resolve(wall time.Time, loc *time.Location) time.Time {
	// The zone offsets in force a day either side cover every reading near one transition.
	_, before := wall.Add(-26 * time.Hour).In(loc).Zone()
	_, after := wall.Add(26 * time.Hour).In(loc).Zone()
	var first time.Time
	for _, off := range []int{before, after} {
		t := wall.Add(-time.Duration(off) * time.Second).In(loc)
		if wallClock(t).Equal(wall) && (first.IsZero() || t.Before(first)) {
			first = t
		}
	}
	if !first.IsZero() {
		return first
	}
	// In a gap: read with the earlier offset the reading lands after the jump, whose instant
	// is where that zone period starts.
	start, _ := wall.Add(-time.Duration(before) * time.Second).In(loc).ZoneBounds()
	return start
}
