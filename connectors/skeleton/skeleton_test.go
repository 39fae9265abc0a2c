package skeleton_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ckm-dev/ckm/connectors/conformance"
	_ "github.com/ckm-dev/ckm/connectors/skeleton"
)

// fixture appends to one log file.
type fixture struct{ path string }

func (f *fixture) Setup(t *testing.T, dir string) {
	f.path = filepath.Join(dir, "orders.jsonl")
	require.NoError(t, os.WriteFile(f.path, nil, 0o600))
}

func (f *fixture) SourceYAML() string {
	return `    table: orders
    skeleton: {path: orders.jsonl, batch_size: 100}
    mapping: {order_id: id, customer_id: cust, order_ts: ts, amount: amt, status: {const: completed}}`
}

func (f *fixture) append(t *testing.T, lines [][]byte) {
	out, err := os.OpenFile(f.path, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	defer out.Close()
	for _, l := range lines {
		_, err := out.Write(append(l, '\n'))
		require.NoError(t, err)
	}
}

func (f *fixture) Append(t *testing.T, orders []conformance.Order) {
	var lines [][]byte
	for _, o := range orders {
		l, err := json.Marshal(map[string]any{"id": o.ID, "cust": o.Customer, "ts": o.TS.Format(time.RFC3339), "amt": o.Amount})
		require.NoError(t, err)
		lines = append(lines, l)
	}
	f.append(t, lines)
}

// AppendBad writes a cut-off document, a wrong type, a missing customer and bytes that are not text.
func (f *fixture) AppendBad(t *testing.T, n int) {
	bad := [][]byte{[]byte(`{"id": "B1", "cust": "C1", "ts": "2026-01-02T00:00:00Z", "amt": 1`),
		[]byte(`{"id": "B2", "cust": "C1", "ts": "2026-01-02T00:00:00Z", "amt": "lots"}`),
		[]byte(`{"id": "B3", "ts": "2026-01-02T00:00:00Z", "amt": 3}`),
		{0xff, 0xfe, '{', '}'}}
	var lines [][]byte
	for i := range n {
		lines = append(lines, bad[i%len(bad)])
	}
	f.append(t, lines)
}

func TestConformance(t *testing.T) {
	conformance.Run(t, func() conformance.Fixture { return &fixture{} }, conformance.Options{})
}
