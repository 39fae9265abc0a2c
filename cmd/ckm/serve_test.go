package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ckm-dev/ckm/internal/testutil"
	"github.com/ckm-dev/ckm/publish"
	"github.com/ckm-dev/ckm/scheduler"
	"github.com/ckm-dev/ckm/warehouse"
)

// served is a `ckm serve` process whose JSON log lines the test can wait for.
type served struct {
	t     *testing.T
	cmd   *exec.Cmd
	mu    sync.Mutex
	lines []map[string]any
	seen  chan struct{} // ticks on every line
	done  chan struct{}
}

func startServe(t *testing.T, dir string) *served {
	t.Helper()
	s := &served{t: t, seen: make(chan struct{}, 1), done: make(chan struct{})}
	s.cmd = exec.Command(ckmBin, "serve", "--config", filepath.Join(dir, "config.yaml"), "--log-format", "json", "--listen", "127.0.0.1:0")
	stderr, err := s.cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, s.cmd.Start())
	go func() {
		defer close(s.done)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var line map[string]any
			if json.Unmarshal(sc.Bytes(), &line) != nil {
				line = map[string]any{"msg": sc.Text()}
			}
			s.mu.Lock()
			s.lines = append(s.lines, line)
			s.mu.Unlock()
			select {
			case s.seen <- struct{}{}:
			default:
			}
		}
		io.Copy(io.Discard, stderr)
	}()
	t.Cleanup(func() { _ = s.cmd.Process.Kill(); <-s.done; _ = s.cmd.Wait() })
	return s
}

// waitFor returns the first log line from index from on that matches, waiting up to limit.
func (s *served) waitFor(from int, limit time.Duration, match func(map[string]any) bool) (map[string]any, int) {
	s.t.Helper()
	deadline := time.After(limit)
	for {
		s.mu.Lock()
		for i := from; i < len(s.lines); i++ {
			if match(s.lines[i]) {
				line := s.lines[i]
				s.mu.Unlock()
				return line, i
			}
		}
		s.mu.Unlock()
		select {
		case <-s.seen:
		case <-s.done:
			s.t.Fatalf("ckm serve exited early; log:\n%s", s.log())
		case <-deadline:
			s.t.Fatalf("no matching log line within %s; log:\n%s", limit, s.log())
		}
	}
}

func (s *served) log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	for _, l := range s.lines {
		j, _ := json.Marshal(l)
		b.Write(append(j, '\n'))
	}
	return b.String()
}

func (s *served) count(msg string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, l := range s.lines {
		if l["msg"] == msg {
			n++
		}
	}
	return n
}

// terminate sends SIGTERM and returns the exit code.
func (s *served) terminate() int {
	require.NoError(s.t, s.cmd.Process.Signal(syscall.SIGTERM))
	<-s.done
	err := s.cmd.Wait()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		s.t.Fatal(err)
	}
	return 0
}

func utcTimes(ts []time.Time) []time.Time {
	out := make([]time.Time, len(ts))
	for i, t := range ts {
		out[i] = t.UTC()
	}
	return out
}

func readManifest(t *testing.T, dir string) *publish.Manifest {
	t.Helper()
	m, err := publish.ReadManifest(filepath.Join(dir, "publish", "latest"))
	require.NoError(t, err)
	require.NotNil(t, m)
	return m
}

func msgIs(msg string) func(map[string]any) bool {
	return func(l map[string]any) bool { return l["msg"] == msg }
}

