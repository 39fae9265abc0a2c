package main

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/ckm-dev/ckm/config"
	"github.com/ckm-dev/ckm/internal/pgtest"
	"github.com/ckm-dev/ckm/pipelines"
	"github.com/ckm-dev/ckm/warehouse"
)

// publishedRuns reads which run PostgreSQL holds for each as_of.
func publishedRuns(t *testing.T, dsn string) map[string]string {
	conn, err := pgx.Connect(context.Background(), dsn)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	rows, err := conn.Query(context.Background(), `SELECT as_of::text, run_id FROM ckm.published_runs`)
	require.NoError(t, err)
	out := map[string]string{}
	for rows.Next() {
		var asOf, run string
		require.NoError(t, rows.Scan(&asOf, &run))
		out[asOf] = run
	}
	require.NoError(t, rows.Err())
	return out
}

// unpublished lists the as_ofs of successful runs that are the newest of their as_of and not
// published to PostgreSQL, by pipeline_runs.
func unpublished(t *testing.T, dir string) []string {
	w, err := warehouse.Open(context.Background(), warehouse.Options{Path: filepath.Join(dir, "data", "ckm.duckdb"), ReadOnly: true})
	require.NoError(t, err)
	defer w.Close()
	rows, err := w.DB().Query(`SELECT as_of::VARCHAR FROM (SELECT *, row_number() OVER (PARTITION BY as_of ORDER BY finished_at DESC) AS newest
		FROM pipeline_runs WHERE status = 'succeeded') WHERE newest = 1 AND postgres_published_at IS NULL ORDER BY as_of`)
	require.NoError(t, err)
	defer rows.Close()
	var out []string
	for rows.Next() {
		var asOf string
		require.NoError(t, rows.Scan(&asOf))
		out = append(out, asOf)
	}
	return out
}

