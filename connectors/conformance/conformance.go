// Package conformance is the test suite every connector passes, in the spirit of Conduit's
// acceptance tests: records are delivered, a restart resumes from the stored position, a crash
// or a cancellation between handing a batch over and its commit loses and doubles nothing,
// redelivered records are absorbed by the canonical key, bad records land in dead_letters with
// their positions while good ones load, no goroutine outlives a read, and a streaming source
// follows its input. It ingests only (no scoring, no publishing) into a real warehouse file.
//
// A connector's test supplies a Fixture that writes records into the connector's medium (a
// directory, a topic, a database table) and the source block that reads them:
//
//	func TestConformance(t *testing.T) {
//		conformance.Run(t, func() conformance.Fixture { return &fixture{} }, conformance.Options{})
//	}
package conformance

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/ckm-dev/ckm/connectors"
	"github.com/ckm-dev/ckm/internal/testutil"
	"github.com/ckm-dev/ckm/pipelines"
)

// Order is one test record, written by the fixture in its connector's own format.
type Order struct {
	ID       string
	Customer string
	TS       time.Time
	Amount   float64
}

// Fixture adapts one connector kind to the suite.
type Fixture interface {
	// Setup prepares an empty medium (a directory, a topic, a table) for one test, in dir.
	Setup(t *testing.T, dir string)
	// SourceYAML is the source's block, indented under `sources.orders:`: table orders, the
	// connector block, and a mapping of the fixture's fields onto order_id, customer_id,
	// order_ts, amount. The source hands over each Append as one batch or more (the suite
	// needs several batches to crash between).
	SourceYAML() string
	// Append delivers records as new data in the medium.
	Append(t *testing.T, orders []Order)
	// AppendBad delivers n malformed records (unparseable, wrong types or missing keys).
	AppendBad(t *testing.T, n int)
}

// Options say which tests do not apply to a connector, and why (the reason is printed).
type Options struct {
	Skip map[string]string
}

// Test names, for Options.Skip.
const (
	Delivers           = "delivers every record"
	Resumes            = "resumes from its stored position"
	CrashBeforeCommit  = "a crash before a batch commits loses and doubles nothing"
	CancelMidBatch     = "cancellation mid-batch loses and doubles nothing"
	AbsorbsRedelivered = "absorbs redelivered records"
	DeadLetters        = "dead-letters bad records with their positions"
	MaxBadRatio        = "fails past max_bad_ratio of at least 100 records and loads nothing of that batch"
	Follows            = "follows its input"
	Replays            = "replays its dead letters, or refuses to, doubling nothing"
)