// serveConfig is the shipped sample's config with a schedule for the nightly pipeline.
func serveConfig(t *testing.T, dir, schedule, catchUp string) {
	t.Helper()
	cfg, err := os.ReadFile(filepath.Join(testutil.RepoRoot(), "config.yaml"))
	require.NoError(t, err)
	text := regexp.MustCompile(`(?m)^    schedule: .*$`).ReplaceAllString(string(cfg), fmt.Sprintf("    schedule: %q\n    overlap: skip", schedule))
	text = regexp.MustCompile(`(?m)^    catch_up: .*$`).ReplaceAllString(text, "    catch_up: "+catchUp)
	require.Contains(t, text, fmt.Sprintf("schedule: %q", schedule))
	require.Contains(t, text, "catch_up: "+catchUp)
	text = strings.ReplaceAll(text, "${CKM_WAREHOUSE:-data/ckm.duckdb}", "ckm.duckdb")
	text = strings.ReplaceAll(text, "${CKM_DATA:-data/sample}", filepath.Join(testutil.RepoRoot(), "data", "sample"))
	text += "serve:\n  grace_period: 30s\n"
	require.NoError(t, os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(text), 0o644))
}

type runRow struct {
	id, status, errMsg string
	scheduledFor       time.Time
	started, finished  time.Time
}

func scheduledRuns(t *testing.T, dir string) []runRow {
	t.Helper()
	w, err := warehouse.Open(context.Background(), warehouse.Options{Path: filepath.Join(dir, "ckm.duckdb"), ReadOnly: true, LockWait: time.Minute})
	require.NoError(t, err)
	defer w.Close()
	rows, err := w.DB().Query(`SELECT run_id, status, coalesce(error, ''), scheduled_for, started_at, coalesce(finished_at, started_at)
		FROM pipeline_runs WHERE trigger = 'schedule' ORDER BY started_at`)
	require.NoError(t, err)
	defer rows.Close()
	var out []runRow
	for rows.Next() {
		var r runRow
		require.NoError(t, rows.Scan(&r.id, &r.status, &r.errMsg, &r.scheduledFor, &r.started, &r.finished))
		out = append(out, r)
	}
	require.NoError(t, rows.Err())
	return out
}

