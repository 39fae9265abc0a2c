package pipelines_test

import (
	"bytes"
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/ckm-dev/ckm/config"
	"github.com/ckm-dev/ckm/internal/pgtest"
	"github.com/ckm-dev/ckm/internal/testutil"
	"github.com/ckm-dev/ckm/pipelines"
)

// readPublished is one reader query, one snapshot: for every as_of PostgreSQL holds, each
// output's rows must all come from the run published_runs names, as many as it published.
// It returns the run per as_of, or what was wrong.
func readPublished(ctx context.Context, conn *pgx.Conn) (map[string]string, error) {
	var union []string
	for _, t := range pgtest.Outputs {
		union = append(union, fmt.Sprintf(`SELECT '%s' AS tbl, as_of, run_id FROM ckm.%[1]s`, t))
	}
	rows, err := conn.Query(ctx, `WITH t AS (`+strings.Join(union, " UNION ALL ")+`),
		expected AS (SELECT p.as_of, p.run_id, e.key AS tbl, e.value::bigint AS n FROM ckm.published_runs p, jsonb_each_text(p.rows) e
		             WHERE e.key = ANY($1))
		SELECT coalesce(e.as_of, a.as_of)::text, coalesce(e.tbl, a.tbl), e.run_id, coalesce(e.n, -1), coalesce(a.rows, -1), coalesce(a.runs, 0), a.run_id
		FROM expected e FULL JOIN (SELECT tbl, as_of, count(*) AS rows, count(DISTINCT run_id) AS runs, min(run_id) AS run_id FROM t GROUP BY 1, 2) a
		ON a.tbl = e.tbl AND a.as_of = e.as_of`, pgtest.Outputs)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	seen := map[string]string{}
	for rows.Next() {
		var asOf, table string
		var want, got, runs int64
		var published, found sql.NullString
		if err := rows.Scan(&asOf, &table, &published, &want, &got, &runs, &found); err != nil {
			return nil, err
		}
		if want == 0 && got == -1 {
			continue // the first as_of has no changes
		}
		if !published.Valid || runs != 1 || found != published || want != got {
			return nil, fmt.Errorf("as_of %s %s: published run %v with %d rows, found %d rows of %d runs (%v)", asOf, table, published.String, want, got, runs, found.String)
		}
		seen[asOf] = published.String
	}
	return seen, rows.Err()
}

