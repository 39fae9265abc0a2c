package kafka_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ckm-dev/ckm/internal/devkafka"
	"github.com/ckm-dev/ckm/internal/testutil"
)

// The sample data read through Kafka (examples/kafka) must give exactly what the same files
// read directly (config.yaml) give: the same rows, dead letters and scores.
func TestSampleThroughKafkaEqualsSampleFromFiles(t *testing.T) {
	root := testutil.RepoRoot()
	b, err := devkafka.Start(devkafka.Options{Topics: map[string]int32{"customers": 3, "orders": 3, "feedback": 3}})
	require.NoError(t, err)
	defer b.Close()
	p := devkafka.NewProducer(b.Addr)
	for topic, file := range map[string]string{"customers": "customers.csv.gz", "orders": "orders.csv.gz", "feedback": "feedback.jsonl.gz"} {
		msgs, err := devkafka.FileMessages(filepath.Join(root, "data", "sample", file), "customer_id")
		require.NoError(t, err)
		require.NoError(t, p.Produce(context.Background(), topic, msgs))
	}
	require.NoError(t, p.Close())
	t.Setenv("KAFKA_BROKERS", b.Addr)

	const summary = `SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM customers), (SELECT count(*) FROM feedback),
		(SELECT count(*) FROM dead_letters), (SELECT sum(hash(customer_id, round(clv, 6), value_tier, lifecycle_stage,
			rfm_cell, round(kksi, 9), is_key_source)) FROM customer_scores)`
	var got [2][5]any
	for i, cfg := range []string{filepath.Join(root, "examples", "kafka", "config.yaml"), filepath.Join(root, "config.yaml")} {
		env := testutil.Open(t, cfg)
		env.Run(t, "nightly", "2026-06-30")
		row := env.Warehouse.DB().QueryRow(summary)
		require.NoError(t, row.Scan(&got[i][0], &got[i][1], &got[i][2], &got[i][3], &got[i][4]))
	}
	require.NotZero(t, got[1][0])
	require.NotZero(t, got[1][3], "the sample's dirty records are dead-lettered both ways")
	require.Equal(t, got[1], got[0], "orders, customers, feedback, dead letters, score hash")
}
