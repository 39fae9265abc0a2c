package kafka_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"

	"github.com/ckm-dev/ckm/internal/devkafka"
	"github.com/ckm-dev/ckm/internal/testutil"
	"github.com/ckm-dev/ckm/warehouse"
)

// BenchmarkIngestVersusRawConsume measures Kafka → DuckDB ingest against the physical limit on
// the same broker, messages and process: kafka-go consuming and discarding them, both with its
// Reader and with the raw Fetch API the connector uses (the faster is the limit). Run with
//
//	go test -tags duckdb_arrow -run '^$' -bench IngestVersusRawConsume -benchtime 3x ./connectors/kafka
//
// It reports messages per second for each and ingest as a fraction of the raw rate; and, as
// the DuckDB side's own limit, DuckDB's read_json of the same messages from a local file into
// a table (parsing JSON, no broker, no checks, no lineage).
func BenchmarkIngestVersusRawConsume(b *testing.B) {
	const messages, partitions = 300_000, 6
	broker, err := devkafka.Start(devkafka.Options{Topics: map[string]int32{"orders": partitions}})
	require.NoError(b, err)
	defer broker.Close()
	msgs := make([]devkafka.Message, messages)
	for i := range msgs {
		v, _ := json.Marshal(map[string]any{"order_id": fmt.Sprintf("O%09d", i), "customer_id": fmt.Sprintf("C%07d", i%50_000),
			"order_ts": time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Minute).Format(time.RFC3339),
			"amount":   float64(i%500) + 0.99, "quantity": 1 + i%3, "product_id": fmt.Sprintf("P%04d", i%2000), "category": "books", "status": "completed"})
		msgs[i] = devkafka.Message{Key: []byte(fmt.Sprintf("C%07d", i%50_000)), Value: v}
	}
	p := devkafka.NewProducer(broker.Addr)
	require.NoError(b, p.Produce(context.Background(), "orders", msgs))
	require.NoError(b, p.Close())

	lines := filepath.Join(b.TempDir(), "messages.jsonl")
	f, err := os.Create(lines)
	require.NoError(b, err)
	for _, m := range msgs {
		_, err = f.Write(append(m.Value, '\n'))
		require.NoError(b, err)
	}
	require.NoError(b, f.Close())

	var raw, reader, ingest, readJSON time.Duration
	b.ResetTimer()
	for range b.N {
		raw += timed(func() { require.Equal(b, messages, fetchAll(b, broker.Addr, partitions)) })
		reader += timed(func() { require.Equal(b, messages, readAll(b, broker.Addr, partitions)) })
		ingest += ingestAll(b, broker.Addr, messages)
		readJSON += readJSONAll(b, lines, messages)
	}
	rate := func(d time.Duration) float64 { return float64(messages*b.N) / d.Seconds() }
	limit := min(raw, reader)
	b.ReportMetric(rate(raw), "fetch_msgs/s")
	b.ReportMetric(rate(reader), "reader_msgs/s")
	b.ReportMetric(rate(ingest), "ingest_msgs/s")
	b.ReportMetric(limit.Seconds()/ingest.Seconds(), "ingest/raw")
	b.ReportMetric(rate(readJSON), "read_json_msgs/s")
	b.ReportMetric(limit.Seconds()/readJSON.Seconds(), "read_json/raw")
}

// readJSONAll loads the messages' values, written as JSON Lines to path, into a table of a
// fresh warehouse with DuckDB's read_json, and returns how long that took.
func readJSONAll(b *testing.B, path string, messages int) time.Duration {
	w, err := warehouse.Open(context.Background(), warehouse.Options{Path: filepath.Join(b.TempDir(), "ckm.duckdb")})
	require.NoError(b, err)
	defer w.Close()
	start := time.Now()
	_, err = w.DB().Exec(`CREATE TABLE messages AS SELECT * FROM read_json(?, format = 'newline_delimited')`, path)
	elapsed := time.Since(start)
	require.NoError(b, err)
	var n int
	require.NoError(b, w.DB().QueryRow(`SELECT count(*) FROM messages`).Scan(&n))
	require.Equal(b, messages, n)
	return elapsed
}

func timed(fn func()) time.Duration {
	start := time.Now()
	fn()
	return time.Since(start)
}

// fetchAll consumes every partition with kafka-go's Fetch API, reading and discarding each value.
func fetchAll(b *testing.B, addr string, partitions int) int {
	client := &kafka.Client{Addr: kafka.TCP(addr), Transport: &kafka.Transport{}}
	n := 0
	for part := range partitions {
		for offset := int64(0); ; {
			res, err := client.Fetch(context.Background(), &kafka.FetchRequest{Topic: "orders", Partition: part, Offset: offset,
				MinBytes: 1, MaxBytes: 16 << 20, MaxWait: 50 * time.Millisecond})
			require.NoError(b, err)
			read := 0
			for {
				r, err := res.Records.ReadRecord()
				if err != nil {
					break
				}
				if r.Offset >= offset {
					_, _ = io.Copy(io.Discard, r.Value)
					offset = r.Offset + 1
					read++
				}
			}
			n += read
			if offset >= res.HighWatermark {
				break
			}
		}
	}
	return n
}

// readAll consumes every partition with a kafka-go Reader, discarding each message.
func readAll(b *testing.B, addr string, partitions int) int {
	client := &kafka.Client{Addr: kafka.TCP(addr), Transport: &kafka.Transport{}}
	n := 0
	for part := range partitions {
		offs, err := client.ListOffsets(context.Background(), &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{"orders": {kafka.LastOffsetOf(part)}}})
		require.NoError(b, err)
		end := offs.Topics["orders"][0].LastOffset
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{addr}, Topic: "orders", Partition: part, MaxBytes: 16 << 20, MaxWait: 50 * time.Millisecond})
		for read := int64(0); read < end; read++ {
			_, err := r.ReadMessage(context.Background())
			require.NoError(b, err)
			n++
		}
		require.NoError(b, r.Close())
	}
	return n
}

// ingestAll loads every message into a fresh warehouse through the Kafka source and returns
// how long the ingest took (opening the warehouse is not part of it).
func ingestAll(b *testing.B, addr string, messages int) time.Duration {
	env := testutil.OpenYAML(b, b.TempDir(), fmt.Sprintf(`warehouse: {path: ckm.duckdb}
sources:
  orders:
    table: orders
    kafka: {brokers: ["%s"], topics: [orders], group: bench-%d}
    mapping: {order_id: order_id, customer_id: customer_id, order_ts: order_ts, amount: amount, quantity: quantity,
              product_id: product_id, category: category, status: status}
`, addr, time.Now().UnixNano()))
	start := time.Now()
	res, err := env.Runner().Ingest(context.Background(), "orders", false)
	elapsed := time.Since(start)
	require.NoError(b, err)
	require.EqualValues(b, messages, res.Loaded)
	return elapsed
}