// Runs publish to a real PostgreSQL while a BI reader, with the README's read-only role,
// queries in a loop: every read sees each as_of whole from one run; the reader sees each
// publish land; a rerun of an as_of changes no value; PostgreSQL equals DuckDB after the first
// publish and at the end.
func TestPostgresReadersSeeOnlyCompleteRuns(t *testing.T) {
	pg, writer, reader := pgtest.StartWithReadmeRoles(t)
	t.Setenv("CKM_PG_DSN", writer)
	env := testutil.Open(t, filepath.Join(testutil.RepoRoot(), "config.yaml"))
	env.Run(t, "nightly", "2026-05-31")
	// The first publish copies customers straight in (there are no changes yet).
	requireTablesEqual(t, env.Warehouse.DB(), writer, "customers", "customer_rfm", "customer_knowledge")

	ctx, stop := context.WithCancel(context.Background())
	rc, err := pgx.Connect(ctx, reader)
	require.NoError(t, err)
	var (
		mu      sync.Mutex
		seen    = map[string]bool{} // as_of/run_id pairs the reader has seen
		reads   int
		readErr error
		done    = make(chan struct{})
	)
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			runs, err := readPublished(ctx, rc)
			mu.Lock()
			if err != nil && ctx.Err() == nil && readErr == nil {
				readErr = err
			}
			for asOf, run := range runs {
				seen[asOf+"/"+run] = true
			}
			reads++
			mu.Unlock()
		}
	}()
	waitSeen := func(asOf, runID string) {
		t.Helper()
		require.Eventually(t, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return seen[asOf+"/"+runID] || readErr != nil
		}, time.Minute, 5*time.Millisecond, "the reader sees run %s of %s", runID, asOf)
	}
	first := env.Run(t, "nightly", "2026-05-31") // a rerun of what is there already
	waitSeen("2026-05-31", first.RunID)
	before := pgtest.Digest(t, writer)
	for _, asOf := range []string{"2026-06-30", "2026-06-15", "2026-06-30"} {
		res := env.Run(t, "nightly", asOf)
		waitSeen(asOf, res.RunID)
	}
	// Hold the next swap open after it replaced every output's rows (the published_runs row is
	// its last write): reads go on meanwhile and see the previous run, whole.
	hold := pg.HoldSwap(t, "analytics")
	published := make(chan string)
	go func() {
		res, err := env.Runner().Run(context.Background(), pipelines.Request{Pipeline: "nightly", AsOf: time.Date(2026, 6, 15, 0, 0, 0, 0, time.UTC)})
		if err != nil {
			t.Error(err)
		}
		published <- res.RunID
	}()
	hold.WaitBlocked(t)
	mu.Lock()
	from := reads
	mu.Unlock()
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return reads > from+20 || readErr != nil }, time.Minute, time.Millisecond,
		"reads go on while the swap is open")
	hold.Release()
	waitSeen("2026-06-15", <-published)
	// The CRM changed meanwhile: one customer moved segment, one went, one came.
	for _, q := range []string{
		`UPDATE customers SET segment = 'moved' WHERE customer_id = (SELECT min(customer_id) FROM customers)`,
		`DELETE FROM customers WHERE customer_id = (SELECT max(customer_id) FROM customers)`,
		`INSERT INTO customers SELECT * REPLACE ('C-new' AS customer_id) FROM customers LIMIT 1`,
	} {
		_, err := env.Warehouse.DB().Exec(q)
		require.NoError(t, err, q)
	}
	again := env.Run(t, "nightly", "2026-05-31")
	waitSeen("2026-05-31", again.RunID)
	stop()
	<-done
	rc.Close(context.Background())
	require.NoError(t, readErr)
	t.Logf("%d reads during 7 publishes", reads)

	after := pgtest.Digest(t, writer)
	require.Equal(t, before["2026-05-31"], after["2026-05-31"], "a rerun of an as_of changes no value in PostgreSQL")
	requirePostgresEqualsDuckDB(t, env.Warehouse.DB(), writer)

	var unpublished int
	require.NoError(t, env.Warehouse.DB().QueryRow(`SELECT count(*) FROM pipeline_runs WHERE status = 'succeeded' AND postgres_published_at IS NULL`).Scan(&unpublished))
	require.Zero(t, unpublished, "pipeline_runs records every run published to PostgreSQL")

	// The BI role reads and cannot write.
	conn, err := pgx.Connect(context.Background(), reader)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var n int
	require.NoError(t, conn.QueryRow(context.Background(), `SELECT count(*) FROM ckm.customer_scores_latest WHERE as_of = '2026-06-30'`).Scan(&n))
	require.Positive(t, n)
	_, err = conn.Exec(context.Background(), `DELETE FROM ckm.customer_rfm`)
	require.ErrorContains(t, err, "permission denied")
}

// publishedOnce starts PostgreSQL set up by the README's role block and a warehouse whose run of
// 2026-05-31 is published there; it returns the BI role's DSN.
func publishedOnce(t *testing.T) (pg *pgtest.Server, reader string, env *testutil.Env) {
	pg, writer, reader := pgtest.StartWithReadmeRoles(t)
	t.Setenv("CKM_PG_DSN", writer)
	env = testutil.Open(t, filepath.Join(testutil.RepoRoot(), "config.yaml"))
	env.Run(t, "nightly", "2026-05-31")
	return pg, reader, env
}

// latestQuery is what a dashboard on customer_scores_latest sees: the newest as_of published,
// and how many customers the view shows.
const latestQuery = `SELECT (SELECT max(as_of) FROM ckm.published_runs)::text, (SELECT count(*) FROM ckm.customer_scores_latest)`

// requireWholeRun: customer_scores_latest showed as many customers as DuckDB's customer_scores
// has for the as_of published_runs named.
func requireWholeRun(t *testing.T, env *testutil.Env, published string, rows int) {
	t.Helper()
	var want int
	require.NoError(t, env.Warehouse.DB().QueryRow(`SELECT count(*) FROM customer_scores WHERE as_of = ?::DATE`, published).Scan(&want))
	require.Positive(t, want)
	require.Equal(t, want, rows, "customer_scores_latest shows every customer of the as_of published_runs names (%s)", published)
}