// PostgreSQL unreachable: the run's outputs commit in DuckDB, the command fails saying so, and
// pipeline_runs says PostgreSQL lacks the run. SIGKILL while the swap is open: PostgreSQL keeps
// the previous state, whole. What serve does at start then drops what the killed publish had
// staged and publishes every as_of PostgreSQL lacks, ending equal, value for value, to a clean
// publish.
func TestPostgresPublishSurvivesOutagesAndKills(t *testing.T) {
	pg, writer, _ := pgtest.StartWithReadmeRoles(t)
	dir := t.TempDir()
	cfg := sampleConfig(t, dir, "")
	t.Setenv("CKM_PG_DSN", writer)
	code, out, errb := ckm("run", "--config", cfg, "--as-of", "2026-05-31")
	require.Zero(t, code, out+errb)
	require.Contains(t, out, "published to PostgreSQL: schema ckm")
	first := publishedRuns(t, writer)
	require.Len(t, first, 1)
	before := pgtest.Digest(t, writer)

	// Unreachable: a closed port.
	down := strings.Replace(writer, ":"+strconv.Itoa(pg.Port), ":1", 1)
	t.Setenv("CKM_PG_DSN", down)
	code, out, errb = ckm("run", "--config", cfg, "--as-of", "2026-06-30")
	require.NotZero(t, code)
	require.Contains(t, errb, "the run succeeded but publishing its outputs failed")
	require.Contains(t, errb, "publish 2026-06-30 to PostgreSQL schema ckm: connect:")
	require.NotContains(t, errb+out, "change-me-writer", "the password is never printed")
	require.Equal(t, []string{"2026-06-30"}, unpublished(t, dir))
	require.Equal(t, first, publishedRuns(t, writer))

	// Killed while the swap is open: the next run's publish waits on the held lock after it
	// replaced every output's rows, and dies there.
	hold := pg.HoldSwap(t, "analytics")
	cmd := exec.Command(ckmBin, "run", "--config", cfg, "--as-of", "2026-06-15")
	cmd.Env = append(os.Environ(), "CKM_PG_DSN="+writer)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	hold.WaitBlocked(t)
	require.NoError(t, cmd.Process.Kill())
	_ = cmd.Wait()
	hold.Release()
	require.Contains(t, stderr.String(), `step="publish to PostgreSQL"`)
	admin, err := pgx.Connect(context.Background(), pg.AdminDSN("analytics"))
	require.NoError(t, err)
	defer admin.Close(context.Background())
	require.Eventually(t, func() bool {
		var sessions int
		require.NoError(t, admin.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity WHERE usename = 'ckm_writer'`).Scan(&sessions))
		return sessions == 0
	}, time.Minute, 10*time.Millisecond, "the killed publisher's session ends")
	require.Equal(t, first, publishedRuns(t, writer), "PostgreSQL keeps the previous state")
	require.Equal(t, before, pgtest.Digest(t, writer))
	require.Equal(t, []string{"2026-06-15", "2026-06-30"}, unpublished(t, dir))

	// What `ckm serve` does at start publishes both, oldest first.
	t.Setenv("CKM_PG_DSN", writer)
	c, err := config.Load(cfg)
	require.NoError(t, err)
	w, err := warehouse.Open(context.Background(), warehouse.Options{Path: c.Warehouse.Path})
	require.NoError(t, err)
	r := &pipelines.Runner{Config: c, Warehouse: w, Log: slog.New(slog.DiscardHandler)}
	require.NoError(t, r.RepublishIfBehind(context.Background()))
	require.NoError(t, w.Close())
	require.Empty(t, unpublished(t, dir))
	var leftovers int
	require.NoError(t, admin.QueryRow(context.Background(), `SELECT count(*) FROM pg_class WHERE starts_with(relname, 'ckm_stage_')`).Scan(&leftovers))
	require.Zero(t, leftovers, "the next publish drops what a killed one staged")
	runs := publishedRuns(t, writer)
	require.Len(t, runs, 3)
	require.Equal(t, first["2026-05-31"], runs["2026-05-31"])

	// The same as a clean publish of the same warehouse into a fresh schema.
	code, out, errb = ckm("status", "--config", cfg)
	require.Zero(t, code, errb)
	require.Contains(t, out, "postgres_published")
	after := pgtest.Digest(t, writer)
	require.Equal(t, before["2026-05-31"], after["2026-05-31"])
	pg.Exec(t, "analytics", `ALTER SCHEMA ckm RENAME TO ckm_recovered`, `CREATE SCHEMA ckm AUTHORIZATION ckm_writer`)
	code, out, errb = ckm("publish", "--config", cfg, "--as-of", "2026-06-30")
	require.Zero(t, code, out+errb)
	code, out, errb = ckm("publish", "--config", cfg, "--as-of", "2026-06-15")
	require.Zero(t, code, out+errb)
	clean := pgtest.Digest(t, writer)
	require.Equal(t, after["2026-06-15"], clean["2026-06-15"])
	require.Equal(t, after["2026-06-30"], clean["2026-06-30"])
}

// PostgreSQL down when `ckm serve` starts, with a run it lacks: serve says so and starts
// anyway (the scheduled runs try again); it does not need PostgreSQL to schedule DuckDB runs.
func TestServeStartsWhilePostgresIsDown(t *testing.T) {
	dir := t.TempDir()
	serveConfig(t, dir, "0 0 1 1 *", "none") // next New Year: no run during the test
	t.Setenv("CKM_PG_DSN", "postgres://ckm:pw@127.0.0.1:1/analytics?sslmode=disable")
	code, out, errb := ckm("run", "--config", filepath.Join(dir, "config.yaml"), "--as-of", "2026-06-30")
	require.NotZero(t, code, out)
	require.Contains(t, errb, "publish 2026-06-30 to PostgreSQL schema ckm: connect:")
	s := startServe(t, dir)
	failed, _ := s.waitFor(0, 60*time.Second, msgIs("could not publish to PostgreSQL at start; each run tries again"))
	require.Contains(t, failed["error"], "connect:")
	s.waitFor(0, 30*time.Second, msgIs("serving"))
	require.Zero(t, s.terminate(), s.log())
}
