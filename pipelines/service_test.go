package pipelines_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/ckm-dev/ckm/config"
	"github.com/ckm-dev/ckm/internal/devkafka"
	ckmtest "github.com/ckm-dev/ckm/internal/testutil"
	"github.com/ckm-dev/ckm/pipelines"
	"github.com/ckm-dev/ckm/publish"
	"github.com/ckm-dev/ckm/scheduler"
	"github.com/ckm-dev/ckm/scheduler/schedulertest"
	"github.com/ckm-dev/ckm/warehouse"
)

// service runs a config through pipelines.Service, opening its warehouse per run as serve does.
func service(t *testing.T, dir, yaml string) (*pipelines.Service, *config.Config) {
	env := ckmtest.OpenYAML(t, dir, yaml)
	require.NoError(t, env.Warehouse.Close()) // the service opens it for each run
	svc := &pipelines.Service{Config: env.Config, Log: env.Runner().Log, Metrics: pipelines.NewMetrics(),
		Open: func(ctx context.Context, readOnly bool) (*warehouse.Warehouse, error) {
			return warehouse.Open(ctx, warehouse.Options{Path: env.Config.Warehouse.Path, ReadOnly: readOnly, Threads: 2})
		}}
	return svc, env.Config
}

func query(t *testing.T, cfg *config.Config, q string, dest ...any) {
	t.Helper()
	w, err := warehouse.Open(context.Background(), warehouse.Options{Path: cfg.Warehouse.Path, ReadOnly: true})
	require.NoError(t, err)
	defer w.Close()
	require.NoError(t, w.DB().QueryRow(q).Scan(dest...))
}

// A scheduled run stores its instant in UTC and scores the day before it in the config's zone;
// the same instant is refused a second time; the metrics count it; Kafka lag is measured after
// the run and again between runs.
func TestServiceRunsScheduledTimesOnce(t *testing.T) {
	broker, err := devkafka.Start(devkafka.Options{Topics: map[string]int32{"orders": 2}})
	require.NoError(t, err)
	t.Cleanup(broker.Close)
	prod := devkafka.NewProducer(broker.Addr)
	t.Cleanup(func() { prod.Close() })
	require.NoError(t, prod.Produce(t.Context(), "orders", devkafka.Orders(0, 500)))

	dir := t.TempDir()
	svc, cfg := service(t, dir, fmt.Sprintf(`warehouse: {path: ckm.duckdb}
timezone: America/New_York
sources:
  orders:
    table: orders
    kafka: {brokers: ["%s"], topics: [orders], session_timeout: 2s, connect_timeout: 5s}
    mapping: {order_id: id, customer_id: cust, order_ts: ts, amount: amt, status: {const: completed}}
pipelines:
  nightly: {transforms: [rfm], schedule: "30 2 * * *"}
publish: {snapshot: false, report: false}
`, broker.Addr))
	jobs, err := pipelines.Jobs(cfg)
	require.NoError(t, err)
	require.Len(t, jobs, 1)
	require.Equal(t, "America/New_York", jobs[0].Schedule.Location().String(), "the config's zone when the pipeline names none")

	// 02:30 on the spring-forward day does not exist in New York: the scheduler runs at 03:00 EDT.
	at := jobs[0].Schedule.Next(time.Date(2026, 3, 7, 12, 0, 0, 0, time.UTC))
	require.Equal(t, time.Date(2026, 3, 8, 7, 0, 0, 0, time.UTC), at.UTC())
	ctx := t.Context()
	require.NoError(t, svc.Start(ctx))
	require.NoError(t, svc.RunScheduled(ctx, "nightly", at))
	require.ErrorIs(t, svc.RunScheduled(ctx, "nightly", at), scheduler.ErrAlreadyRan)

	var stored time.Time
	var asOf string
	var runs int
	query(t, cfg, `SELECT any_value(scheduled_for), any_value(as_of)::VARCHAR, count(*) FROM pipeline_runs`, &stored, &asOf, &runs)
	require.Equal(t, 1, runs, "the refused time left no run behind")
	require.Equal(t, at.UTC(), stored.UTC())
	require.Equal(t, "2026-03-07", asOf, "the day before the scheduled time, in the config's zone")
	last, ok, err := svc.LastScheduled(ctx, "nightly")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, at.UTC(), last.UTC())

	m := svc.Metrics
	require.Equal(t, 1.0, testutil.ToFloat64(m.RunsCounter("nightly", pipelines.Schedule, "succeeded")))
	require.Equal(t, 0.0, lagTotal(t, m), "everything read")
	require.NoError(t, prod.Produce(ctx, "orders", devkafka.Orders(500, 537)))
	svc.BetweenRuns(ctx, false)
	require.Equal(t, 37.0, lagTotal(t, m), "messages produced after the run wait")
	// With ingest between runs they are loaded (offsets committed with them) and the lag is gone.
	svc.BetweenRuns(ctx, true)
	require.Equal(t, 0.0, lagTotal(t, m))
	var orders int
	query(t, cfg, `SELECT count(*) FROM orders`, &orders)
	require.Equal(t, 537, orders)
	require.Equal(t, 37.0, testutil.ToFloat64(m.RowsIn("ingest", "orders")))

	// A run by another process (here: a manual run) shows in the last-success gauge between runs.
	w, err := warehouse.Open(ctx, warehouse.Options{Path: cfg.Warehouse.Path})
	require.NoError(t, err)
	_, err = (&pipelines.Runner{Config: cfg, Warehouse: w, Log: svc.Log}).Run(ctx, pipelines.Request{Pipeline: "nightly", AsOf: time.Date(2026, 3, 9, 0, 0, 0, 0, time.UTC)})
	require.NoError(t, err)
	require.NoError(t, w.Close())
	svc.BetweenRuns(ctx, false)
	var finished float64
	query(t, cfg, `SELECT floor(epoch(max(finished_at))) FROM pipeline_runs WHERE trigger = 'manual'`, &finished)
	require.Equal(t, finished, testutil.ToFloat64(m.LastSuccess("nightly")))
	out, err := testutil.CollectAndLint(m.Registry)
	require.NoError(t, err)
	require.Empty(t, out, "metric names and help follow Prometheus conventions")
}