// A BI query planned before a new as_of's partitions were attached cannot read them, though
// its snapshot, taken right after its plan, may see rows committed since: the publish must not
// commit until such a query has its snapshot. Here a reader of customer_scores_latest is held
// inside its planning (another session locks an old partition, which the plan must lock too)
// while the next as_of publishes; released, it must see the previous run whole, and the
// publish lands after it.
func TestPostgresQueryPlannedBeforeANewAsOfSeesAWholeRun(t *testing.T) {
	pg, reader, env := publishedOnce(t)
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, pg.AdminDSN("analytics"))
	require.NoError(t, err)
	defer admin.Close(ctx)
	locker, err := pgx.Connect(ctx, pg.AdminDSN("analytics"))
	require.NoError(t, err)
	defer locker.Close(ctx)
	lock, err := locker.Begin(ctx)
	require.NoError(t, err)
	_, err = lock.Exec(ctx, `LOCK TABLE ckm.customer_rfm_20260531 IN ACCESS EXCLUSIVE MODE`)
	require.NoError(t, err)

	type read struct {
		published string
		rows      int
		err       error
	}
	readLatest := func() read {
		conn, err := pgx.Connect(ctx, reader)
		if err != nil {
			return read{err: err}
		}
		defer conn.Close(ctx)
		var r read
		r.err = conn.QueryRow(ctx, latestQuery).Scan(&r.published, &r.rows)
		return r
	}
	blocked := make(chan read, 1)
	go func() { blocked <- readLatest() }()
	waitForPostgres(t, admin, "the reader waits inside its planning", `SELECT count(*) FROM pg_locks WHERE relation = 'ckm.customer_rfm_20260531'::regclass AND NOT granted`)

	published := make(chan error, 1)
	go func() {
		_, err := runLogged(env, "2026-06-30")
		published <- err
	}()
	waitForPostgres(t, admin, "the publish waits for the reader, or has committed without it", publisherWaits)
	require.NoError(t, lock.Rollback(ctx))

	before := <-blocked
	require.NoError(t, before.err)
	requireWholeRun(t, env, before.published, before.rows)
	require.Equal(t, "2026-05-31", before.published, "the publish committed after the reader's snapshot")
	require.NoError(t, <-published)
	after := readLatest()
	require.NoError(t, after.err)
	requireWholeRun(t, env, after.published, after.rows)
	require.Equal(t, "2026-06-30", after.published)
}

// BI sessions left idle inside transactions that read the outputs before a new as_of's
// partitions were attached delay its publish by at most the bound (publish.postgres.reader_wait),
// never stop it, and the warning names their sessions. A REPEATABLE READ one goes on seeing the
// previous run whole; once a READ COMMITTED one ends, its next transaction sees the new run
// whole. (Inside it, PostgreSQL keeps the table's partition list it read: the README says so.)
func TestPostgresIdleReaderTransactionsDoNotStopAPublish(t *testing.T) {
	_, reader, env := publishedOnce(t)
	env.Config.Publish.Postgres = &config.PublishPostgres{ReaderWait: "2s"}
	committed, repeatable := beginReading(t, reader, pgx.ReadCommitted), beginReading(t, reader, pgx.RepeatableRead)
	requireLatest(t, env, committed, "2026-05-31")
	requireLatest(t, env, repeatable, "2026-05-31")

	log, err := runLogged(env, "2026-06-30") // would wait forever on the idle transactions without the bound
	require.NoError(t, err)
	requireLatest(t, env, repeatable, "2026-05-31")
	require.Regexp(t, `still open; publishing.* waited=2s`, log, "the configured bound, not the default")
	for _, tx := range []pgx.Tx{committed, repeatable} {
		require.Regexp(t, fmt.Sprintf(`pids="?\[[0-9 ]*\b%d\b`, tx.Conn().PgConn().PID()), log, "the warning names each idle session")
	}
	require.NoError(t, repeatable.Commit(context.Background()))
	require.NoError(t, committed.Commit(context.Background()))
	requireLatest(t, env, beginReading(t, reader, pgx.ReadCommitted), "2026-06-30")
}

