package pipelines

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ckm-dev/ckm/warehouse"
)

// The integer-arithmetic local date equals ICU's for every probed instant: random ones over
// the covered span and beyond, and a second and an hour either side of every offset change.
func TestZoneLocalDateMatchesICU(t *testing.T) {
	ctx := context.Background()
	w, err := warehouse.Open(ctx, warehouse.Options{Path: filepath.Join(t.TempDir(), "z.duckdb")})
	require.NoError(t, err)
	defer w.Close()
	conn, err := w.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	rng := rand.New(rand.NewPCG(9, 9))
	for _, name := range []string{"Europe/Berlin", "America/New_York", "America/Sao_Paulo", "Australia/Lord_Howe",
		"Asia/Kolkata", "Pacific/Chatham", "Asia/Tehran", "Africa/Casablanca", "UTC"} {
		zone, err := CheckedZone(ctx, conn, name)
		require.NoError(t, err)
		loc, _ := time.LoadLocation(name)
		var probes []string
		add := func(us int64) { probes = append(probes, fmt.Sprintf("(%d)", us)) }
		lo, hi := time.Date(1960, 1, 1, 0, 0, 0, 0, time.UTC).UnixMicro(), time.Date(2110, 1, 1, 0, 0, 0, 0, time.UTC).UnixMicro()
		for range 20_000 {
			add(lo + rng.Int64N(hi-lo))
		}
		for _, s := range zoneOffsets(loc) {
			for _, d := range []int64{-3600e6, -1e6, 0, 1e6, 3600e6} {
				add(s.fromMicros + d)
			}
		}
		t.Logf("%-20s fast path: %v", name, zone.Fast())
		if strings.Contains("Europe/Berlin America/New_York UTC", name) {
			require.True(t, zone.Fast(), "%s: Go's and ICU's zone data should agree", name)
		}
		var differ int
		require.NoError(t, conn.QueryRowContext(ctx, `SELECT count(*) FROM (SELECT make_timestamptz(us) AS ts FROM (VALUES `+
			strings.Join(probes, ", ")+`) p(us)) WHERE `+zone.LocalDate("ts")+` IS DISTINCT FROM CAST(timezone(`+
			warehouse.Quote(name)+`, ts) AS DATE)`).Scan(&differ))
		require.Zero(t, differ, "%s (fast path %v): %d of %d local dates differ from ICU's", name, zone.Fast(), differ, len(probes))
	}
}
