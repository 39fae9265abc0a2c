package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ckm-dev/ckm/internal/devkafka"
	"github.com/ckm-dev/ckm/warehouse"
)

// SIGKILLed `ckm ingest` processes never leave their consumer group or finish their batch; each
// restart must still resume exactly where the last DuckDB commit ended.
func TestKilledKafkaIngestResumesExactlyOnce(t *testing.T) {
	const n, partitions = 100_000, 4
	b, err := devkafka.Start(devkafka.Options{Topics: map[string]int32{"orders": partitions}})
	require.NoError(t, err)
	defer b.Close()
	p := devkafka.NewProducer(b.Addr)
	require.NoError(t, p.Produce(context.Background(), "orders", devkafka.Orders(0, n)))
	require.NoError(t, p.Close())

	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(fmt.Sprintf(`warehouse: {path: ckm.duckdb, threads: 2}
sources:
  orders:
    table: orders
    kafka: {brokers: ["%s"], topics: [orders], batch_size: 3000}
    mapping: {order_id: id, customer_id: cust, order_ts: ts, amount: amt, status: {const: completed}}
pipelines:
  nightly: {transforms: [rfm]}
`, b.Addr)), 0o644))

	rng := rand.New(rand.NewPCG(3, 5))
	for kill := range 5 {
		// Killed right after the k-th committed batch (before its group commit), or mid-batch.
		commits := 1 + rng.IntN(3)
		cmd := exec.Command(ckmBin, "ingest", "-v", "--config", filepath.Join(dir, "config.yaml"))
		stderr, err := cmd.StderrPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		seen := 0
		for sc.Scan() {
			line := sc.Text()
			if kill%2 == 0 && strings.Contains(line, `msg="batch committed"`) {
				seen++
			}
			if kill%2 == 1 && strings.Contains(line, `msg="batch step" `) && strings.Contains(line, "step=map") {
				seen++ // mapped, not yet committed
			}
			if seen == commits {
				require.NoError(t, cmd.Process.Kill())
				break
			}
		}
		io.Copy(io.Discard, stderr)
		cmd.Wait()
		require.Equal(t, commits, seen, "kill %d: the ingest ended before it was killed", kill)
	}
	code, out, errOut := ckm("ingest", "--config", filepath.Join(dir, "config.yaml"))
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "orders")
	code, out, errOut = ckm("status", "--lag", "--config", filepath.Join(dir, "config.yaml"))
	require.Equal(t, 0, code, errOut)
	for p := range partitions {
		require.Regexp(t, fmt.Sprintf(`orders/%d\s+(\d+)\s+\d+\s+0\n`, p), out, "nothing waits on partition %d", p)
	}

	w, err := warehouse.Open(context.Background(), warehouse.Options{Path: filepath.Join(dir, "ckm.duckdb"), ReadOnly: true})
	require.NoError(t, err)
	defer w.Close()
	var rows, ids, positions, stored, gaps int
	require.NoError(t, w.DB().QueryRow(`SELECT count(*), count(DISTINCT order_id), count(DISTINCT _position),
		(SELECT sum(next_offset) FROM ingest_offsets WHERE source = 'orders') FROM orders`).Scan(&rows, &ids, &positions, &stored))
	require.Equal(t, n, rows, "every message once")
	require.Equal(t, n, ids)
	require.Equal(t, n, positions, "each topic/partition@offset once")
	require.Equal(t, n, stored, "stored offsets are the partitions' ends")
	// Per partition the loaded offsets are exactly 0 … end-1: none skipped.
	require.NoError(t, w.DB().QueryRow(`SELECT count(*) FROM (
		SELECT split_part(_position, '@', 1) AS p, max(CAST(split_part(_position, '@', 2) AS BIGINT)) + 1 AS top, count(*) AS c
		FROM orders GROUP BY p) WHERE top <> c`).Scan(&gaps))
	require.Zero(t, gaps)
}

// A topic deleted and created again: `ckm ingest` fails saying how to go on, `ckm status --lag`
// shows the partition past its end, and `ckm ingest --restart` reads it as never read.
func TestARecreatedTopicIsShownAndRestartedFromTheCommandLine(t *testing.T) {
	b, err := devkafka.Start(devkafka.Options{Topics: map[string]int32{"orders": 1}})
	require.NoError(t, err)
	defer b.Close()
	p := devkafka.NewProducer(b.Addr)
	defer p.Close()
	require.NoError(t, p.Produce(context.Background(), "orders", devkafka.Orders(0, 20)))
	dir := t.TempDir()
	config := filepath.Join(dir, "config.yaml")
	require.NoError(t, os.WriteFile(config, []byte(fmt.Sprintf(`warehouse: {path: ckm.duckdb, threads: 2}
sources:
  orders:
    table: orders
    kafka: {brokers: ["%s"], topics: [orders]}
    mapping: {order_id: id, customer_id: cust, order_ts: ts, amount: amt, status: {const: completed}}
pipelines:
  nightly: {transforms: [rfm]}
`, b.Addr)), 0o644))
	code, _, errOut := ckm("ingest", "--config", config)
	require.Equal(t, 0, code, errOut)

	require.NoError(t, b.Recreate(context.Background(), "orders", 1))
	require.NoError(t, p.Produce(context.Background(), "orders", devkafka.Orders(100, 105)))
	code, _, errOut = ckm("ingest", "--config", config)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "partition orders/0: the stored offset 20 is past the partition's end 5")
	code, out, errOut := ckm("status", "--lag", "--config", config)
	require.Equal(t, 0, code, errOut)
	require.Regexp(t, `orders\s+orders/0\s+20 past the end, see ckm ingest --source orders --restart orders/0\s+5\s+0\n`, out)

	code, out, errOut = ckm("ingest", "--config", config, "--source", "orders", "--restart", "orders/0")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "read 5, loaded 5")
	code, out, errOut = ckm("status", "--lag", "--config", config)
	require.Equal(t, 0, code, errOut)
	require.Regexp(t, `orders\s+orders/0\s+5\s+5\s+0\n`, out)
}
