package kafka_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ckm-dev/ckm/connectors/conformance"
	_ "github.com/ckm-dev/ckm/connectors/kafka"
	"github.com/ckm-dev/ckm/internal/devkafka"
)

// fixture feeds the conformance suite through a real broker over TCP.
type fixture struct {
	broker *devkafka.Broker
	prod   *devkafka.Producer
}

func (h *fixture) Setup(t *testing.T, _ string) {
	b, err := devkafka.Start(devkafka.Options{Topics: map[string]int32{"orders": 3}})
	require.NoError(t, err)
	h.broker, h.prod = b, devkafka.NewProducer(b.Addr)
	t.Cleanup(func() {
		h.prod.Close()
		b.Close()
	})
}

func (h *fixture) SourceYAML() string {
	return fmt.Sprintf(`    table: orders
    kafka: {brokers: ["%s"], topics: [orders], connect_timeout: 5s, batch_size: 100, flush_interval: 200ms}
    mapping: {order_id: id, customer_id: cust, order_ts: ts, amount: amt, status: {const: completed}}`, h.broker.Addr)
}

func (h *fixture) Append(t *testing.T, orders []conformance.Order) {
	msgs := make([]devkafka.Message, len(orders))
	for i, o := range orders {
		v, err := json.Marshal(map[string]any{"id": o.ID, "cust": o.Customer, "ts": o.TS.Format(time.RFC3339), "amt": o.Amount})
		require.NoError(t, err)
		msgs[i] = devkafka.Message{Key: []byte(o.ID), Value: v}
	}
	require.NoError(t, h.prod.Produce(context.Background(), "orders", msgs))
}

// AppendBad produces malformed JSON, wrong types, missing keys and non-objects in turn.
func (h *fixture) AppendBad(t *testing.T, n int) {
	bad := []string{`{"id": "B1", "cust": "C1", "ts": "2026-01-02T00:00:00Z", "amt": 1`, // cut off
		`{"id": "B2", "cust": "C1", "ts": "2026-01-02T00:00:00Z", "amt": "lots"}`, // wrong type
		`{"id": "B3", "ts": "2026-01-02T00:00:00Z", "amt": 3}`,                    // no customer
		`[1, 2, 3]`}
	msgs := make([]devkafka.Message, n)
	for i := range msgs {
		msgs[i] = devkafka.Message{Value: []byte(bad[i%len(bad)])}
	}
	require.NoError(t, h.prod.Produce(context.Background(), "orders", msgs))
}

func TestConformance(t *testing.T) {
	conformance.Run(t, func() conformance.Fixture { return &fixture{} }, conformance.Options{})
}