// Run runs the suite against fixtures newFixture makes, one per test.
func Run(t *testing.T, newFixture func() Fixture, opts Options) {
	test := func(name string, f func(t *testing.T, s *suite)) {
		t.Run(name, func(t *testing.T) {
			if why, ok := opts.Skip[name]; ok {
				t.Skip(why)
			}
			// Checked once the fixture's medium and the warehouse are closed (cleanups run last
			// registered first): nothing the connector started outlives them.
			before := goleak.IgnoreCurrent()
			t.Cleanup(func() { goleak.VerifyNone(t, before) })
			f(t, start(t, newFixture()))
		})
	}
	test(Delivers, func(t *testing.T, s *suite) {
		s.f.Append(t, orders(0, 500))
		res := s.ingest(t)
		require.EqualValues(t, 500, res.Read)
		require.EqualValues(t, 500, res.Loaded)
		s.requireOrders(t, 0, 500)
	})
	test(Resumes, func(t *testing.T, s *suite) {
		s.f.Append(t, orders(0, 300))
		s.ingest(t)
		require.NotEmpty(t, s.positions(t), "the source stored where it stands")
		again := s.ingest(t)
		require.EqualValues(t, 0, again.Read, "a rerun with nothing new reads nothing")
		s.f.Append(t, orders(300, 450))
		next := s.ingest(t)
		require.EqualValues(t, 150, next.Read, "only the new records are read")
		s.requireOrders(t, 0, 450)
	})
	test(CrashBeforeCommit, func(t *testing.T, s *suite) {
		s.appendInParts(t)
		crash := errors.New("crash before commit")
		w := &interceptor{fail: 2, err: crash}
		err := s.readDirect(t, context.Background(), w)
		require.ErrorIs(t, err, crash, "the crash stops the read")
		require.Equal(t, 2, w.calls, "the source hands over more than one batch (configure smaller batches in the fixture)")
		committed := w.committed.Read
		res := s.ingest(t)
		require.EqualValues(t, 450-committed, res.Read, "the restart reads exactly what was not committed")
		s.requireOrders(t, 0, 450)
	})
	test(CancelMidBatch, func(t *testing.T, s *suite) {
		s.appendInParts(t)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		w := &interceptor{fail: 2, cancel: cancel}
		err := s.readDirect(t, ctx, w)
		require.ErrorIs(t, err, context.Canceled, "a cancelled read says so")
		res := s.ingest(t)
		require.EqualValues(t, 450-w.committed.Read, res.Read, "the restart reads exactly what was not committed")
		s.requireOrders(t, 0, 450)
	})
	test(AbsorbsRedelivered, func(t *testing.T, s *suite) {
		s.f.Append(t, orders(0, 200))
		s.ingest(t)
		redelivered := orders(100, 250)
		for i := range redelivered {
			redelivered[i].Amount += 1000 // a correction: the newest delivery wins
		}
		s.f.Append(t, redelivered)
		s.ingest(t)
		var n, corrected int
		require.NoError(t, s.db().QueryRow(`SELECT count(*), count(*) FILTER (amount >= 1000) FROM orders`).Scan(&n, &corrected))
		require.Equal(t, 250, n, "each order_id once")
		require.Equal(t, 150, corrected, "redelivered records replace the earlier version")
	})
	test(DeadLetters, func(t *testing.T, s *suite) {
		s.f.Append(t, orders(0, 400))
		s.f.AppendBad(t, 7)
		res := s.ingest(t)
		require.EqualValues(t, 400, res.Loaded)
		require.EqualValues(t, 7, res.DeadLettered)
		require.EqualValues(t, 407, res.Read)
		s.requireOrders(t, 0, 400)
		rows, err := s.db().Query(`SELECT source, position, reason, stream FROM dead_letters ORDER BY position`)
		require.NoError(t, err)
		defer rows.Close()
		positions := map[string]bool{}
		for rows.Next() {
			var src, pos, reason string
			var stream sql.NullString
			require.NoError(t, rows.Scan(&src, &pos, &reason, &stream))
			require.Equal(t, "orders", src)
			require.NotEmpty(t, pos, "a dead letter names where the record was")
			require.NotEmpty(t, reason, "a dead letter says why")
			require.NotEmpty(t, stream.String, "a dead letter names its stream")
			positions[pos] = true
		}
		require.NoError(t, rows.Err())
		require.Len(t, positions, 7, "each bad record has a position of its own")
		again := s.ingest(t)
		require.EqualValues(t, 0, again.Read, "bad records are not read again")
	})
	test(MaxBadRatio, func(t *testing.T, s *suite) {
		// max_bad_ratio 0.1 of at least 100 records: a run may always have 10 bad ones.
		s.f.AppendBad(t, 10)
		res := s.ingest(t)
		require.EqualValues(t, []int64{10, 10}, []int64{res.Read, res.DeadLettered}, "10 bad records alone are within 0.1 × 100")
		s.f.AppendBad(t, 11)
		s.f.Append(t, orders(0, 5))
		_, err := s.ingestCtx(context.Background(), false)
		require.Error(t, err)
		require.Contains(t, err.Error(), "max_bad_ratio")
		var n int
		require.NoError(t, s.db().QueryRow(`SELECT count(*) FROM orders`).Scan(&n))
		require.LessOrEqual(t, n, 5, "records of a rejected batch are not half-loaded")
	})
	test(Replays, func(t *testing.T, s *suite) {
		s.f.Append(t, orders(0, 100))
		s.f.AppendBad(t, 5)
		s.ingest(t)
		res, err := s.env.Runner().ReplayDeadLetters(context.Background(), "orders")
		if err != nil {
			require.ErrorContains(t, err, "cannot replay dead letters", "a connector that does not replay says so")
		} else {
			// The mapping is unchanged: what is replayed is bad again, in place of the old.
			require.Zero(t, res.Loaded)
			require.LessOrEqual(t, res.Read, int64(5))
			require.Equal(t, res.Read, res.DeadLettered)
		}
		var current int
		require.NoError(t, s.db().QueryRow(`SELECT count(*) FROM dead_letters WHERE superseded_by IS NULL`).Scan(&current))
		require.Equal(t, 5, current, "one current dead letter per bad record")
		s.requireOrders(t, 0, 100)
		require.EqualValues(t, 0, s.ingest(t).Read, "a replay moves no stored position")
	})
	test(Follows, func(t *testing.T, s *suite) {
		if !s.kind.Spec.Streaming {
			t.Skipf("%s is not a streaming source (its Spec says so): it reads what is there and stops", s.kind.Name)
		}
		// A bad record alone in the first micro-batch is a dead letter, not a failed follow.
		s.f.AppendBad(t, 1)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			_, err := s.ingestCtx(ctx, true)
			done <- err
		}()
		s.waitFor(t, "dead letters", `SELECT count(*) FROM dead_letters`, 1, done)
		s.f.Append(t, orders(0, 100))
		s.waitForOrders(t, 100, done)
		s.f.Append(t, orders(100, 250))
		s.waitForOrders(t, 250, done)
		cancel()
		require.NoError(t, <-done, "a follow that is told to stop ends without error")
		s.requireOrders(t, 0, 250)
	})
}