// SIGKILL in the middle of a scheduled run leaves the published and stored outputs as they
// were; the restarted serve marks the run abandoned and, with catch_up: all, runs every time
// missed (the killed one included) exactly once.
func TestServeKilledMidRunCatchesUpAfterRestart(t *testing.T) {
	dir := t.TempDir()
	serveConfig(t, dir, "*/3 * * * * *", "all")
	var (
		asOf     string
		before   outputState
		manifest *publish.Manifest
		killedAt time.Time
		runs     []runRow
	)
	for attempt := 0; ; attempt++ {
		// A run on the sample takes about a second: on a loaded machine it can end before the
		// SIGKILL lands, and then there is nothing to catch up. Try again with a new serve.
		require.Less(t, attempt, 3, "every run ended before SIGKILL landed")
		s := startServe(t, dir)
		first, i := s.waitFor(0, 60*time.Second, msgIs("run succeeded"))
		asOf = first["as_of"].(string)
		before = readState(t, dir, asOf) // opens read-only between runs; serve waits for it if needed
		manifest = readManifest(t, dir)

		// Kill the next run in the middle of its work.
		started, i := s.waitFor(i+1, 30*time.Second, msgIs("scheduled run starting"))
		s.waitFor(i+1, 30*time.Second, func(l map[string]any) bool { return l["msg"] == "step started" && l["step"] == "load shop_orders" })
		require.NoError(t, s.cmd.Process.Kill())
		<-s.done
		_ = s.cmd.Wait()
		var err error
		killedAt, err = time.Parse(time.RFC3339, started["scheduled_for"].(string))
		require.NoError(t, err)
		runs = scheduledRuns(t, dir)
		if runs[len(runs)-1].status != "succeeded" {
			break
		}
		t.Logf("the run for %s ended before the kill landed: again", killedAt)
	}

	after := readState(t, dir, asOf)
	require.Equal(t, before.hash, after.hash, "no partial output after SIGKILL")
	require.Equal(t, manifest.RunID, readManifest(t, dir).RunID, "nothing half-published")
	last := runs[len(runs)-1]
	require.Equal(t, "running", last.status, "the killed run")
	require.Equal(t, killedAt, last.scheduledFor.UTC())
	lastDone := runs[len(runs)-2].scheduledFor

	// At least one more scheduled time passes while serve is down.
	missed, err := scheduler.Parse("*/3 * * * * *", time.UTC)
	require.NoError(t, err)
	for next := missed.Next(killedAt); !time.Now().After(next); {
		time.Sleep(time.Until(next) + 10*time.Millisecond)
	}
	restart := time.Now()
	s2 := startServe(t, dir)
	line, _ := s2.waitFor(0, 30*time.Second, msgIs("catching up missed scheduled runs"))
	require.Equal(t, "all", line["policy"])
	want := missed.Between(lastDone, restart)
	// The killed time, one missed while down, and any the busy first serve skipped in between.
	require.GreaterOrEqual(t, len(want), 2)
	require.Contains(t, utcTimes(want), killedAt)
	// Wait until the last caught-up time has run, then stop gracefully.
	_, i := s2.waitFor(0, 60*time.Second, func(l map[string]any) bool {
		return l["msg"] == "scheduled run starting" && l["scheduled_for"] == want[len(want)-1].UTC().Format(time.RFC3339)
	})
	s2.waitFor(i+1, 60*time.Second, msgIs("run succeeded"))
	require.Zero(t, s2.terminate(), "SIGTERM ends serve with exit 0")

	runs = scheduledRuns(t, dir)
	byTime := map[time.Time][]runRow{}
	for _, r := range runs {
		byTime[r.scheduledFor.UTC()] = append(byTime[r.scheduledFor.UTC()], r)
		require.NotEqual(t, "running", r.status, "no run left running")
	}
	killed := byTime[killedAt]
	require.Len(t, killed, 2, "the killed run and its catch-up")
	require.Equal(t, "failed", killed[0].status)
	require.True(t, strings.HasPrefix(killed[0].errMsg, "abandoned: "), killed[0].errMsg)
	for _, at := range want {
		var ok int
		for _, r := range byTime[at.UTC()] {
			if r.status == "succeeded" {
				ok++
			}
		}
		require.Equal(t, 1, ok, "missed time %s ran exactly once", at.UTC())
	}
	final := readState(t, dir, asOf)
	require.Equal(t, before.hash, final.hash, "same data, same result")
	require.NotEqual(t, manifest.RunID, readManifest(t, dir).RunID, "the catch-up runs published")
}

// Two serve processes on one warehouse: every scheduled time runs once, never two runs at a
// time, and the one that finds a time done says so. Its health and metrics endpoints answer.
func TestTwoServesNeverRunATimeTwice(t *testing.T) {
	dir := t.TempDir()
	serveConfig(t, dir, "*/2 * * * * *", "none")
	a, b := startServe(t, dir), startServe(t, dir)
	addr, _ := a.waitFor(0, 30*time.Second, msgIs("serving"))
	// Both fire at every time; whichever gets the warehouse second finds the time done.
	const alreadyRan = "scheduled time already ran (another ckm serve on this warehouse?): not running it again"
	until := func(cond func() bool) {
		deadline := time.After(2 * time.Minute)
		for !cond() {
			select {
			case <-a.seen:
			case <-b.seen:
			case <-deadline:
				t.Fatalf("not within 2 minutes; logs:\n%s\n%s", a.log(), b.log())
			}
		}
	}
	until(func() bool {
		return a.count("run succeeded")+b.count("run succeeded") >= 4 && a.count(alreadyRan)+b.count(alreadyRan) >= 1
	})

	base := "http://" + addr["listen"].(string)
	for path, want := range map[string]string{"/healthz": "ok", "/readyz": "nightly: next ", "/metrics": `ckm_runs_total{pipeline="nightly",status="succeeded",trigger="schedule"}`} {
		resp, err := http.Get(base + path)
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode, path)
		require.Contains(t, string(body), want, path)
	}
	require.Zero(t, a.terminate())
	require.Zero(t, b.terminate())

	runs := scheduledRuns(t, dir)
	require.GreaterOrEqual(t, len(runs), 4)
	seen := map[time.Time]string{}
	for i, r := range runs {
		at := r.scheduledFor.UTC()
		require.NotContains(t, seen, at, "time %s ran twice (runs %s and %s)", at, seen[at], r.id)
		seen[at] = r.id
		require.Equal(t, "succeeded", r.status, r.errMsg) // a run in progress at SIGTERM finishes within the grace period
		if i > 0 {
			require.False(t, r.started.Before(runs[i-1].finished), "runs %s and %s overlap", runs[i-1].id, r.id)
		}
	}
}

