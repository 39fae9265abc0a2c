package postgres_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ckm-dev/ckm/internal/pgtest"
	"github.com/ckm-dev/ckm/internal/testutil"
)

// A table restored from a backup holds cursor values older than the stored cursor: an ingest
// passes its rows over, as an incremental read must. `ckm ingest --restart` forgets the cursor,
// and the next read takes the whole table, replacing the rows by key (dbt's --full-refresh).
func TestRestartReadsARestoredTableWhole(t *testing.T) {
	server := shop(t, `CREATE TABLE orders (id text PRIMARY KEY, cust text, ts timestamptz, amount numeric, updated_at timestamptz NOT NULL)`,
		`INSERT INTO orders VALUES ('A1', 'C1', '2026-01-01 10:00:00+00', 10, '2026-02-02'), ('A2', 'C2', '2026-01-01 11:00:00+00', 20, '2026-02-02')`)
	env := testutil.OpenYAML(t, t.TempDir(), `warehouse: {path: ckm.duckdb}
sources:
  orders:
    table: orders
    postgres: {dsn_env: CKM_TEST_SHOP_DSN, table: orders, cursor: updated_at, key: id}
    mapping: {order_id: id, customer_id: cust, order_ts: ts, amount: amount, status: {const: completed}}
`)
	r := env.Runner()
	res, err := r.Ingest(context.Background(), "orders", false)
	require.NoError(t, err)
	require.EqualValues(t, 2, res.Loaded)

	server.Exec(t, "shop", `TRUNCATE orders`, `INSERT INTO orders VALUES ('A1', 'C1', '2026-01-01 10:00:00+00', 15, '2026-01-15'),
		('A2', 'C2', '2026-01-01 11:00:00+00', 25, '2026-01-15'), ('A3', 'C3', '2026-01-01 12:00:00+00', 35, '2026-01-15')`)
	res, err = r.Ingest(context.Background(), "orders", false)
	require.NoError(t, err)
	require.Zero(t, res.Read, "rows older than the cursor are not new to an incremental read")

	require.NoError(t, r.Restart(context.Background(), "orders", []string{"orders"}))
	res, err = r.Ingest(context.Background(), "orders", false)
	require.NoError(t, err)
	require.EqualValues(t, 3, res.Loaded)
	require.Equal(t, map[string]string{"A1": "15", "A2": "25", "A3": "35"},
		testutil.Pairs(t, env.Warehouse.DB(), `SELECT order_id, amount::INTEGER FROM orders`), "every row once, as the table holds it now")
}

// shop starts a throwaway PostgreSQL with a database "shop" made by statements, reachable
// through $CKM_TEST_SHOP_DSN.
func shop(t *testing.T, statements ...string) *pgtest.Server {
	server := pgtest.Start(t)
	server.Exec(t, "postgres", "CREATE DATABASE shop")
	server.Exec(t, "shop", statements...)
	t.Setenv("CKM_TEST_SHOP_DSN", server.AdminDSN("shop"))
	return server
}
