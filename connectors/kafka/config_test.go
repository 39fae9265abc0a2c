package kafka_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ckm-dev/ckm/config"
)

func TestConfigProblemsNameTheirKeysAndLines(t *testing.T) {
	body := `sources:
  orders:
    table: orders
    unknown_fields: maybe
    kafka:
      topics: [orders]
      start: yesterday
      batch_bytes: lots
      flush_interval: 10 parsecs
      sasl: {mechanism: GSSAPI}
      tls: {cert_file: client.pem}
    mapping: {order_id: id, customer_id: cust, order_ts: ts, amount: amt, status: {const: completed}}
`
	path := filepath.Join(t.TempDir(), "config.yaml")
	require.NoError(t, os.WriteFile(path, []byte(body), 0o644))
	_, err := config.Load(path)
	problems, ok := config.ErrProblems(err)
	require.True(t, ok, "got %v", err)
	got := problems.Error()
	for _, want := range []string{
		"sources.orders.unknown_fields: unknown policy maybe (hint: one of ignore, keep, fail)",
		"sources.orders.kafka.brokers: is required",
		`:7: sources.orders.kafka.start: cannot read "yesterday"`,
		`sources.orders.kafka.batch_bytes: cannot read "lots" as a size`,
		`sources.orders.kafka.flush_interval: cannot read "10 parsecs" as a duration`,
		"sources.orders.kafka.sasl.mechanism: unknown mechanism GSSAPI",
		"sources.orders.kafka.sasl: a SASL mechanism needs username and password_env",
		"sources.orders.kafka.tls: cert_file and key_file go together",
		"sources.orders.kafka.tls.cert_file:",
	} {
		require.Contains(t, got, want)
	}
}
