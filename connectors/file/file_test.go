package file_test

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ckm-dev/ckm/connectors/conformance"
	_ "github.com/ckm-dev/ckm/connectors/file"
)

// csvHarness delivers each batch as a new gzip-compressed CSV file.
type csvHarness struct {
	dir string
	n   int
}

func (h *csvHarness) Setup(t *testing.T, dir string) {
	h.dir = filepath.Join(dir, "in")
	require.NoError(t, os.MkdirAll(h.dir, 0o755))
}

func (h *csvHarness) SourceYAML() string {
	return `    table: orders
    file: {paths: [in/*.csv.gz], allow_empty: true}
    mapping: {order_id: id, customer_id: cust, order_ts: ts, amount: amt, status: {const: completed}}`
}

func (h *csvHarness) write(t *testing.T, lines []string) {
	h.n++
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	fmt.Fprintln(gz, "id,cust,ts,amt")
	for _, l := range lines {
		fmt.Fprintln(gz, l)
	}
	require.NoError(t, gz.Close())
	require.NoError(t, os.WriteFile(filepath.Join(h.dir, fmt.Sprintf("batch-%03d.csv.gz", h.n)), buf.Bytes(), 0o644))
}

func (h *csvHarness) Append(t *testing.T, orders []conformance.Order) {
	var lines []string
	for _, o := range orders {
		lines = append(lines, fmt.Sprintf("%s,%s,%s,%g", o.ID, o.Customer, o.TS.Format(time.RFC3339), o.Amount))
	}
	h.write(t, lines)
}

func (h *csvHarness) AppendBad(t *testing.T, n int) {
	bad := []string{"B1,C1,2026-01-02T00:00:00Z,twelve", ",C1,2026-01-02T00:00:00Z,1", "B3,C1,not a time,1", "B4,C1,2026-01-02T00:00:00Z,1,extra", "B5,,2026-01-02T00:00:00Z,1"}
	var lines []string
	for i := 0; i < n; i++ {
		lines = append(lines, bad[i%len(bad)])
	}
	h.write(t, lines)
}

// jsonlHarness delivers each batch as a new JSON Lines file with a nested customer object.
type jsonlHarness struct {
	dir string
	n   int
}

func (h *jsonlHarness) Setup(t *testing.T, dir string) {
	h.dir = filepath.Join(dir, "in")
	require.NoError(t, os.MkdirAll(h.dir, 0o755))
}

func (h *jsonlHarness) SourceYAML() string {
	return `    table: orders
    file: {paths: ["in/*.jsonl"], allow_empty: true}
    mapping: {order_id: id, customer_id: customer.id, order_ts: ts, amount: amount, status: {const: completed}}`
}

func (h *jsonlHarness) write(t *testing.T, lines []string) {
	h.n++
	var buf bytes.Buffer
	for _, l := range lines {
		buf.WriteString(l + "\n")
	}
	require.NoError(t, os.WriteFile(filepath.Join(h.dir, fmt.Sprintf("batch-%03d.jsonl", h.n)), buf.Bytes(), 0o644))
}

func (h *jsonlHarness) Append(t *testing.T, orders []conformance.Order) {
	var lines []string
	for _, o := range orders {
		b, err := json.Marshal(map[string]any{"id": o.ID, "customer": map[string]string{"id": o.Customer}, "ts": o.TS.Format(time.RFC3339), "amount": o.Amount})
		require.NoError(t, err)
		lines = append(lines, string(b))
	}
	h.write(t, lines)
}

func (h *jsonlHarness) AppendBad(t *testing.T, n int) {
	bad := []string{`{"id": "B1", "customer": {"id": "C1"}, "ts": "2026-01-02T00:00:00Z", "amount": "lots"}`, `{"id": "B2", "customer": {"id": "C1"`,
		`[1, 2, 3]`, `{"customer": {"id": "C1"}, "ts": "2026-01-02T00:00:00Z", "amount": 1}`}
	var lines []string
	for i := 0; i < n; i++ {
		lines = append(lines, bad[i%len(bad)])
	}
	h.write(t, lines)
}

func TestConformanceCSV(t *testing.T) {
	conformance.Run(t, func() conformance.Harness { return &csvHarness{} })
}

func TestConformanceJSONLines(t *testing.T) {
	conformance.Run(t, func() conformance.Harness { return &jsonlHarness{} })
}
