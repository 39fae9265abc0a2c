package kafka_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"

	"github.com/ckm-dev/ckm/config"
	"github.com/ckm-dev/ckm/internal/devkafka"
	"github.com/ckm-dev/ckm/internal/testutil"
	"github.com/ckm-dev/ckm/pipelines"
)

// A message the mapping dead-lettered is kept with its key, timestamp and coordinates, so that
// once the mapping is fixed it loads as it would have, from the dead letter alone: the topic's
// retention may have dropped it, and the broker is not asked (here it cannot be reached). A
// message still bad becomes a dead letter anew in place of the old; replaying again doubles
// nothing; a message the connector could not hand over (not UTF-8) stays as it is.
func TestDeadLettersAreReplayedAfterTheMappingIsFixed(t *testing.T) {
	b, err := devkafka.Start(devkafka.Options{Topics: map[string]int32{"orders": 1}})
	require.NoError(t, err)
	t.Cleanup(b.Close)
	const source = `warehouse: {path: ckm.duckdb, threads: 2}
max_bad_ratio: 0.9
sources:
  orders:
    table: orders
    kafka: {brokers: ["%s"], topics: [orders], connect_timeout: 2s}
    %s
    mapping:
      order_id: id
      customer_id: {expr: "kafka_key"}
      order_ts: {expr: "coalesce(TRY_CAST(json_extract_string(_doc, '$.ts') AS TIMESTAMPTZ), kafka_timestamp)"}
      amount: amt
      status: {const: completed}
pipelines:
  p: {transforms: [rfm]}
`
	e := testutil.OpenYAML(t, t.TempDir(), fmt.Sprintf(source, b.Addr, ""))
	p := devkafka.NewProducer(b.Addr)
	defer p.Close()
	require.NoError(t, p.Produce(context.Background(), "orders", []devkafka.Message{
		{Key: []byte("C1"), Value: []byte(`{"id": "A1", "ts": "2026-01-02T00:00:00Z", "amt": 2}`)},
		{Key: []byte("C2"), Value: []byte(`{"id": "B1", "amt": "1,5"}`)}, // a decimal comma; its time is the message's
		{Key: []byte("C3"), Value: []byte(`{"id": "B2", "ts": "2026-01-03T00:00:00Z", "amt": "n/a"}`)},
		{Key: []byte("C4"), Value: []byte("\xff\xfe")},
	}))
	res, err := e.Runner().Ingest(context.Background(), "orders", false)
	require.NoError(t, err)
	require.EqualValues(t, []int64{4, 1, 3}, []int64{res.Read, res.Loaded, res.DeadLettered})

	// The mapping is fixed; the broker is gone from the config.
	path := filepath.Join(t.TempDir(), "config.yaml")
	require.NoError(t, os.WriteFile(path, fmt.Appendf(nil, source, "127.0.0.1:1", `decimal_separator: ","`), 0o644))
	cfg, err := config.Load(path)
	require.NoError(t, err)
	fixed := &pipelines.Runner{Config: cfg, Warehouse: e.Warehouse, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for round, want := range [][]int64{{2, 1, 1}, {1, 0, 1}} {
		res, err = fixed.ReplayDeadLetters(context.Background(), "orders")
		require.NoError(t, err, "round %d", round)
		require.EqualValues(t, want, []int64{res.Read, res.Loaded, res.DeadLettered}, "round %d: read, loaded, dead letters", round)
		require.Equal(t, map[string]string{"A1": "C1 2.0 orders/0@0", "B1": "C2 1.5 orders/0@1"},
			testutil.Pairs(t, e.Warehouse.DB(), `SELECT order_id, customer_id || ' ' || amount || ' ' || _position FROM orders`), "round %d", round)
		require.Equal(t, map[string]string{"orders/0@2": "amount: cannot read 'n/a' as a number", "orders/0@3": "payload is not valid UTF-8 (byte 0xFF at offset 0)"},
			testutil.Pairs(t, e.Warehouse.DB(), `SELECT position, reason FROM dead_letters WHERE superseded_by IS NULL`), "round %d: one current dead letter a message", round)
	}
	var superseded int
	require.NoError(t, e.Warehouse.DB().QueryRow(`SELECT count(*) FROM dead_letters WHERE superseded_by IS NOT NULL`).Scan(&superseded))
	require.Equal(t, 3, superseded, "B1 once, B2 twice")

	// B1's time is its message's, as Kafka keeps it.
	var loaded time.Time
	require.NoError(t, e.Warehouse.DB().QueryRow(`SELECT order_ts FROM orders WHERE order_id = 'B1'`).Scan(&loaded))
	fetched, err := (&kafka.Client{Addr: kafka.TCP(b.Addr), Transport: &kafka.Transport{}}).Fetch(context.Background(),
		&kafka.FetchRequest{Topic: "orders", Partition: 0, Offset: 1, MaxBytes: 1 << 20, MaxWait: 100 * time.Millisecond})
	require.NoError(t, err)
	rec, err := fetched.Records.ReadRecord()
	for err == nil && rec.Offset < 1 { // a fetch starts at its record batch's first offset
		rec, err = fetched.Records.ReadRecord()
	}
	require.NoError(t, err)
	require.Equal(t, int64(1), rec.Offset)
	require.True(t, rec.Time.Equal(loaded), "order_ts %s, message time %s", loaded, rec.Time)
}

// A replay of many dead letters (a mapping mistake dead-letters every message for days) maps
// them a batch of 100,000 at a time, each its own transaction, loading and superseding each
// once.
func TestManyDeadLettersAreReplayedInBatches(t *testing.T) {
	const letters = 250_000
	e := testutil.OpenYAML(t, t.TempDir(), `warehouse: {path: ckm.duckdb, threads: 2}
sources:
  orders:
    table: orders
    kafka: {brokers: ["127.0.0.1:1"], topics: [orders], connect_timeout: 2s}
    mapping: {order_id: id, customer_id: {expr: "kafka_key"}, order_ts: ts, amount: amt, status: {const: completed}}
pipelines:
  p: {transforms: [rfm]}
`)
	// As the mapping keeps a message it dead-letters: the payload, and its other fields as meta.
	_, err := e.Warehouse.DB().Exec(`INSERT INTO dead_letters (run_id, source, position, reason, payload, received_at, stream, meta)
		SELECT 'earlier', 'orders', 'orders/0@' || i, 'amount: cannot read ''1,5'' as a number',
			json_object('id', 'O' || i, 'ts', '2026-01-02T00:00:00Z', 'amt', i % 50)::VARCHAR, now(), 'orders/0',
			json_object('kafka_topic', 'orders', 'kafka_partition', 0, 'kafka_offset', i, 'kafka_key', 'C' || (i % 1000),
				'kafka_timestamp', '2026-01-02 00:00:00+00', 'kafka_key_unreadable', false)::VARCHAR
		FROM range(?) t(i)`, letters)
	require.NoError(t, err)
	var log strings.Builder
	r := &pipelines.Runner{Config: e.Config, Warehouse: e.Warehouse, Log: slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	res, err := r.ReplayDeadLetters(context.Background(), "orders")
	require.NoError(t, err)
	require.EqualValues(t, []int64{letters, letters, 0}, []int64{res.Read, res.Loaded, res.DeadLettered})
	require.Equal(t, 3, strings.Count(log.String(), `msg="batch committed"`), "100,000, 100,000 and 50,000")
	var orders, distinct, current int
	require.NoError(t, e.Warehouse.DB().QueryRow(`SELECT count(*), count(DISTINCT _position), (SELECT count(*) FROM dead_letters WHERE superseded_by IS NULL) FROM orders`).
		Scan(&orders, &distinct, &current))
	require.Equal(t, []int{letters, letters, 0}, []int{orders, distinct, current})
}
