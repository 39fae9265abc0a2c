package postgres_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/ckm-dev/ckm/connectors/conformance"
	_ "github.com/ckm-dev/ckm/connectors/postgres"
	"github.com/ckm-dev/ckm/internal/pgtest"
)

// fixture keeps orders in a table of a real PostgreSQL server, one database per test, with the
// column types a CRM has (numeric, timestamptz, jsonb, uuid) and an updated_at cursor that every
// insert or update stamps.
type fixture struct {
	server *pgtest.Server
	db     string
}

var databases atomic.Int64

func (f *fixture) Setup(t *testing.T, _ string) {
	f.db = fmt.Sprintf("crm_%d", databases.Add(1))
	f.server.Exec(t, "postgres", "CREATE DATABASE "+f.db)
	f.server.Exec(t, f.db, `CREATE SCHEMA crm`, `CREATE TABLE crm.orders (
		id text PRIMARY KEY, cust text, ts timestamptz, amt numeric, note jsonb, ref uuid DEFAULT gen_random_uuid(),
		updated_at timestamptz NOT NULL)`)
	t.Setenv("CKM_TEST_CRM_DSN", f.server.AdminDSN(f.db))
}

func (f *fixture) SourceYAML() string {
	return `    table: orders
    postgres: {dsn_env: CKM_TEST_CRM_DSN, table: crm.orders, cursor: updated_at, key: id, batch_size: 100}
    mapping: {order_id: id, customer_id: cust, order_ts: ts, amount: amt, status: {const: completed}}`
}

// upsert inserts rows or, for an id already there, updates it; either way the row's
// updated_at moves past every earlier one.
func (f *fixture) upsert(t *testing.T, ids, custs, ts, amts []*string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, f.server.AdminDSN(f.db))
	require.NoError(t, err)
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, `INSERT INTO crm.orders (id, cust, ts, amt, note, updated_at)
		SELECT id, cust, ts::timestamptz, amt::numeric, jsonb_build_object('via', 'fixture', 'id', id), clock_timestamp()
		FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS r(id, cust, ts, amt)
		ON CONFLICT (id) DO UPDATE SET cust = excluded.cust, ts = excluded.ts, amt = excluded.amt, updated_at = excluded.updated_at`,
		ids, custs, ts, amts)
	require.NoError(t, err)
}

func str(s string) *string { return &s }

func (f *fixture) Append(t *testing.T, orders []conformance.Order) {
	var ids, custs, ts, amts []*string
	for _, o := range orders {
		ids, custs = append(ids, str(o.ID)), append(custs, str(o.Customer))
		ts, amts = append(ts, str(o.TS.Format(time.RFC3339))), append(amts, str(fmt.Sprint(o.Amount)))
	}
	f.upsert(t, ids, custs, ts, amts)
}

// AppendBad stores what a typed table still lets through and ckm cannot score: NaN and
// out-of-range amounts, an infinite timestamp, a missing customer.
func (f *fixture) AppendBad(t *testing.T, n int) {
	bad := []struct{ cust, ts, amt *string }{
		{str("C1"), str("2026-01-02T00:00:00Z"), str("NaN")},
		{str("C1"), str("infinity"), str("3")},
		{nil, str("2026-01-02T00:00:00Z"), str("3")},
		{str("C1"), str("2026-01-02T00:00:00Z"), str("1e16")},
	}
	var ids, custs, ts, amts []*string
	for i := range n {
		b := bad[i%len(bad)]
		ids = append(ids, str(fmt.Sprintf("BAD-%d-%s", i, strings.Repeat("x", i%3))))
		custs, ts, amts = append(custs, b.cust), append(ts, b.ts), append(amts, b.amt)
	}
	f.upsert(t, ids, custs, ts, amts)
}

func TestConformance(t *testing.T) {
	server := pgtest.Start(t)
	conformance.Run(t, func() conformance.Fixture { return &fixture{server: server} }, conformance.Options{})
}
