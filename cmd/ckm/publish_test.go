package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ckm-dev/ckm/internal/testutil"
	"github.com/ckm-dev/ckm/publish"
	"github.com/ckm-dev/ckm/warehouse"
)

// snapshotReaderEnv makes the test binary a snapshot reader (see TestMain).
const snapshotReaderEnv = "CKM_TEST_SNAPSHOT_READER"

// readSnapshotsUntilStopped is the separate reader process: it opens the published snapshot
// read-only afresh for every read, as a BI tool's new connection does, until path+".stop"
// exists. Each read prints "ok <as_of> <run_id>" or "error …".
func readSnapshotsUntilStopped(path string) int {
	ctx := context.Background()
	for {
		if _, err := os.Stat(path + ".stop"); err == nil {
			return 0
		}
		w, err := warehouse.Open(ctx, warehouse.Options{Path: path, ReadOnly: true})
		if err != nil {
			fmt.Println("error open:", err)
			continue
		}
		fmt.Println(readSnapshot(ctx, w))
		w.Close()
	}
}

// readSnapshot checks one consistent view: every output holds only the snapshot's as_of and
// exactly the rows the snapshot says it published.
func readSnapshot(ctx context.Context, w *warehouse.Warehouse) string {
	tx, err := w.DB().BeginTx(ctx, nil)
	if err != nil {
		return "error begin: " + err.Error()
	}
	defer tx.Rollback()
	var asOf, runID string
	if err := tx.QueryRow(`SELECT as_of::VARCHAR, run_id FROM snapshot_info`).Scan(&asOf, &runID); err != nil {
		return "error info: " + err.Error()
	}
	for _, table := range publish.Tables {
		var rows, want, otherDates, otherRuns int64
		q := fmt.Sprintf(`SELECT count(*), count(*) FILTER (as_of::VARCHAR <> ?), (SELECT "rows" FROM snapshot_tables WHERE table_name = ?)
			FROM %s`, table)
		if err := tx.QueryRow(q, asOf, table).Scan(&rows, &otherDates, &want); err != nil {
			return "error " + table + ": " + err.Error()
		}
		if table != "customer_scores" {
			if err := tx.QueryRow(`SELECT count(*) FILTER (run_id <> ?) FROM `+table, runID).Scan(&otherRuns); err != nil {
				return "error " + table + ": " + err.Error()
			}
		}
		// The change tables of a pipeline's first as_of are empty: nothing to compare with.
		empty := rows == 0 && !slices.Contains(publish.ChangeTables, table)
		if rows != want || otherDates != 0 || otherRuns != 0 || empty {
			return fmt.Sprintf("error %s: %d rows (published %d), %d of another as_of, %d of another run", table, rows, want, otherDates, otherRuns)
		}
	}
	return "ok " + asOf + " " + runID
}

// A separate process reads the published snapshot in a loop while runs publish, opening it
// for every read: every read succeeds and sees exactly one complete as_of, and the reader sees
// each publish land before the next run starts.
func TestSnapshotReaderSeesOneCompleteAsOfWhileRunsPublish(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("CKM_WAREHOUSE", filepath.Join(dir, "ckm.duckdb"))
	cfgPath := filepath.Join(testutil.RepoRoot(), "config.yaml")
	run := func(asOf string) {
		out, err := exec.Command(ckmBin, "run", "--config", cfgPath, "--as-of", asOf).CombinedOutput()
		require.NoError(t, err, string(out))
	}
	dates := []string{"2026-06-28", "2026-06-29", "2026-06-30"}
	run(dates[0])
	snapshot := filepath.Join(dir, "publish", publish.SnapshotFile)

	reader := exec.Command(os.Args[0], "-test.run=^$")
	reader.Env = append(os.Environ(), snapshotReaderEnv+"="+snapshot)
	stdout, err := reader.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, reader.Start())
	var (
		mu    sync.Mutex
		lines []string
	)
	read := make(chan string, 1)
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			mu.Lock()
			lines = append(lines, sc.Text())
			mu.Unlock()
			select {
			case read <- sc.Text():
			default:
			}
		}
	}()
	// sees waits until the reader has read asOf in the snapshot.
	sees := func(asOf string) {
		deadline := time.After(time.Minute)
		for {
			select {
			case l := <-read:
				if strings.HasPrefix(l, "ok "+asOf+" ") {
					return
				}
				require.True(t, strings.HasPrefix(l, "ok "), "reader saw: %s", l)
			case <-scanned:
				t.Fatalf("the reader stopped before it saw %s", asOf)
			case <-deadline:
				t.Fatalf("the reader did not see %s within a minute", asOf)
			}
		}
	}
	sees(dates[0])
	for _, d := range dates[1:] {
		run(d)
		sees(d)
	}
	require.NoError(t, os.WriteFile(snapshot+".stop", nil, 0o644))
	<-scanned
	require.NoError(t, reader.Wait())

	seen := map[string]int{}
	for _, l := range lines {
		require.True(t, strings.HasPrefix(l, "ok "), "reader saw: %s", l)
		seen[strings.Fields(l)[1]]++
	}
	for _, d := range dates {
		require.Contains(t, seen, d)
	}
	t.Logf("%d reads: %v", len(lines), seen)
}