func lagTotal(t *testing.T, m *pipelines.Metrics) float64 {
	t.Helper()
	families, err := m.Registry.Gather()
	require.NoError(t, err)
	var total float64
	for _, f := range families {
		if f.GetName() != "ckm_kafka_lag_messages" {
			continue
		}
		for _, s := range f.GetMetric() {
			total += s.GetGauge().GetValue()
		}
	}
	return total
}

// The pipeline lock: held by this process it refuses a second run; left by a dead process it
// is taken over and that run is marked abandoned, which catch-up then does not count as done.
func TestPipelineLock(t *testing.T) {
	env := ckmtest.Open(t, filepath.Join(ckmtest.RepoRoot(), "config.yaml"))
	r := env.Runner()
	db := env.Warehouse.DB()
	ctx := t.Context()
	at := time.Date(2026, 7, 1, 0, 30, 0, 0, time.UTC)
	_, err := db.Exec(`INSERT INTO pipeline_runs (run_id, pipeline, as_of, trigger, scheduled_for, started_at, status)
		VALUES ('dead-run', 'nightly', DATE '2026-06-30', 'schedule', ?, now(), 'running')`, at)
	require.NoError(t, err)
	_, err = db.Exec(`INSERT INTO pipeline_locks VALUES ('nightly', 'dead-run', 'otherhost:4242:deadbeef', now())`)
	require.NoError(t, err)
	_, ok, err := pipelines.LastScheduled(ctx, db, "nightly")
	require.NoError(t, err)
	require.False(t, ok, "a run still marked running has not run to an end")

	res, err := r.Run(ctx, pipelines.Request{Pipeline: "nightly", AsOf: at, Trigger: pipelines.Schedule, ScheduledFor: &at})
	require.NoError(t, err)
	var status, msg string
	require.NoError(t, db.QueryRow(`SELECT status, error FROM pipeline_runs WHERE run_id = 'dead-run'`).Scan(&status, &msg))
	require.Equal(t, "failed", status)
	require.True(t, strings.HasPrefix(msg, "abandoned: "), msg)
	var locks int
	require.NoError(t, db.QueryRow(`SELECT count(*) FROM pipeline_locks`).Scan(&locks))
	require.Zero(t, locks, "released when the run ended")
	last, ok, err := pipelines.LastScheduled(ctx, db, "nightly")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, at, last.UTC(), "the run that took over the time counts, the abandoned one does not")
	require.True(t, res.Succeeded)

	// A lock held by this very process (a run still going) refuses a second run.
	_, err = db.Exec(`INSERT INTO pipeline_locks VALUES ('nightly', 'live-run', ?, now())`, pipelines.LockOwner())
	require.NoError(t, err)
	_, err = r.Run(ctx, pipelines.Request{Pipeline: "nightly", AsOf: at})
	require.ErrorIs(t, err, pipelines.ErrBusy)
	require.ErrorContains(t, err, "live-run")
}

