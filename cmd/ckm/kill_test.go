package main

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ckm-dev/ckm/publish"
	"github.com/ckm-dev/ckm/warehouse"
)

// runSteps are the steps of a run of crashConfig's pipeline, in order; the run commits its
// outputs inside "write outputs".
var runSteps = []string{"load shop_orders", "load feedback_events", "score rfm", "score clv", "score value",
	"score knowledge", "write outputs", "publish for BI"}

var stepFinished = regexp.MustCompile(`msg="step finished" step="([^"]+)" elapsed=(\S+)`)

// runLogged runs `ckm run` to its end and returns how long each step took.
func runLogged(t *testing.T, dir, asOf string) map[string]time.Duration {
	out, err := exec.Command(ckmBin, "run", "--config", filepath.Join(dir, "config.yaml"), "--as-of", asOf).CombinedOutput()
	require.NoError(t, err, string(out))
	took := map[string]time.Duration{}
	for _, m := range stepFinished.FindAllStringSubmatch(string(out), -1) {
		d, err := time.ParseDuration(m[2])
		require.NoError(t, err)
		took[m[1]] = d
	}
	return took
}

// killedRun is what a SIGKILLed `ckm run` had logged when it died.
type killedRun struct{ log string }

func (k killedRun) logged(msg, step string) bool {
	line := `msg="` + msg + `"`
	if step != "" {
		line += ` step="` + step + `"`
	}
	return strings.Contains(k.log, line)
}

// killDuring starts `ckm run` and SIGKILLs it delay after it logs that step started. The delay
// picks the kill point; nothing waits on it. The log is read to the end after the kill: it
// holds everything the process wrote before it died.
func killDuring(t *testing.T, dir, asOf, step string, delay time.Duration) killedRun {
	cmd := exec.Command(ckmBin, "run", "--config", filepath.Join(dir, "config.yaml"), "--as-of", asOf)
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	var (
		mu  sync.Mutex
		log strings.Builder
	)
	started := make(chan struct{})
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		signalled := false
		for sc.Scan() {
			mu.Lock()
			log.WriteString(sc.Text() + "\n")
			mu.Unlock()
			if !signalled && strings.Contains(sc.Text(), `msg="step started" step="`+step+`"`) {
				signalled = true
				close(started)
			}
		}
	}()
	select {
	case <-started:
		kill := time.AfterFunc(delay, func() { _ = cmd.Process.Kill() })
		<-read
		kill.Stop()
	case <-read:
	}
	_ = cmd.Wait()
	mu.Lock()
	defer mu.Unlock()
	k := killedRun{log: log.String()}
	require.True(t, k.logged("step started", step), "the run never reached step %q:\n%s", step, k.log)
	return k
}

// publishedRun checks that latest/ and the snapshot each show one complete run, and returns
// the run ids they show.
func publishedRun(t *testing.T, dir string) (latest, snapshot string) {
	m := readManifest(t, dir)
	scratch, err := warehouse.OpenScratch(context.Background())
	require.NoError(t, err)
	defer scratch.Close()
	for table, rows := range m.Rows {
		file := filepath.Join(dir, "publish", "latest", table+".parquet")
		var n, otherRuns int64
		runs := "count(*) FILTER (run_id <> $2)"
		if table == "customer_scores" { // the joined view has no run id of its own
			runs = "0 * length($2)"
		}
		q := `SELECT count(*), ` + runs + ` FROM read_parquet($1)`
		require.NoError(t, scratch.DB().QueryRow(q, file, m.RunID).Scan(&n, &otherRuns), file)
		require.Equal(t, rows, n, "latest/%s holds the rows its manifest says", table)
		require.Zero(t, otherRuns, "latest/%s holds only the manifest's run", table)
	}
	w, err := warehouse.Open(context.Background(), warehouse.Options{Path: filepath.Join(dir, "publish", publish.SnapshotFile), ReadOnly: true})
	require.NoError(t, err)
	defer w.Close()
	seen := readSnapshot(context.Background(), w)
	require.True(t, strings.HasPrefix(seen, "ok "), "the snapshot: %s", seen)
	return m.RunID, strings.Fields(seen)[2]
}