// Backfill runs each date once, oldest first; a second backfill over a longer range resumes
// (skipping what succeeded); --force reruns and gives identical outputs.
func TestBackfillIsResumableAndIdempotent(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("CKM_WAREHOUSE", filepath.Join(dir, "ckm.duckdb"))
	cfg := filepath.Join(testutil.RepoRoot(), "config.yaml")
	code, out, stderr := ckm("backfill", "--config", cfg, "--from", "2026-06-26", "--to", "2026-06-27")
	require.Zero(t, code, stderr)
	require.Contains(t, out, "[1/2] 2026-06-26 succeeded")
	require.Contains(t, out, "[2/2] 2026-06-27 succeeded")
	hashes := map[string]string{}
	for _, d := range []string{"2026-06-26", "2026-06-27"} {
		hashes[d] = readState(t, dir, d).hash
	}

	code, out, stderr = ckm("backfill", "--config", cfg, "--from", "2026-06-26", "--to", "2026-06-29")
	require.Zero(t, code, stderr)
	require.Contains(t, out, "[1/4] 2026-06-26 skipped: succeeded before")
	require.Contains(t, out, "[2/4] 2026-06-27 skipped: succeeded before")
	require.Contains(t, out, "[4/4] 2026-06-29 succeeded")
	require.Contains(t, out, "backfill of nightly done: 2 runs")

	code, out, stderr = ckm("backfill", "--config", cfg, "--from", "2026-06-26", "--to", "2026-06-27", "--force")
	require.Zero(t, code, stderr)
	require.Contains(t, out, "backfill of nightly done: 2 runs")
	for d, h := range hashes {
		require.Equal(t, h, readState(t, dir, d).hash, "rerun of %s gives identical outputs", d)
	}

	code, _, stderr = ckm("backfill", "--config", cfg, "--from", "2026-06-29", "--to", "2026-06-26")
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "--to 2026-06-26 is before --from 2026-06-29")

	w, err := warehouse.Open(context.Background(), warehouse.Options{Path: filepath.Join(dir, "ckm.duckdb"), ReadOnly: true})
	require.NoError(t, err)
	defer w.Close()
	var runs, dates, backfills int
	require.NoError(t, w.DB().QueryRow(`SELECT count(*), count(DISTINCT as_of), count(*) FILTER (trigger = 'backfill') FROM pipeline_runs WHERE status = 'succeeded'`).Scan(&runs, &dates, &backfills))
	require.Equal(t, []int{6, 4, 6}, []int{runs, dates, backfills})
	var asOfs int
	require.NoError(t, w.DB().QueryRow(`SELECT count(DISTINCT as_of) FROM customer_rfm`).Scan(&asOfs))
	require.Equal(t, 4, asOfs, "one partition per date, none doubled")
	var perDate int
	require.NoError(t, w.DB().QueryRow(`SELECT max(n) FROM (SELECT count(*) / count(DISTINCT customer_id) AS n FROM customer_rfm GROUP BY as_of)`).Scan(&perDate))
	require.Equal(t, 1, perDate)

}