type suite struct {
	f    Fixture
	kind connectors.Kind
	env  *testutil.Env
}

func start(t *testing.T, f Fixture) *suite {
	dir := t.TempDir()
	f.Setup(t, dir)
	yaml := fmt.Sprintf("warehouse: {path: ckm.duckdb, threads: 2}\ntimezone: UTC\nmax_bad_ratio: 0.1\nsources:\n  orders:\n%s\n", f.SourceYAML())
	env := testutil.OpenYAML(t, dir, yaml)
	kind, ok := connectors.Lookup(env.Config.Sources["orders"].Kind)
	require.True(t, ok)
	return &suite{f: f, kind: kind, env: env}
}

func (s *suite) db() *sql.DB { return s.env.Warehouse.DB() }

// appendInParts delivers orders 0..450 in three appends: at least three batches.
func (s *suite) appendInParts(t *testing.T) {
	for i := range 3 {
		s.f.Append(t, orders(150*i, 150*(i+1)))
	}
}

func (s *suite) ingestCtx(ctx context.Context, follow bool) (pipelines.SourceResult, error) {
	return s.env.Runner().Ingest(ctx, "orders", follow)
}

func (s *suite) ingest(t *testing.T) pipelines.SourceResult {
	res, err := s.ingestCtx(context.Background(), false)
	require.NoError(t, err)
	return res
}

// readDirect opens the connector as a run does and reads through w, which hands batches on to
// the run's writer.
func (s *suite) readDirect(t *testing.T, ctx context.Context, w *interceptor) error {
	conn, err := s.env.Warehouse.Conn(context.Background())
	require.NoError(t, err)
	defer conn.Close()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := s.env.Config
	env := connectors.Env{Source: "orders", Table: "orders", BaseDir: cfg.BaseDir, RunID: "conformance", DB: conn,
		Positions: pipelines.StoredPositions(conn, "orders"), Log: log}
	src, err := s.kind.Open(ctx, env, cfg.Sources["orders"].Options)
	require.NoError(t, err)
	w.next = pipelines.NewSourceWriter(conn, cfg, "orders", "conformance", log)
	return src.Read(ctx, w)
}

