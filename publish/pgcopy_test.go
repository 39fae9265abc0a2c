package publish_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/ckm-dev/ckm/internal/pgtest"
	"github.com/ckm-dev/ckm/publish"
	"github.com/ckm-dev/ckm/warehouse"
)

// copyInto copies query's rows into a new PostgreSQL table through the binary COPY encoder and
// checks that PostgreSQL counted as many rows as DuckDB has.
func copyInto(t *testing.T, duck *warehouse.Conn, pg *pgx.Conn, table, query string) error {
	t.Helper()
	ctx := context.Background()
	n, err := publish.CopyToNewPostgresTable(ctx, duck, pg, table, query)
	if err == nil {
		var want int64
		require.NoError(t, duck.QueryRowContext(ctx, `SELECT count(*) FROM (`+query+`)`).Scan(&want))
		require.Equal(t, want, n)
	}
	return err
}

// Every DuckDB type an output may have arrives in PostgreSQL as the value PostgreSQL itself
// prints for it: the extremes of each integer width, float specials, dates and timestamps on
// both sides of PostgreSQL's 2000-01-01 epoch, infinities, text in and out of ASCII, NULLs.
// The expected text is worked out by hand from PostgreSQL's output formats, independently of
// the encoder; a NUL byte, which PostgreSQL text cannot hold, fails the COPY naming its column.
func TestBinaryCopyWritesEveryOutputTypeAsPostgreSQLReadsIt(t *testing.T) {
	ctx := context.Background()
	server := pgtest.Start(t)
	server.Exec(t, "postgres", `CREATE DATABASE copytest`)
	pg, err := pgx.Connect(ctx, server.AdminDSN("copytest"))
	require.NoError(t, err)
	defer pg.Close(ctx)
	_, err = pg.Exec(ctx, `SET TimeZone = 'UTC'`)
	require.NoError(t, err)

	w, err := warehouse.Open(ctx, warehouse.Options{Path: filepath.Join(t.TempDir(), "w.duckdb")})
	require.NoError(t, err)
	defer w.Close()
	duck, err := w.Conn(ctx)
	require.NoError(t, err)
	defer duck.Close()

	const values = `SELECT * FROM (VALUES
		(1, 'plain', 0.1::DOUBLE, 0.1::FLOAT, (-9223372036854775808)::BIGINT, (-2147483648)::INTEGER, (-32768)::SMALLINT, (-128)::TINYINT,
		 255::UTINYINT, 65535::USMALLINT, 4294967295::UINTEGER, true, DATE '1999-12-31', TIMESTAMP '1999-12-31 23:59:59.999999',
		 TIMESTAMPTZ '2026-06-30 12:34:56.123456+02'),
		(2, '', '-0.0'::DOUBLE, 3.4028235e38::FLOAT, 9223372036854775807::BIGINT, 2147483647::INTEGER, 32767::SMALLINT, 127::TINYINT,
		 0::UTINYINT, 0::USMALLINT, 0::UINTEGER, false, DATE '2000-01-01', TIMESTAMP '2000-01-01 00:00:00',
		 TIMESTAMPTZ '1969-12-31 23:59:59.999999+00'),
		(3, 'ünï ☃ 𝄞 '' "', 'NaN'::DOUBLE, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, DATE '0001-01-01',
		 TIMESTAMP '1970-01-01 00:00:00', NULL),
		(4, NULL, 'Infinity'::DOUBLE, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, DATE 'infinity', TIMESTAMP 'infinity',
		 TIMESTAMPTZ 'infinity'),
		(5, 'x', '-Infinity'::DOUBLE, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, DATE '-infinity', TIMESTAMP '-infinity',
		 TIMESTAMPTZ '-infinity'),
		(6, 'y', 1e-310::DOUBLE, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
		(7, 'z', 1.7976931348623157e308::DOUBLE, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)
	) AS v(k, txt, dbl, flt, i64, i32, i16, i8, u8, u16, u32, b, d, ts, tstz) ORDER BY k`
	require.NoError(t, copyInto(t, duck, pg, "every_type", values))

	want := [][]string{
		{"1", "plain", "0.1", "0.1", "-9223372036854775808", "-2147483648", "-32768", "-128", "255", "65535", "4294967295", "true",
			"1999-12-31", "1999-12-31 23:59:59.999999", "2026-06-30 10:34:56.123456+00"},
		{"2", "", "-0", "3.4028235e+38", "9223372036854775807", "2147483647", "32767", "127", "0", "0", "0", "false",
			"2000-01-01", "2000-01-01 00:00:00", "1969-12-31 23:59:59.999999+00"},
		{"3", `ünï ☃ 𝄞 ' "`, "NaN", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "0001-01-01",
			"1970-01-01 00:00:00", "NULL"},
		{"4", "NULL", "Infinity", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "infinity", "infinity", "infinity"},
		{"5", "x", "-Infinity", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "-infinity", "-infinity", "-infinity"},
		{"6", "y", "1e-310", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL"},
		{"7", "z", "1.7976931348623157e+308", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL"},
	}
	cols := "k, txt, dbl, flt, i64, i32, i16, i8, u8, u16, u32, b, d, ts, tstz"
	texts := make([]string, 0, 15)
	for c := range strings.SplitSeq(cols, ", ") {
		texts = append(texts, "coalesce("+c+"::text, 'NULL')")
	}
	rows, err := pg.Query(ctx, `SELECT `+strings.Join(texts, ", ")+` FROM every_type ORDER BY k`)
	require.NoError(t, err)
	got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) ([]string, error) {
		out := make([]string, 15)
		ptrs := make([]any, 15)
		for i := range out {
			ptrs[i] = &out[i]
		}
		return out, r.Scan(ptrs...)
	})
	require.NoError(t, err)
	require.Equal(t, want, got)
	var types string
	require.NoError(t, pg.QueryRow(ctx, `SELECT string_agg(format_type(atttypid, atttypmod), ',' ORDER BY attnum) FROM pg_attribute
		WHERE attrelid = 'every_type'::regclass AND attnum > 0`).Scan(&types))
	require.Equal(t, "integer,text,double precision,real,bigint,integer,smallint,smallint,smallint,integer,bigint,boolean,date,"+
		"timestamp without time zone,timestamp with time zone", types)

	// Many batches and many chunks of output: every row arrives once, whole.
	const many = `SELECT i, 'row ' || i || repeat('·', (i % 50)::INTEGER) AS s, i / 7 AS f FROM range(300000) t(i)`
	require.NoError(t, copyInto(t, duck, pg, "many", many))
	var duckSums, pgSums string
	require.NoError(t, duck.QueryRowContext(ctx, `SELECT count(*) || ' ' || sum(i) || ' ' || sum(length(s)) || ' ' || sum(f::BIGINT) FROM (`+many+`)`).Scan(&duckSums))
	require.NoError(t, pg.QueryRow(ctx, `SELECT count(*) || ' ' || sum(i) || ' ' || sum(length(s)) || ' ' || sum(f::bigint) FROM many`).Scan(&pgSums))
	require.Equal(t, duckSums, pgSums)

	err = copyInto(t, duck, pg, "nul", `SELECT 'a' || chr(0) || 'b' AS name`)
	require.EqualError(t, err, `nul.name: a NUL byte at offset 1 of "a\\x00b", which PostgreSQL text cannot hold`)
}