// A freshly started serve exposes every series of each scheduled pipeline, at 0, before its
// first run: Prometheus' rate() and absent() alerts need them to exist.
func TestAFreshServeShowsItsMetricsAtZero(t *testing.T) {
	dir := t.TempDir()
	serveConfig(t, dir, "0 0 1 1 *", "none") // next New Year: no run during the test
	s := startServe(t, dir)
	addr, _ := s.waitFor(0, 30*time.Second, msgIs("serving"))
	resp, err := http.Get("http://" + addr["listen"].(string) + "/metrics")
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	for _, series := range []string{
		`ckm_run_in_progress{pipeline="nightly"} 0`,
		`ckm_runs_total{pipeline="nightly",status="succeeded",trigger="schedule"} 0`,
		`ckm_runs_total{pipeline="nightly",status="failed",trigger="schedule"} 0`,
		`ckm_rows_out_total{pipeline="nightly"} 0`,
		`ckm_scheduled_runs_skipped_total{pipeline="nightly",reason="overlap"} 0`,
		`ckm_scheduled_runs_skipped_total{pipeline="nightly",reason="already_ran"} 0`,
		`ckm_rows_in_total{pipeline="nightly",source="shop_orders"} 0`,
		`ckm_dead_letters_total{pipeline="nightly",source="shop_orders"} 0`,
	} {
		require.Contains(t, string(body), series+"\n")
	}
	require.Zero(t, s.terminate(), s.log())
}

// SIGTERM during a run: with a grace period the run finishes; without one it is cancelled,
// rolls back and is recorded as interrupted. Either way serve exits 0 and the outputs are whole.
func TestServeSIGTERMFinishesOrRollsBackTheRun(t *testing.T) {
	dir := t.TempDir()
	serveConfig(t, dir, "*/3 * * * * *", "none")
	stopMidRun := func() (runRow, map[string]any) {
		s := startServe(t, dir)
		started, i := s.waitFor(0, 60*time.Second, msgIs("scheduled run starting"))
		s.waitFor(i+1, 30*time.Second, func(l map[string]any) bool { return l["msg"] == "step started" && l["step"] == "load shop_orders" })
		require.Zero(t, s.terminate(), "exit 0 after SIGTERM")
		runs := scheduledRuns(t, dir)
		last := runs[len(runs)-1]
		require.Equal(t, started["scheduled_for"], last.scheduledFor.UTC().Format(time.RFC3339))
		return last, started
	}
	finished, _ := stopMidRun()
	require.Equal(t, "succeeded", finished.status, "the run finished within the 30s grace period")
	before := readState(t, dir, readManifest(t, dir).AsOf)

	cfg, err := os.ReadFile(filepath.Join(dir, "config.yaml"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(strings.Replace(string(cfg), "grace_period: 30s", "grace_period: 1ms", 1)), 0o644))
	interrupted, _ := stopMidRun()
	require.Equal(t, "failed", interrupted.status)
	require.True(t, strings.HasPrefix(interrupted.errMsg, "interrupted: "), interrupted.errMsg)
	require.Equal(t, before.hash, readState(t, dir, readManifest(t, dir).AsOf).hash, "rolled back: previous outputs intact")
}