// interceptor hands batches to the writer until its fail-th, which never reaches the writer:
// it returns err as a process that died before the commit would, or cancels the read's context
// and hands the batch on, as a shutdown mid-batch does.
type interceptor struct {
	next      connectors.Writer
	fail      int
	err       error
	cancel    context.CancelFunc
	calls     int
	committed connectors.BatchStats
}

func (i *interceptor) Write(ctx context.Context, b connectors.Batch) (connectors.BatchStats, error) {
	i.calls++
	if i.calls == i.fail {
		if i.cancel == nil {
			return connectors.BatchStats{}, i.err
		}
		i.cancel()
	}
	st, err := i.next.Write(ctx, b)
	if err == nil {
		i.committed.Add(st)
	}
	return st, err
}

// positions lists what the runtime stores for the source.
func (s *suite) positions(t *testing.T) map[string]string {
	p, err := pipelines.StoredPositions(s.db(), "orders").Load(context.Background())
	require.NoError(t, err)
	return p
}

// waitForOrders waits until the orders table holds n rows, failing if the follow ends first.
func (s *suite) waitForOrders(t *testing.T, n int, done <-chan error) {
	s.waitFor(t, "orders", `SELECT count(*) FROM orders`, n, done)
}

// waitFor waits until count (a query of one count) reaches n, failing if the follow ends first.
func (s *suite) waitFor(t *testing.T, what, count string, n int, done <-chan error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		var got int
		require.NoError(t, s.db().QueryRow(count).Scan(&got))
		if got >= n {
			return
		}
		select {
		case err := <-done:
			t.Fatalf("the follow ended before %d %s arrived (%d did): %v", n, what, got, err)
		default:
		}
		require.True(t, time.Now().Before(deadline), "%d of %d %s after 30 s of following", got, n, what)
		time.Sleep(50 * time.Millisecond)
	}
}

// requireOrders checks the orders table holds exactly orders(from, to), each once, with its amount.
func (s *suite) requireOrders(t *testing.T, from, to int) {
	want := orders(from, to)
	var n, distinct int
	var total float64
	require.NoError(t, s.db().QueryRow(`SELECT count(*), count(DISTINCT order_id), coalesce(sum(amount), 0) FROM orders`).Scan(&n, &distinct, &total))
	require.Equal(t, len(want), n)
	require.Equal(t, len(want), distinct)
	var wantTotal float64
	for _, o := range want {
		wantTotal += o.Amount
	}
	require.InDelta(t, wantTotal, total, 1e-6)
	var id, customer string
	var ts time.Time
	var amount float64
	first := want[0]
	require.NoError(t, s.db().QueryRow(`SELECT order_id, customer_id, order_ts, amount FROM orders WHERE order_id = ?`, first.ID).Scan(&id, &customer, &ts, &amount))
	require.Equal(t, first.Customer, customer)
	require.True(t, first.TS.Equal(ts), "order_ts %s, want %s", ts, first.TS)
	require.InDelta(t, first.Amount, amount, 1e-9)
}

// orders are deterministic test records with ids from..to-1 over January 2026.
func orders(from, to int) []Order {
	out := make([]Order, 0, to-from)
	for i := from; i < to; i++ {
		out = append(out, Order{
			ID:       fmt.Sprintf("O%06d", i),
			Customer: fmt.Sprintf("C%04d", i%97),
			TS:       time.Date(2026, 1, 1+i%30, i%24, i%60, 0, 0, time.UTC),
			Amount:   float64(1+i%50) + 0.25,
		})
	}
	return out
}
