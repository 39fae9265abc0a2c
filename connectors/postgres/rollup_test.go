package postgres_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ckm-dev/ckm/config"
	_ "github.com/ckm-dev/ckm/connectors/postgres"
)

// A cursor reads a changed row again (and a lookback window's rows): a line handed over twice
// would add to its order twice, so config refuses rollup_lines on a PostgreSQL source and says
// how to roll the lines up in its query. The same block without rollup_lines loads.
func TestRollupLinesIsRefused(t *testing.T) {
	const source = `warehouse: {path: ckm.duckdb}
sources:
  order_lines:
    table: orders
%s    postgres: {dsn_env: CRM_PG_DSN, table: crm.order_lines, cursor: updated_at, key: line_id}
    mapping: {order_id: order_id, customer_id: customer_id, order_ts: order_ts, amount: amount, status: status}
`
	load := func(rollup string) error {
		path := filepath.Join(t.TempDir(), "ckm.yaml")
		require.NoError(t, os.WriteFile(path, []byte(fmt.Sprintf(source, rollup)), 0o600))
		_, err := config.Load(path)
		return err
	}
	require.NoError(t, load(""))
	err := load("    rollup_lines: true\n")
	require.ErrorContains(t, err, ":5: sources.order_lines.rollup_lines: the postgres connector reads a changed record again")
	require.ErrorContains(t, err, "GROUP BY order_id")
}
