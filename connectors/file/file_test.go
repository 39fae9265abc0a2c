package file_test

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ckm-dev/ckm/connectors/conformance"
	_ "github.com/ckm-dev/ckm/connectors/file"
	"github.com/ckm-dev/ckm/internal/testutil"
)

// dirHarness delivers each batch as a new file in a directory.
type dirHarness struct {
	dir string
	n   int
}

func (h *dirHarness) Setup(t *testing.T, dir string) {
	h.dir = filepath.Join(dir, "in")
	require.NoError(t, os.MkdirAll(h.dir, 0o755))
}

func (h *dirHarness) write(t *testing.T, name string, body []byte) {
	h.n++
	require.NoError(t, os.WriteFile(filepath.Join(h.dir, fmt.Sprintf("batch-%03d.%s", h.n, name)), body, 0o644))
}

// csvHarness delivers gzip-compressed CSV files.
type csvHarness struct{ dirHarness }

func (h *csvHarness) SourceYAML() string {
	return `    table: orders
    file: {paths: [in/*.csv.gz], allow_empty: true}
    mapping: {order_id: id, customer_id: cust, order_ts: ts, amount: amt, status: {const: completed}}`
}

func (h *csvHarness) writeLines(t *testing.T, lines []string) {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	fmt.Fprintln(gz, "id,cust,ts,amt")
	for _, l := range lines {
		fmt.Fprintln(gz, l)
	}
	require.NoError(t, gz.Close())
	h.write(t, "csv.gz", buf.Bytes())
}

func (h *csvHarness) Append(t *testing.T, orders []conformance.Order) {
	var lines []string
	for _, o := range orders {
		lines = append(lines, fmt.Sprintf("%s,%s,%s,%g", o.ID, o.Customer, o.TS.Format(time.RFC3339), o.Amount))
	}
	h.writeLines(t, lines)
}

func (h *csvHarness) AppendBad(t *testing.T, n int) {
	bad := []string{"B1,C1,2026-01-02T00:00:00Z,twelve", ",C1,2026-01-02T00:00:00Z,1", "B3,C1,not a time,1", "B4,C1,2026-01-02T00:00:00Z,1,extra", "B5,,2026-01-02T00:00:00Z,1"}
	var lines []string
	for i := 0; i < n; i++ {
		lines = append(lines, bad[i%len(bad)])
	}
	h.writeLines(t, lines)
}

// jsonlHarness delivers JSON Lines files with a nested customer object.
type jsonlHarness struct{ dirHarness }

func (h *jsonlHarness) SourceYAML() string {
	return `    table: orders
    file: {paths: ["in/*.jsonl"], allow_empty: true}
    mapping: {order_id: id, customer_id: customer.id, order_ts: ts, amount: amount, status: {const: completed}}`
}

func (h *jsonlHarness) writeLines(t *testing.T, lines []string) {
	h.write(t, "jsonl", []byte(strings.Join(lines, "\n")+"\n"))
}

func (h *jsonlHarness) Append(t *testing.T, orders []conformance.Order) {
	var lines []string
	for _, o := range orders {
		b, err := json.Marshal(map[string]any{"id": o.ID, "customer": map[string]string{"id": o.Customer}, "ts": o.TS.Format(time.RFC3339), "amount": o.Amount})
		require.NoError(t, err)
		lines = append(lines, string(b))
	}
	h.writeLines(t, lines)
}

func (h *jsonlHarness) AppendBad(t *testing.T, n int) {
	bad := []string{`{"id": "B1", "customer": {"id": "C1"}, "ts": "2026-01-02T00:00:00Z", "amount": "lots"}`, `{"id": "B2", "customer": {"id": "C1"`,
		`[1, 2, 3]`, `{"customer": {"id": "C1"}, "ts": "2026-01-02T00:00:00Z", "amount": 1}`}
	var lines []string
	for i := 0; i < n; i++ {
		lines = append(lines, bad[i%len(bad)])
	}
	h.writeLines(t, lines)
}

func TestConformanceCSV(t *testing.T) {
	conformance.Run(t, func() conformance.Fixture { return &csvHarness{} }, conformance.Options{})
}

// csvPiecesHarness delivers the same files, each read in pieces of about 1 KiB.
type csvPiecesHarness struct{ csvHarness }

func (h *csvPiecesHarness) SourceYAML() string {
	return strings.Replace(h.csvHarness.SourceYAML(), "allow_empty: true", "allow_empty: true, batch_bytes: 1KiB", 1)
}

func TestConformanceCSVInPieces(t *testing.T) {
	conformance.Run(t, func() conformance.Fixture { return &csvPiecesHarness{} }, conformance.Options{})
}

func TestConformanceJSONLines(t *testing.T) {
	conformance.Run(t, func() conformance.Fixture { return &jsonlHarness{} }, conformance.Options{})
}

// jsonlBatchesHarness delivers the same files, each read in batches of 40 lines.
type jsonlBatchesHarness struct{ jsonlHarness }

func (h *jsonlBatchesHarness) SourceYAML() string {
	return strings.Replace(h.jsonlHarness.SourceYAML(), "allow_empty: true", "allow_empty: true, batch_size: 40", 1)
}

func TestConformanceJSONLinesInBatches(t *testing.T) {
	conformance.Run(t, func() conformance.Fixture { return &jsonlBatchesHarness{} }, conformance.Options{})
}

// A file source's sizes and batch settings are checked when the config loads, each problem
// naming its key and line.
func TestConfigProblemsNameTheirKeysAndLines(t *testing.T) {
	body := `sources:
  orders:
    table: orders
    file:
      paths: [missing-*.jsonl]
      max_line_size: huge
      batch_size: -1
      batch_bytes: lots
    mapping: {order_id: id, customer_id: cust, order_ts: ts, amount: amt, status: {const: completed}}
`
	got := testutil.ConfigProblems(t, body)
	require.Contains(t, testutil.ConfigProblems(t, strings.Replace(body, "batch_bytes: lots", "batch_bytes: 3GiB", 1)),
		`:8: sources.orders.file.batch_bytes: 3GiB is more than a batch can hold (1GiB)`, "Arrow's 32-bit offsets would wrap")
	for _, want := range []string{
		`sources.orders.file.paths: no file matches "missing-*.jsonl"`,
		`:6: sources.orders.file.max_line_size: cannot read "huge" as a size`,
		`:7: sources.orders.file.batch_size: -1 is negative`,
		`:8: sources.orders.file.batch_bytes: cannot read "lots" as a size`,
	} {
		require.Contains(t, got, want)
	}
}
