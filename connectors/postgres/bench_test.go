package postgres_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/ckm-dev/ckm/internal/pgtest"
	"github.com/ckm-dev/ckm/internal/testutil"
)

// BenchmarkIngestVersusCopy loads a table of orders (1M rows; CKM_BENCH_ROWS to change) from
// PostgreSQL into DuckDB through the postgres source, and reads the same rows with a bare
// `COPY (SELECT …) TO STDOUT` through pgx in the same process: the physical limit of getting
// them off the server. It reports both rates and their ratio.
func BenchmarkIngestVersusCopy(b *testing.B) {
	rows := 1_000_000
	if v := os.Getenv("CKM_BENCH_ROWS"); v != "" {
		rows, _ = strconv.Atoi(v)
	}
	server := pgtest.Start(b)
	server.Exec(b, "postgres", "CREATE DATABASE bench")
	server.Exec(b, "bench", `CREATE TABLE orders AS SELECT 'O' || g AS id, 'C' || (g % 100000) AS cust,
			timestamptz '2025-01-01' + g * interval '17 seconds' AS ts, round((g % 5000) / 7.0, 2)::numeric AS amt,
			timestamptz '2025-01-01' + g * interval '1 millisecond' AS updated_at
		FROM generate_series(1, `+strconv.Itoa(rows)+`) g`, `ALTER TABLE orders ADD PRIMARY KEY (id)`, `CREATE INDEX ON orders (updated_at, id)`, `ANALYZE orders`)
	b.Setenv("CKM_BENCH_PG_DSN", server.AdminDSN("bench"))
	ctx := context.Background()
	var copySecs, ingestSecs float64
	for i := 0; i < b.N; i++ {
		start := time.Now()
		conn, err := pgx.Connect(ctx, server.AdminDSN("bench"))
		require.NoError(b, err)
		tag, err := conn.PgConn().CopyTo(ctx, io.Discard, `COPY (SELECT * FROM orders ORDER BY updated_at, id) TO STDOUT`)
		require.NoError(b, err)
		require.EqualValues(b, rows, tag.RowsAffected())
		conn.Close(ctx)
		copySecs += time.Since(start).Seconds()

		dir := b.TempDir()
		env := testutil.OpenYAML(b, dir, fmt.Sprintf(`warehouse: {path: ckm.duckdb, threads: 2}
sources:
  orders:
    table: orders
    postgres: {dsn_env: CKM_BENCH_PG_DSN, table: orders, cursor: updated_at, key: id}
    mapping: {order_id: id, customer_id: cust, order_ts: ts, amount: amt, status: {const: completed}}
`))
		start = time.Now()
		res, err := env.Runner().Ingest(ctx, "orders", false)
		require.NoError(b, err)
		require.EqualValues(b, rows, res.Loaded)
		ingestSecs += time.Since(start).Seconds()
		env.Warehouse.Close()
	}
	n := float64(rows * b.N)
	b.ReportMetric(n/copySecs, "copy-rows/s")
	b.ReportMetric(n/ingestSecs, "ingest-rows/s")
	b.ReportMetric(copySecs/ingestSecs, "ratio")
}