// With reader_wait 0 the publish waits for an idle BI transaction however long it stays open
// (here past the 10 s after which the wait is logged, naming the session), and lands, whole,
// once it ends.
func TestPostgresPublishWaitsForAnIdleReaderWithoutABound(t *testing.T) {
	pg, reader, env := publishedOnce(t)
	env.Config.Publish.Postgres = &config.PublishPostgres{ReaderWait: "0"}
	idle := beginReading(t, reader, pgx.ReadCommitted)
	requireLatest(t, env, idle, "2026-05-31")
	admin, err := pgx.Connect(context.Background(), pg.AdminDSN("analytics"))
	require.NoError(t, err)
	defer admin.Close(context.Background())

	type result struct {
		log string
		err error
	}
	published := make(chan result, 1)
	go func() {
		log, err := runLogged(env, "2026-06-30")
		published <- result{log, err}
	}()
	waitForPostgres(t, admin, "the publish waits for the idle reader", publisherWaits)
	select {
	case r := <-published:
		t.Fatalf("the publish ended while a reader of the old partitions was open: %v\n%s", r.err, r.log)
	case <-time.After(12 * time.Second):
	}
	var newest string
	require.NoError(t, admin.QueryRow(context.Background(), `SELECT max(as_of)::text FROM ckm.published_runs`).Scan(&newest))
	require.Equal(t, "2026-05-31", newest, "nothing is published while the reader is open")
	requireLatest(t, env, idle, "2026-05-31")

	require.NoError(t, idle.Commit(context.Background()))
	r := <-published
	require.NoError(t, r.err)
	require.Regexp(t, fmt.Sprintf(`publish waits for transactions .* pids="?\[%d\]"? .*bound=none`, idle.Conn().PgConn().PID()), r.log)
	require.NotContains(t, r.log, "still open; publishing", "no bound: it never gave up waiting")
	requireLatest(t, env, beginReading(t, reader, pgx.ReadCommitted), "2026-06-30")
}

// beginReading opens a transaction as the BI role.
func beginReading(t *testing.T, dsn string, iso pgx.TxIsoLevel) pgx.Tx {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close(ctx) })
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: iso})
	require.NoError(t, err)
	return tx
}

// requireLatest: in tx, customer_scores_latest shows the as_of asOf, whole.
func requireLatest(t *testing.T, env *testutil.Env, tx pgx.Tx, asOf string) {
	t.Helper()
	var published string
	var rows int
	require.NoError(t, tx.QueryRow(context.Background(), latestQuery).Scan(&published, &rows))
	require.Equal(t, asOf, published)
	requireWholeRun(t, env, published, rows)
}

// runLogged runs the nightly pipeline for asOf and returns what it logged.
func runLogged(env *testutil.Env, asOf string) (string, error) {
	var log bytes.Buffer
	r := env.Runner()
	r.Log = slog.New(slog.NewTextHandler(&log, nil))
	date, err := time.Parse(time.DateOnly, asOf)
	if err != nil {
		return "", err
	}
	_, err = r.Run(context.Background(), pipelines.Request{Pipeline: "nightly", AsOf: date})
	return log.String(), err
}

// publisherWaits finds a publish waiting for earlier readers (or already published 2026-06-30).
const publisherWaits = `SELECT count(*) FROM pg_stat_activity WHERE usename = 'ckm_writer' AND query LIKE '%virtualtransaction = ANY%'
	UNION ALL SELECT count(*) FROM ckm.published_runs WHERE as_of = '2026-06-30' ORDER BY 1 DESC LIMIT 1`

// waitForPostgres waits until query, run as admin, counts something.
func waitForPostgres(t *testing.T, admin *pgx.Conn, what, query string) {
	t.Helper()
	require.Eventually(t, func() bool {
		var n int
		require.NoError(t, admin.QueryRow(context.Background(), query).Scan(&n))
		return n > 0
	}, 2*time.Minute, 10*time.Millisecond, what)
}

// requirePostgresEqualsDuckDB compares every output row by row, every value (doubles exactly).
func requirePostgresEqualsDuckDB(t *testing.T, db *sql.DB, dsn string) {
	requireTablesEqual(t, db, dsn, append(slices.Clone(pgtest.Outputs), "clv_holdout", "customers")...)
}

// requireTablesEqual compares tables row by row, every value (doubles exactly).
func requireTablesEqual(t *testing.T, db *sql.DB, dsn string, tables ...string) {
	conn, err := pgx.Connect(context.Background(), dsn)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	sources := map[string]string{"customers": `SELECT customer_id, NULL::VARCHAR AS name, segment, region, NULL::DATE AS signup_date,
		NULL::BOOLEAN AS contact_consent, NULL::TIMESTAMPTZ AS updated_at FROM customers`} // the columns BI may see by default
	for _, table := range tables {
		var duck, pgRows [][]string
		rows, err := db.Query(cmp.Or(sources[table], `SELECT * FROM `+table))
		require.NoError(t, err)
		names, _ := rows.Columns()
		for rows.Next() {
			vals := make([]any, len(names))
			ptrs := make([]any, len(names))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			require.NoError(t, rows.Scan(ptrs...))
			duck = append(duck, normalise(vals))
		}
		require.NoError(t, rows.Close())
		pgOrder := make([]string, len(names))
		for i := range names {
			pgOrder[i] = strconv.Itoa(i + 1)
		}
		prows, err := conn.Query(context.Background(), `SELECT `+strings.Join(quoted(names), ", ")+` FROM ckm.`+table+` ORDER BY `+strings.Join(pgOrder, ", ")+``)
		require.NoError(t, err)
		for prows.Next() {
			vals, err := prows.Values()
			require.NoError(t, err)
			pgRows = append(pgRows, normalise(vals))
		}
		require.NoError(t, prows.Err())
		slices.SortFunc(duck, func(a, b []string) int { return slices.Compare(a, b) })
		slices.SortFunc(pgRows, func(a, b []string) int { return slices.Compare(a, b) })
		require.Equal(t, len(duck), len(pgRows), table)
		require.Equal(t, duck, pgRows, table)
		if table != "clv_holdout" {
			require.NotEmpty(t, duck, table)
		}
	}
}