// SIGKILL at a random moment inside every step of a run — loading, each scoring step, writing
// the outputs, publishing — leaves the previous run's outputs (same run id, same content) until
// the moment the new run commits, and from then on exactly the new run's outputs; what is
// published is one complete run, the old or the new. A rerun gives identical results.
func TestKilledRunsLeavePreviousOutputsAndRerunsAreIdentical(t *testing.T) {
	dir := t.TempDir()
	code, _, stderr := ckm("generate", "--customers", "40000", "--seed", "5", "--out", filepath.Join(dir, "gen"))
	require.Zero(t, code, stderr)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(crashConfig), 0o644))
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "data"), 0o755))
	first, second := splitOrders(t, dir)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "data", "orders-1.csv"), first, 0o644))
	feedback, err := os.ReadFile(filepath.Join(dir, "gen", "feedback.jsonl"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "data", "feedback.jsonl"), feedback, 0o644))
	const asOf = "2026-06-30"
	runLogged(t, dir, asOf)
	committed := readState(t, dir, asOf)
	require.Greater(t, committed.rows, 1000)
	published, _ := publishedRun(t, dir)

	// New data arrives. What a complete run over it gives, and how long each of its steps takes,
	// comes from a copy of the warehouse and its files.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "data", "orders-2.csv"), second, 0o644))
	twin := t.TempDir()
	require.NoError(t, os.CopyFS(twin, os.DirFS(dir)))
	took := runLogged(t, twin, asOf)
	want := readState(t, twin, asOf)
	require.NotEqual(t, committed.hash, want.hash, "the new data changes the scores")
	secondOrders := strings.Count(string(second), "\n") - 1

	seed := uint64(time.Now().UnixNano())
	t.Logf("kill points from seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	var publishedRuns []string
	for _, step := range runSteps {
		require.Contains(t, took, step)
		delay := time.Duration(rng.Int64N(int64(took[step]) + 1))
		killed := killDuring(t, dir, asOf, step, delay)
		state := readState(t, dir, asOf)
		switch {
		case !killed.logged("step started", "write outputs"):
			require.Equal(t, committed.runID, state.runID, "killed %s into %q: the previous run's outputs", delay, step)
			require.Equal(t, committed.hash, state.hash, "killed %s into %q: the previous run's outputs, unchanged", delay, step)
		case killed.logged("run succeeded", ""):
			require.NotEqual(t, committed.runID, state.runID, "killed %s into %q after the commit: the new run's outputs", delay, step)
			require.Equal(t, want.hash, state.hash, "killed %s into %q after the commit: the new run's outputs, whole", delay, step)
		default: // killed around the commit: one run or the other, whole
			if state.runID == committed.runID {
				require.Equal(t, committed.hash, state.hash, "killed %s into %q", delay, step)
			} else {
				require.Equal(t, want.hash, state.hash, "killed %s into %q", delay, step)
			}
		}
		require.Contains(t, []int{committed.orders, committed.orders + secondOrders}, state.orders, "a file is loaded whole or not at all")
		if state.runID != committed.runID {
			publishedRuns = append(publishedRuns, state.runID)
		}
		committed = state

		latest, snapshot := publishedRun(t, dir)
		require.Contains(t, append(publishedRuns, published), latest, "killed %s into %q: latest/ shows a complete run", delay, step)
		require.Contains(t, append(publishedRuns, published), snapshot, "killed %s into %q: the snapshot shows a complete run", delay, step)
		landed := "inside"
		if killed.logged("step finished", step) {
			landed = "after"
		}
		t.Logf("killed %v into %q (of %v): %s the step", delay, step, took[step], landed)
	}
	require.Equal(t, committed.orders, want.orders, "the killed runs loaded the new file")

	// The next run completes and publishes; killed runs are closed as failed, not left running.
	runLogged(t, dir, asOf)
	final := readState(t, dir, asOf)
	require.Equal(t, want.hash, final.hash, "the same result as a fresh warehouse over the same files")
	latest, snapshot := publishedRun(t, dir)
	require.Equal(t, final.runID, latest)
	require.Equal(t, final.runID, snapshot)
	w, err := warehouse.Open(context.Background(), warehouse.Options{Path: filepath.Join(dir, "ckm.duckdb"), ReadOnly: true})
	require.NoError(t, err)
	var running, abandoned int
	require.NoError(t, w.DB().QueryRow(`SELECT count(*) FILTER (status = 'running'), count(*) FILTER (error LIKE 'abandoned%') FROM pipeline_runs`).Scan(&running, &abandoned))
	w.Close()
	require.Zero(t, running)
	killedBeforeCommit := slices.Index(runSteps, "write outputs")
	require.GreaterOrEqual(t, abandoned, killedBeforeCommit)

	// A rerun gives identical results, and so does a fresh warehouse over the same files.
	runLogged(t, dir, asOf)
	require.Equal(t, final.hash, readState(t, dir, asOf).hash)
	fresh := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(fresh, "config.yaml"), []byte(crashConfig), 0o644))
	require.NoError(t, os.CopyFS(filepath.Join(fresh, "data"), os.DirFS(filepath.Join(dir, "data"))))
	runLogged(t, fresh, asOf)
	require.Equal(t, final.hash, readState(t, fresh, asOf).hash)
}

