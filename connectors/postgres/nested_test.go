package postgres_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ckm-dev/ckm/internal/testutil"
)

// Arrays and JSON documents arrive as their text ({C1}, {"sku": "P1"}), as do composite rows,
// ranges and points: a column mapped straight from one is a dead letter; an expression may read
// into it.
func TestArrayAndJSONColumnsMappedStraightAreDeadLetters(t *testing.T) {
	server := shop(t, `CREATE TABLE orders (id text PRIMARY KEY, custs text[], note jsonb, ts timestamptz, updated_at timestamptz NOT NULL)`,
		`INSERT INTO orders VALUES ('A1', '{C1}', '{"sku": "P1"}', '2026-01-01 10:00:00+00', now()), ('A2', '{C2}', '{"sku": "P2"}', '2026-01-01 10:00:00+00', now())`)
	load := func(customer, product string) (*testutil.Env, int64) {
		env := testutil.OpenYAML(t, t.TempDir(), `warehouse: {path: ckm.duckdb}
max_bad_ratio: 1
sources:
  orders:
    table: orders
    postgres: {dsn_env: CKM_TEST_SHOP_DSN, table: orders, cursor: updated_at, key: id}
    mapping: {order_id: id, order_ts: ts, amount: {const: "1"}, status: {const: completed}, customer_id: `+customer+`, product_id: `+product+`}
`)
		res, err := env.Runner().Ingest(context.Background(), "orders", false)
		require.NoError(t, err)
		return env, res.Loaded
	}
	pairs := func(env *testutil.Env, query string) map[string]string {
		return testutil.Pairs(t, env.Warehouse.DB(), query)
	}

	env, loaded := load("custs", "note")
	require.Zero(t, loaded)
	const reason = "customer_id: field custs is a text[] in the source, not a single value; product_id: field note is a jsonb in the source, not a single value"
	require.Equal(t, map[string]string{"orders:row 1": reason, "orders:row 2": reason}, pairs(env, `SELECT position, reason FROM dead_letters`))

	env, loaded = load(`{expr: "trim(custs, '{}')"}`, `{expr: "json_extract_string(note, '$.sku')"}`)
	require.EqualValues(t, 2, loaded)
	require.Equal(t, map[string]string{"A1": "C1 P1", "A2": "C2 P2"}, pairs(env, `SELECT order_id, customer_id || ' ' || product_id FROM orders`))

	server.Exec(t, "shop", `CREATE TYPE party AS (id text, name text)`, `CREATE DOMAIN codes AS text[]`,
		`ALTER TABLE orders ADD buyer party, ADD seen tstzrange, ADD spot point, ADD tags codes, ADD plain text`,
		`UPDATE orders SET buyer = ROW('C9', 'Ann'), seen = tstzrange(ts, ts + interval '1 day'), spot = point(1, 2), tags = '{P9}', plain = 'P0', updated_at = now()`)
	for _, c := range []struct{ column, typ string }{{"buyer", "party"}, {"seen", "tstzrange"}, {"spot", "point"}, {"tags", "text[]"}} {
		env, loaded = load(c.column, "plain")
		require.Zero(t, loaded, c.column)
		want := "customer_id: field " + c.column + " is a " + c.typ + " in the source, not a single value"
		require.Equal(t, map[string]string{"orders:row 1": want, "orders:row 2": want}, pairs(env, `SELECT position, reason FROM dead_letters`), c.column)
	}
}