func quoted(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = pgx.Identifier{n}.Sanitize()
	}
	return out
}

// normalise writes values as text the same way whichever driver read them.
func normalise(vals []any) []string {
	out := make([]string, len(vals))
	for i, v := range vals {
		switch v := v.(type) {
		case nil:
			out[i] = "NULL"
		case float64:
			out[i] = strconv.FormatFloat(v, 'g', -1, 64)
			if math.IsNaN(v) {
				out[i] = "NaN"
			}
		case float32:
			out[i] = strconv.FormatFloat(float64(v), 'g', -1, 32)
		case int8, int16, int32, int64, int, uint8, uint16, uint32:
			out[i] = fmt.Sprint(v)
		case time.Time:
			out[i] = v.UTC().Format(time.RFC3339Nano)
		default:
			out[i] = fmt.Sprint(v)
		}
	}
	return out
}

// The schema name and the DSN are operators' input: an odd schema name is quoted, never
// spliced into SQL; a configured output without its variable, or with a wrong password, fails
// the publish with a clear line that never shows the password, and the run stays committed.
func TestPostgresSchemaAndDSNAreHandledAsInput(t *testing.T) {
	pg := pgtest.Start(t)
	cfg, err := os.ReadFile(filepath.Join(testutil.RepoRoot(), "config.yaml"))
	require.NoError(t, err)
	dir := t.TempDir()
	text := strings.ReplaceAll(string(cfg), "${CKM_DATA:-data/sample}", filepath.Join(testutil.RepoRoot(), "data", "sample"))
	text = strings.ReplaceAll(text, "${CKM_WAREHOUSE:-data/ckm.duckdb}", "ckm.duckdb")
	env := testutil.OpenYAML(t, dir, text+`
publish:
  postgres: {dsn_env: SCORES_PG, schema: 'odd "schema"; DROP TABLE x; --'}
`)
	run := func(asOf string) error {
		date, err := time.Parse(time.DateOnly, asOf)
		require.NoError(t, err)
		_, err = env.Runner().Run(context.Background(), pipelines.Request{Pipeline: "nightly", AsOf: date})
		return err
	}
	t.Setenv("SCORES_PG", "")
	require.ErrorContains(t, run("2026-06-30"), "publish.postgres: the environment variable SCORES_PG, which holds the DSN, is not set")

	t.Setenv("SCORES_PG", pg.DSN("postgres", pg.Admin, "not-"+pg.Password))
	err = run("2026-06-30")
	require.ErrorContains(t, err, "publish 2026-06-30 to PostgreSQL schema odd \"schema\"; DROP TABLE x; --: connect:")
	require.NotContains(t, err.Error(), pg.Password)
	t.Setenv("SCORES_PG", "postgres://u:secret-pw@[::1:bad/x")
	err = run("2026-06-30")
	require.ErrorContains(t, err, "parse the DSN")
	require.NotContains(t, err.Error(), "secret-pw")
	var succeeded int
	require.NoError(t, env.Warehouse.DB().QueryRow(`SELECT count(*) FROM pipeline_runs WHERE status = 'succeeded' AND postgres_published_at IS NULL`).Scan(&succeeded))
	require.Equal(t, 3, succeeded, "each run committed in DuckDB though PostgreSQL was not published")

	t.Setenv("SCORES_PG", pg.AdminDSN("postgres"))
	require.NoError(t, run("2026-06-30"))
	conn, err := pgx.Connect(context.Background(), pg.AdminDSN("postgres"))
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var rows int
	require.NoError(t, conn.QueryRow(context.Background(), `SELECT count(*) FROM "odd ""schema""; DROP TABLE x; --".customer_rfm`).Scan(&rows))
	require.Positive(t, rows)
}