// A file connector writes temporary files while it reads (here, the piece of a large file being
// loaded). They go beside the warehouse, not to /tmp, and what a killed process left there the
// next one removes.
func TestAKilledIngestLeavesNoTemporaryFilesBehind(t *testing.T) {
	dir := t.TempDir()
	config := `warehouse: {path: ckm.duckdb, threads: 2}
timezone: UTC
sources:
  shop_orders:
    table: orders
    file: {paths: ["orders.csv"], batch_bytes: 64KiB}
    mapping: {order_id: order_id, customer_id: customer_id, order_ts: order_ts, amount: amount, status: {const: completed}}
pipelines:
  nightly: {transforms: [rfm]}
`
	require.NoError(t, os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(config), 0o644))
	var csv strings.Builder
	csv.WriteString("order_id,customer_id,order_ts,amount\n")
	const lines = 60_000 // about 2.3 MB: some 35 pieces
	for i := range lines {
		fmt.Fprintf(&csv, "O%06d,C%05d,2026-01-%02d 10:00:00,%d.25\n", i, i%5000, 1+i%28, i%900)
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "orders.csv"), []byte(csv.String()), 0o644))
	root := warehouse.ScratchRoot(filepath.Join(dir, "ckm.duckdb"))
	ingest := func() *exec.Cmd {
		return exec.Command(ckmBin, "ingest", "--config", filepath.Join(dir, "config.yaml"), "--source", "shop_orders", "-v")
	}

	// Killed once a piece has committed: the next one is being loaded from a file in scratch.
	cmd := ingest()
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	sc := bufio.NewScanner(stderr)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), `msg="batch committed"`) {
			require.NoError(t, cmd.Process.Kill())
			break
		}
	}
	_ = cmd.Wait()
	leftover, err := filepath.Glob(filepath.Join(root, fmt.Sprintf("%d-*", cmd.Process.Pid), "*", "*"))
	require.NoError(t, err)
	require.NotEmpty(t, leftover, "the killed process's temporary files are in the warehouse's scratch directory")

	out, err := ingest().CombinedOutput()
	require.NoError(t, err, string(out))
	require.NoDirExists(t, root, "the next ingest removed what the killed one left, its own, and the emptied directory")

	w, err := warehouse.Open(context.Background(), warehouse.Options{Path: filepath.Join(dir, "ckm.duckdb"), ReadOnly: true})
	require.NoError(t, err)
	defer w.Close()
	var orders, distinct int
	require.NoError(t, w.DB().QueryRow(`SELECT count(*), count(DISTINCT order_id) FROM orders`).Scan(&orders, &distinct))
	require.Equal(t, lines, orders, "every line loaded once, the killed run's pieces kept and the rest resumed")
	require.Equal(t, lines, distinct)
}
