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
// bytes. A value that is not UTF-8 makes its row a dead letter where the mapping reads it, as
// in a file or a Kafka message, and is passed over where it does not; the read goes on. Only a
// cursor or key that is not UTF-8 stops the read (where it stands could not be stored), naming
// the row; the rows before it stay loaded, and the read goes on once the row is corrected.
func TestValuesThatAreNotUTF8AreDeadLettersWhereTheMappingReadsThem(t *testing.T) {
	server := pgtest.Start(t)
	server.Exec(t, "postgres", "CREATE DATABASE legacy ENCODING 'SQL_ASCII' TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'")
	server.Exec(t, "legacy", `CREATE TABLE orders (id text PRIMARY KEY, cust text, note text, ts timestamptz, updated_at timestamptz NOT NULL)`,
		`INSERT INTO orders VALUES ('A1', 'C1', 'ok', '2026-01-01 10:00:00+00', '2026-02-01'),
			('A2', 'C2', 'ok', '2026-01-01 10:00:00+00', '2026-02-02'),
			('A3', 'C3', E'd\xe9j\xe0 vu', '2026-01-01 10:00:00+00', '2026-02-03'),
			('A4', E'caf\xe9', 'ok', '2026-01-01 10:00:00+00', '2026-02-04'),
			(E'A\xe95', 'C5', 'ok', '2026-01-01 10:00:00+00', '2026-02-05'),
			('A6', 'C6', 'ok', '2026-01-01 10:00:00+00', '2026-02-06')`)
	t.Setenv("CKM_TEST_LEGACY_DSN", server.AdminDSN("legacy"))
	for _, batchSize := range []int{1000, 2} {
		t.Run(fmt.Sprintf("batches of %d", batchSize), func(t *testing.T) {
			server.Exec(t, "legacy", `UPDATE orders SET id = E'A\xe95' WHERE id = 'A5'`)
			env := testutil.OpenYAML(t, t.TempDir(), fmt.Sprintf(`warehouse: {path: ckm.duckdb}
max_bad_ratio: 0.5
sources:
  orders:
    table: orders
    unknown_fields: keep
    postgres: {dsn_env: CKM_TEST_LEGACY_DSN, table: orders, cursor: updated_at, key: id, batch_size: %d}
    mapping: {order_id: id, order_ts: ts, amount: {const: "1"}, status: {const: completed}, customer_id: cust}
`, batchSize))
			db := env.Warehouse.DB()
			_, err := env.Runner().Ingest(context.Background(), "orders", false)
			require.ErrorContains(t, err, `source orders: read orders: row 5 (the row after id A4): its cursor or key holds bytes that are not UTF-8`)
			require.Equal(t, map[string]string{"A1": "C1", "A2": "C2", "A3": "C3"}, testutil.Pairs(t, db, `SELECT order_id, customer_id FROM orders`),
				"the rows before it are loaded")

			server.Exec(t, "legacy", `UPDATE orders SET id = 'A5' WHERE id = E'A\xe95'`)
			_, err = env.Runner().Ingest(context.Background(), "orders", false)
			require.NoError(t, err)
			require.Equal(t, map[string]string{"A1": "C1", "A2": "C2", "A3": "C3", "A5": "C5", "A6": "C6"},
				testutil.Pairs(t, db, `SELECT order_id, customer_id FROM orders`))
			require.Equal(t, `d\xe9j\xe0 vu`, testutil.Pairs(t, db, `SELECT order_id, json_extract_string(_extra, '$.note') FROM orders`)["A3"],
				"a value the mapping does not read is kept escaped")
			// In batches of 2, rows 3 and 4 are one batch's first and second.
			require.Equal(t, map[string]string{"orders:row 4": "cust could not be read as text"},
				testutil.Pairs(t, db, `SELECT position, reason FROM dead_letters`))
			require.Equal(t, "caf\\xe9", testutil.Pairs(t, db, `SELECT position, json_extract_string(payload, '$.cust') FROM dead_letters`)["orders:row 4"])
		})
	}
}
