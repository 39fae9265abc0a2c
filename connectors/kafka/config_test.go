package kafka_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ckm-dev/ckm/internal/testutil"
)

func TestConfigProblemsNameTheirKeysAndLines(t *testing.T) {
	body := `sources:
  orders:
    table: orders
    unknown_fields: maybe
    decimal_separator: ";"
    kafka:
      topics: [orders]
      start: yesterday
      batch_bytes: lots
      flush_interval: 10 parsecs
      sasl: {mechanism: GSSAPI}
      tls: {cert_file: client.pem}
    mapping: {order_id: id, customer_id: cust, order_ts: ts, amount: amt, status: {const: completed}}
`
	got := testutil.ConfigProblems(t, body)
	require.Contains(t, testutil.ConfigProblems(t, strings.Replace(body, "batch_bytes: lots", "batch_bytes: 2GiB", 1)),
		`sources.orders.kafka.batch_bytes: 2GiB is more than a batch can hold (1GiB)`, "Arrow's 32-bit offsets would wrap")
	for _, want := range []string{
		"sources.orders.unknown_fields: unknown policy maybe (hint: one of ignore, keep, fail)",
		"sources.orders.kafka.brokers: is required",
		`:5: sources.orders.decimal_separator: unknown decimal separator ";" (hint: "." or ",")`,
		`:8: sources.orders.kafka.start: cannot read "yesterday"`,
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
