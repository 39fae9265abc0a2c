package pipelines

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/ckm-dev/ckm/warehouse"
)

// Zone writes the SQL that turns instants into calendar days of one time zone. DuckDB converts
// an instant to local time with ICU, which costs about as much as the rest of a per-customer
// aggregate, and scoring converts every order; so LocalDate adds the zone's UTC offset with
// integer arithmetic instead, the offset picked by comparing the instant with the zone's offset
// changes in a balanced tree of comparisons. The changes come from Go's time zone database and
// are checked against ICU's before use (CheckedZone); a zone where the two disagree is
// converted by ICU.
type Zone struct {
	name    string
	offsets []offsetSpan // nil: convert with ICU
}

// offsetSpan is an offset in effect from an instant (µs since the epoch) on.
type offsetSpan struct {
	fromMicros    int64
	offsetSeconds int
}

// localSpan is the period the offset table covers; instants outside it go through ICU.
var localSpan = [2]time.Time{time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)}

// icuZone converts with DuckDB's ICU only.
func icuZone(name string) Zone { return Zone{name: name} }

// CheckedZone builds the offset table for name and checks it against ICU at every change (a
// second before and at the instant) and between changes.
func CheckedZone(ctx context.Context, conn *warehouse.Conn, name string) (Zone, error) {
	loc, err := time.LoadLocation(name)
	if err != nil {
		return Zone{}, fmt.Errorf("time zone %s: %w", name, err)
	}
	offsets := zoneOffsets(loc)
	var probes []string
	probe := func(us int64, off int) { probes = append(probes, fmt.Sprintf("(%d, %d)", us, int64(off)*1_000_000)) }
	for i, s := range offsets {
		if i > 0 {
			probe(s.fromMicros-1_000_000, offsets[i-1].offsetSeconds)
		}
		probe(s.fromMicros, s.offsetSeconds)
		end := localSpan[1].UnixMicro()
		if i+1 < len(offsets) {
			end = offsets[i+1].fromMicros
		}
		probe(s.fromMicros+(end-s.fromMicros)/2, s.offsetSeconds)
	}
	var disagree int
	err = conn.QueryRowContext(ctx, `SELECT count(*) FROM (VALUES `+strings.Join(probes, ", ")+`) p(us, off)
		WHERE epoch_us(timezone(`+warehouse.Quote(name)+`, make_timestamptz(us))) - us <> off`).Scan(&disagree)
	if err != nil {
		return Zone{}, fmt.Errorf("check time zone %s against ICU: %w", name, err)
	}
	if disagree > 0 {
		return icuZone(name), nil
	}
	return Zone{name: name, offsets: offsets}, nil
}

// Fast reports whether LocalDate avoids ICU.
func (z Zone) Fast() bool { return z.offsets != nil }

// zoneOffsets lists the zone's offsets over localSpan, each from the instant it takes effect.
func zoneOffsets(loc *time.Location) []offsetSpan {
	offset := func(t time.Time) int { _, off := t.In(loc).Zone(); return off }
	spans := []offsetSpan{{localSpan[0].UnixMicro(), offset(localSpan[0])}}
	const step = 6 * time.Hour // zones change offset at most once in six hours
	for t := localSpan[0]; t.Before(localSpan[1]); t = t.Add(step) {
		next := t.Add(step)
		if offset(next) == offset(t) {
			continue
		}
		lo, hi := t, next // the new offset starts in (lo, hi]: find its first second
		for hi.Sub(lo) > time.Second {
			mid := lo.Add(hi.Sub(lo) / 2).Truncate(time.Second)
			if !mid.After(lo) {
				break
			}
			if offset(mid) == offset(lo) {
				lo = mid
			} else {
				hi = mid
			}
		}
		spans = append(spans, offsetSpan{hi.UnixMicro(), offset(hi)})
	}
	return spans
}

// offsetTree is a CASE expression giving the offset in µs of the instant us (spans sorted).
func offsetTree(us string, spans []offsetSpan) string {
	if len(spans) == 1 {
		return fmt.Sprintf("%d", int64(spans[0].offsetSeconds)*1_000_000)
	}
	mid := len(spans) / 2
	return fmt.Sprintf("CASE WHEN %s < %d THEN %s ELSE %s END", us, spans[mid].fromMicros,
		offsetTree(us, spans[:mid]), offsetTree(us, spans[mid:]))
}

// LocalDate is the calendar day in the zone of ts (a TIMESTAMPTZ expression).
func (z Zone) LocalDate(ts string) string {
	icu := "CAST(timezone(" + warehouse.Quote(z.name) + ", " + ts + ") AS DATE)"
	if z.offsets == nil {
		return icu
	}
	us := "epoch_us(" + ts + ")"
	return fmt.Sprintf("CASE WHEN %[1]s >= %[2]d AND %[1]s < %[3]d THEN DATE '1970-01-01' + CAST(floor((%[1]s + %[4]s) / 86400000000.0) AS INTEGER) ELSE %[5]s END",
		us, localSpan[0].UnixMicro(), localSpan[1].UnixMicro(), offsetTree(us, z.offsets), icu)
}

// DayStart is the instant the calendar day date (a DATE expression) starts in the zone.
func (z Zone) DayStart(date string) string {
	return "timezone(" + warehouse.Quote(z.name) + ", CAST(" + date + " AS TIMESTAMP))"
}
