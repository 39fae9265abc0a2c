package scheduler_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ckm-dev/ckm/scheduler"
)

func zone(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	require.NoError(t, err)
	return loc
}

func utc(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

// A daily schedule runs exactly once on every day of 2026, at 02:30 local time except on the
// day 02:30 does not exist, when it runs at the jump (03:00 summer time).
func TestDailyScheduleAcross2026(t *testing.T) {
	cases := []struct {
		zone, expr    string
		gapDay        string    // local date whose time falls in the spring gap
		gapInstant    time.Time // when it must run instead
		repeatDay     string    // local date whose time occurs twice
		repeatInstant time.Time // its first occurrence
	}{
		{"Europe/Berlin", "30 2 * * *", "2026-03-29", utc("2026-03-29T01:00:00Z"), "2026-10-25", utc("2026-10-25T00:30:00Z")},
		{"America/New_York", "30 2 * * *", "2026-03-08", utc("2026-03-08T07:00:00Z"), "", time.Time{}},
		{"America/New_York", "30 1 * * *", "", time.Time{}, "2026-11-01", utc("2026-11-01T05:30:00Z")},
	}
	for _, c := range cases {
		t.Run(c.zone+" "+c.expr, func(t *testing.T) {
			loc := zone(t, c.zone)
			s, err := scheduler.Parse(c.expr, loc)
			require.NoError(t, err)
			runs := s.Between(time.Date(2025, 12, 31, 23, 59, 0, 0, loc), time.Date(2026, 12, 31, 23, 59, 0, 0, loc))
			require.Len(t, runs, 365, "one run per day of 2026")
			day := time.Date(2026, 1, 1, 0, 0, 0, 0, loc)
			for _, r := range runs {
				local := r.In(loc)
				require.Equal(t, day.Format(time.DateOnly), local.Format(time.DateOnly), "run %s", r.UTC())
				switch local.Format(time.DateOnly) {
				case c.gapDay:
					require.Equal(t, c.gapInstant, r.UTC(), "in the gap: right after the jump")
					require.Equal(t, "03:00", local.Format("15:04"))
				case c.repeatDay:
					require.Equal(t, c.repeatInstant, r.UTC(), "repeated hour: first occurrence")
				default:
					wantHour := 2
					if c.expr == "30 1 * * *" {
						wantHour = 1
					}
					require.Equal(t, wantHour, local.Hour(), "run %s", r.UTC())
					require.Equal(t, 30, local.Minute())
				}
				day = day.AddDate(0, 0, 1)
			}
		})
	}
}

// Sub-hourly schedules through both transitions: instants strictly increase and no wall-clock
// reading runs twice; the gap's readings collapse into the instant of the jump.
func TestFrequentScheduleThroughTransitions(t *testing.T) {
	for _, name := range []string{"Europe/Berlin", "America/New_York"} {
		loc := zone(t, name)
		s, err := scheduler.Parse("*/15 * * * *", loc)
		require.NoError(t, err)
		runs := s.Between(time.Date(2026, 1, 1, 0, 0, 0, 0, loc), time.Date(2026, 12, 31, 0, 0, 0, 0, loc))
		seen := map[string]time.Time{}
		for i, r := range runs {
			if i > 0 {
				require.True(t, r.After(runs[i-1]), "%s: %s after %s", name, r, runs[i-1])
			}
			wall := r.In(loc).Format("2006-01-02 15:04")
			_, dup := seen[wall]
			require.False(t, dup, "%s: wall-clock %s ran twice", name, wall)
			seen[wall] = r
		}
		// 364 days of 96 quarter hours, less the four readings of the gap hour (which run once,
		// at the jump, together with the 03:00 reading).
		require.Len(t, runs, 364*96-4, name)
	}
	berlin := zone(t, "Europe/Berlin")
	s, _ := scheduler.Parse("*/15 * * * *", berlin)
	require.Equal(t, utc("2026-03-29T01:00:00Z"), s.Next(utc("2026-03-29T00:45:00Z")).UTC(), "02:00 CET is skipped: run at the jump")
	require.Equal(t, utc("2026-03-29T01:15:00Z"), s.Next(utc("2026-03-29T01:00:00Z")).UTC())
	// Autumn: after 02:45 summer time comes 03:00 winter time, an hour and a quarter later.
	require.Equal(t, utc("2026-10-25T02:00:00Z"), s.Next(utc("2026-10-25T00:45:00Z")).UTC())
	// Started during the second pass of the repeated hour, nothing of that hour runs again.
	require.Equal(t, utc("2026-10-25T02:00:00Z"), s.Next(utc("2026-10-25T01:10:00Z")).UTC())
}

func TestParse(t *testing.T) {
	loc := zone(t, "Europe/Berlin")
	_, err := scheduler.Parse("61 * * * *", loc)
	require.ErrorContains(t, err, `schedule "61 * * * *"`)
	_, err = scheduler.Parse("CRON_TZ=UTC 0 2 * * *", loc)
	require.ErrorContains(t, err, "timezone")
	s, err := scheduler.Parse("*/5 * * * * *", loc) // optional seconds field
	require.NoError(t, err)
	require.Equal(t, utc("2026-06-01T10:00:05Z"), s.Next(utc("2026-06-01T10:00:01Z")).UTC())
	s, err = scheduler.Parse("@every 90m", loc) // real-time interval, even across a transition
	require.NoError(t, err)
	require.Equal(t, utc("2026-03-29T02:30:00Z"), s.Next(utc("2026-03-29T01:00:00Z")).UTC())
	s, err = scheduler.Parse("@daily", loc)
	require.NoError(t, err)
	require.Equal(t, utc("2026-03-29T22:00:00Z"), s.Next(utc("2026-03-29T01:00:00Z")).UTC())
}