// The scheduler on a fake clock drives real runs through a week across a transition: one run
// per day, each stored with its scheduled instant (UTC) and the day before it as as_of.
func TestScheduledRunsAcrossDSTAreStoredOncePerDay(t *testing.T) {
	for _, c := range []struct {
		zone, expr string
		from       string
		want       []string // scheduled instants, UTC
	}{
		{"Europe/Berlin", "30 2 * * *", "2026-03-27", []string{"2026-03-27T01:30:00Z", "2026-03-28T01:30:00Z",
			"2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"}},
		{"America/New_York", "30 1 * * *", "2026-10-30", []string{"2026-10-30T05:30:00Z", "2026-10-31T05:30:00Z",
			"2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"}},
	} {
		t.Run(c.zone, func(t *testing.T) {
			dir := t.TempDir()
			require.NoError(t, os.WriteFile(filepath.Join(dir, "orders.csv"), []byte("order_id,customer_id,order_ts,amount\n"+
				"o1,c1,2026-01-05T10:00:00Z,10\no2,c1,2026-02-05T10:00:00Z,20\no3,c2,2026-02-10T10:00:00Z,5\n"), 0o644))
			svc, cfg := service(t, dir, fmt.Sprintf(`warehouse: {path: ckm.duckdb}
timezone: %s
sources:
  orders:
    table: orders
    file: {paths: [orders.csv]}
    mapping: {order_id: order_id, customer_id: customer_id, order_ts: order_ts, amount: amount, status: {const: completed}}
pipelines:
  nightly: {transforms: [rfm], schedule: %q}
publish: {parquet: false, snapshot: false, report: false}
`, c.zone, c.expr))
			jobs, err := pipelines.Jobs(cfg)
			require.NoError(t, err)
			loc := jobs[0].Schedule.Location()
			from, err := time.ParseInLocation(time.DateOnly, c.from, loc)
			require.NoError(t, err)
			clock := schedulertest.NewClock(from)
			sched := &scheduler.Scheduler{Jobs: jobs, Runs: svc, Clock: clock, Grace: time.Minute}
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- sched.Run(ctx) }()
			schedulertest.Drive(t, clock, sched, from.AddDate(0, 0, len(c.want)))
			cancel()
			require.NoError(t, <-done)

			w, err := warehouse.Open(t.Context(), warehouse.Options{Path: cfg.Warehouse.Path, ReadOnly: true})
			require.NoError(t, err)
			defer w.Close()
			rows, err := w.DB().Query(`SELECT scheduled_for, as_of::VARCHAR, status, trigger FROM pipeline_runs ORDER BY scheduled_for`)
			require.NoError(t, err)
			defer rows.Close()
			var got []string
			for rows.Next() {
				var at time.Time
				var asOf, status, trigger string
				require.NoError(t, rows.Scan(&at, &asOf, &status, &trigger))
				require.Equal(t, "succeeded/schedule", status+"/"+trigger)
				require.Equal(t, at.In(loc).AddDate(0, 0, -1).Format(time.DateOnly), asOf, "as_of is the local day before")
				got = append(got, at.UTC().Format(time.RFC3339))
			}
			require.NoError(t, rows.Err())
			require.Equal(t, c.want, got)
		})
	}
}

// A process that died after a run committed but before publishing it: the next serve start
// publishes that run.
func TestServiceStartPublishesWhatACrashLeftUnpublished(t *testing.T) {
	env := ckmtest.Open(t, filepath.Join(ckmtest.RepoRoot(), "config.yaml"))
	res := env.Run(t, "nightly", "2026-06-30")
	dir := env.Config.Publish.Dir
	require.NoError(t, os.RemoveAll(filepath.Join(dir, "latest")))
	require.NoError(t, os.Remove(filepath.Join(dir, "snapshot.duckdb")))
	require.NoError(t, env.Warehouse.Close())

	svc := &pipelines.Service{Config: env.Config, Log: env.Runner().Log, Metrics: pipelines.NewMetrics(),
		Open: func(ctx context.Context, readOnly bool) (*warehouse.Warehouse, error) {
			return warehouse.Open(ctx, warehouse.Options{Path: env.Config.Warehouse.Path, ReadOnly: readOnly})
		}}
	require.NoError(t, svc.Start(t.Context()))
	m, err := publish.ReadManifest(filepath.Join(dir, "latest"))
	require.NoError(t, err)
	require.NotNil(t, m)
	require.Equal(t, res.RunID, m.RunID)
	require.FileExists(t, filepath.Join(dir, "snapshot.duckdb"))
	before, err := os.Stat(filepath.Join(dir, "snapshot.duckdb"))
	require.NoError(t, err)
	require.NoError(t, svc.Start(t.Context()), "up to date: nothing to do")
	after, err := os.Stat(filepath.Join(dir, "snapshot.duckdb"))
	require.NoError(t, err)
	require.Equal(t, before.ModTime(), after.ModTime(), "not published again")
}
