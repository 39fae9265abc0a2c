package postgres_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ckm-dev/ckm/internal/pgtest"
	"github.com/ckm-dev/ckm/internal/testutil"
)

// A database created with encoding SQL_ASCII (initdb's default in the C locale) stores any
// bytes, and PostgreSQL refuses to send a value that is not UTF-8 to ckm: the read stops there.
// The error names the row by its number and the key before it, as a dead letter would, and says
// why; the rows before it stay loaded, and the read goes on from them once the row is corrected.
func TestARowThatIsNotUTF8StopsTheReadNamingIt(t *testing.T) {
	server := pgtest.Start(t)
	server.Exec(t, "postgres", "CREATE DATABASE legacy ENCODING 'SQL_ASCII' TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'")
	server.Exec(t, "legacy", `CREATE TABLE orders (id text PRIMARY KEY, cust text, ts timestamptz, updated_at timestamptz NOT NULL)`,
		`INSERT INTO orders VALUES ('A1', 'C1', '2026-01-01 10:00:00+00', '2026-02-01'), ('A2', E'caf\xe9', '2026-01-01 10:00:00+00', '2026-02-02'),
			('A3', 'C3', '2026-01-01 10:00:00+00', '2026-02-03')`)
	t.Setenv("CKM_TEST_LEGACY_DSN", server.AdminDSN("legacy"))
	open := func(batchSize int) *testutil.Env {
		return testutil.OpenYAML(t, t.TempDir(), fmt.Sprintf(`warehouse: {path: ckm.duckdb}
sources:
  orders:
    table: orders
    postgres: {dsn_env: CKM_TEST_LEGACY_DSN, table: orders, cursor: updated_at, key: id, batch_size: %d}
    mapping: {order_id: id, order_ts: ts, amount: {const: "1"}, status: {const: completed}, customer_id: cust}
`, batchSize))
	}
	const why = `source orders: read orders: row 2 (the row after id A1) holds text that is not UTF-8 (invalid byte sequence for encoding "UTF8": 0xe9): ` +
		`the database stores any bytes (encoding SQL_ASCII) and ckm reads text as UTF-8`
	// Row 2 in the batch being filled: nothing of the batch is loaded.
	whole := open(1000)
	_, err := whole.Runner().Ingest(context.Background(), "orders", false)
	require.ErrorContains(t, err, why)
	require.Empty(t, testutil.Pairs(t, whole.Warehouse.DB(), `SELECT order_id, _position FROM orders`))
	// Row 2 the first of a batch: the batches before it are loaded.
	env := open(1)
	_, err = env.Runner().Ingest(context.Background(), "orders", false)
	require.ErrorContains(t, err, why)
	require.Equal(t, map[string]string{"A1": "orders:row 1"}, testutil.Pairs(t, env.Warehouse.DB(), `SELECT order_id, _position FROM orders`))

	server.Exec(t, "legacy", `UPDATE orders SET cust = 'C2' WHERE id = 'A2'`)
	res, err := env.Runner().Ingest(context.Background(), "orders", false)
	require.NoError(t, err)
	require.EqualValues(t, 2, res.Loaded)
	require.Equal(t, map[string]string{"A1": "C1", "A2": "C2", "A3": "C3"}, testutil.Pairs(t, env.Warehouse.DB(), `SELECT order_id, customer_id FROM orders`))
}
