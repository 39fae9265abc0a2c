package kafka_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ckm-dev/ckm/internal/devkafka"
	"github.com/ckm-dev/ckm/internal/testutil"
)

// An order's lines that batches split (batch_size 2) add up in the stored order, as they do in
// one batch; a line that arrives in a later run adds to it too: a partition is one stream, and
// records sharing an order_id in one stream are lines of one order. Worked by hand, and
// against the same messages read in one batch.
func TestOrderLinesAddUpAcrossBatchesAndRuns(t *testing.T) {
	line := func(inv string, amt float64) devkafka.Message {
		return devkafka.Message{Value: fmt.Appendf(nil, `{"id": %q, "cust": "C1", "ts": "2026-01-02T00:00:00Z", "amt": %g}`, inv, amt)}
	}
	b, err := devkafka.Start(devkafka.Options{Topics: map[string]int32{"orders": 1}})
	require.NoError(t, err)
	t.Cleanup(b.Close)
	p := devkafka.NewProducer(b.Addr)
	defer p.Close()
	require.NoError(t, p.Produce(context.Background(), "orders", []devkafka.Message{line("I1", 1), line("I2", 10), line("I1", 2), line("I1", 4), line("I3", 0.5)}))
	open := func(batchSize int) *testutil.Env {
		return testutil.OpenYAML(t, t.TempDir(), fmt.Sprintf(`warehouse: {path: ckm.duckdb, threads: 2}
sources:
  orders:
    table: orders
    rollup_lines: true
    kafka: {brokers: ["%s"], topics: [orders], batch_size: %d}
    mapping: {order_id: id, customer_id: cust, order_ts: ts, amount: amt, status: {const: completed}}
`, b.Addr, batchSize))
	}
	ingest := func(e *testutil.Env) int64 {
		res, err := e.Runner().Ingest(context.Background(), "orders", false)
		require.NoError(t, err)
		require.Equal(t, res.Read, res.Loaded+res.Collapsed+res.DeadLettered+res.Skipped)
		return res.Collapsed
	}
	const orders = `SELECT order_id, amount || ' ' || _position FROM orders`
	batched := open(2)
	require.EqualValues(t, 2, ingest(batched), "I1's second and third lines")
	want := map[string]string{"I1": "7.0 orders/0@0", "I2": "10.0 orders/0@1", "I3": "0.5 orders/0@4"}
	require.Equal(t, want, testutil.Pairs(t, batched.Warehouse.DB(), orders))
	whole := open(1000)
	ingest(whole)
	require.Equal(t, testutil.Pairs(t, whole.Warehouse.DB(), orders), testutil.Pairs(t, batched.Warehouse.DB(), orders))

	require.NoError(t, p.Produce(context.Background(), "orders", []devkafka.Message{line("I1", 0.25)}))
	require.EqualValues(t, 1, ingest(batched))
	want["I1"] = "7.25 orders/0@0"
	require.Equal(t, want, testutil.Pairs(t, batched.Warehouse.DB(), orders))
	require.Empty(t, testutil.Pairs(t, batched.Warehouse.DB(), `SELECT order_id, _position FROM orders_superseded`))
}
