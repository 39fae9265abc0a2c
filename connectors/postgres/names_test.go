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

// Every column reaches the mapping as text, whatever its PostgreSQL type: `ckm validate
// --connect` binds the mapping's expressions over text, as a run does, so that amt * 2 on a
// numeric column is named before the run fails on it, and a cast binds.
func TestValidateConnectBindsExpressionsOverTheColumnsAsText(t *testing.T) {
	shop(t, `CREATE TABLE orders (id text PRIMARY KEY, cust text, ts timestamptz, amt numeric, updated_at timestamptz NOT NULL)`,
		`INSERT INTO orders VALUES ('A1', 'C1', '2026-01-01 10:00:00+00', 2.5, now())`)
	open := func(amount string) *testutil.Env {
		return testutil.OpenYAML(t, t.TempDir(), `warehouse: {path: ckm.duckdb}
sources:
  orders:
    table: orders
    postgres: {dsn_env: CKM_TEST_SHOP_DSN, table: orders, cursor: updated_at, key: id}
    mapping: {order_id: id, customer_id: cust, order_ts: ts, amount: {expr: "`+amount+`"}, status: {const: completed}}
`)
	}
	const refused = "mapping.amount.expr: Binder Error: No function matches the given name and argument types '*(VARCHAR, INTEGER_LITERAL)'"
	r := open("amt * 2").Runner()
	problems, err := r.Check(context.Background())
	require.NoError(t, err)
	require.Len(t, problems, 1)
	require.Contains(t, problems[0], "source orders: orders: "+refused)
	_, err = r.Ingest(context.Background(), "orders", false)
	require.ErrorContains(t, err, refused, "the run fails as validate said")

	env := open("CAST(amt AS DOUBLE) * 2")
	problems, err = env.Runner().Check(context.Background())
	require.NoError(t, err)
	require.Empty(t, problems)
	_, err = env.Runner().Ingest(context.Background(), "orders", false)
	require.NoError(t, err)
	require.Equal(t, map[string]string{"A1": "5"}, testutil.Pairs(t, env.Warehouse.DB(), `SELECT order_id, amount FROM orders`))
}
