package postgres_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ckm-dev/ckm/internal/testutil"
)

// A query may name two columns alike: PostgreSQL tells "Cust" from cust, DuckDB does not. Such
// columns are read by position, as a CSV header's are; a name held once keeps it. The cursor
// keeps PostgreSQL's name, though the query names it alike too.
func TestColumnsAQueryNamesAlikeAreReadByPosition(t *testing.T) {
	shop(t, `CREATE TABLE orders (id text PRIMARY KEY, cust text, ts timestamptz, updated_at timestamptz NOT NULL)`,
		`INSERT INTO orders VALUES ('A1', 'C1', '2026-01-01 10:00:00+00', now())`)
	open := func(customer string) *testutil.Env {
		return testutil.OpenYAML(t, t.TempDir(), `warehouse: {path: ckm.duckdb}
sources:
  orders:
    table: orders
    postgres: {dsn_env: CKM_TEST_SHOP_DSN, cursor: updated_at, key: id,
      query: "SELECT id, cust, ts, updated_at, 'X1' AS \"Cust\", 'Y1' AS cust_1, now() AS \"Updated_At\" FROM orders"}
    mapping: {order_id: id, order_ts: ts, amount: {const: "1"}, status: {const: completed}, customer_id: `+customer+`}
`)
	}
	r := open("cust").Runner()
	_, err := r.Ingest(context.Background(), "orders", false)
	const has = `it has id, cust (column 2), ts, updated_at (column 4), Cust (column 5), cust_1, Updated_At (column 7); the source names cust more than once: read "cust (column 2)" or "Cust (column 5)"`
	require.ErrorContains(t, err, "mapping refers to cust, which the source does not have ("+has+")")
	problems, err := r.Check(context.Background())
	require.NoError(t, err)
	require.Equal(t, []string{"source orders: query has no column cust, which the mapping reads (" + has + ")"}, problems)

	for from, want := range map[string]string{"cust_1": "Y1", `"Cust (column 5)"`: "X1", `"cust (column 2)"`: "C1"} {
		env := open(from)
		res, err := env.Runner().Ingest(context.Background(), "orders", false)
		require.NoError(t, err)
		require.EqualValues(t, 1, res.Loaded)
		require.Equal(t, map[string]string{"A1": want}, testutil.Pairs(t, env.Warehouse.DB(), `SELECT order_id, customer_id FROM orders`), "customer_id read from %s", from)
	}
}
