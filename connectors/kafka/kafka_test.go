package kafka

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"

	"github.com/ckm-dev/ckm/config"
	"github.com/ckm-dev/ckm/connectors"
	"github.com/ckm-dev/ckm/internal/devkafka"
	"github.com/ckm-dev/ckm/pipelines"
	"github.com/ckm-dev/ckm/warehouse"
)

// stage is a broker with a topic of orders and a warehouse with a Kafka source reading it.
type stage struct {
	broker *devkafka.Broker
	cfg    *config.Config
	w      *warehouse.Warehouse
	log    *slog.Logger
}

const ordersMapping = `mapping: {order_id: id, customer_id: cust, order_ts: ts, amount: amt, status: {const: completed}}`

func newStage(t *testing.T, partitions int32, kafkaOpts, sourceExtra string) *stage {
	b, err := devkafka.Start(devkafka.Options{Topics: map[string]int32{"orders": partitions}})
	require.NoError(t, err)
	t.Cleanup(b.Close)
	return newStageOn(t, b, kafkaOpts, sourceExtra)
}

func newStageOn(t *testing.T, b *devkafka.Broker, kafkaOpts, sourceExtra string) *stage {
	if !strings.Contains(kafkaOpts, "connect_timeout") {
		kafkaOpts += ", connect_timeout: 2s"
	}
	return openStage(t, b, fmt.Sprintf(`warehouse: {path: ckm.duckdb, threads: 2}
max_bad_ratio: 0.9
sources:
  orders:
    table: orders
    kafka: {brokers: ["%s"], topics: [orders]%s}
    %s
%s
pipelines:
  p: {transforms: [rfm]}
`, b.Addr, kafkaOpts, ordersMapping, sourceExtra))
}

// openStage writes yaml as the config of a fresh warehouse reading from b.
func openStage(t *testing.T, b *devkafka.Broker, yaml string) *stage {
	path := filepath.Join(t.TempDir(), "config.yaml")
	require.NoError(t, os.WriteFile(path, []byte(yaml), 0o644))
	cfg, err := config.Load(path)
	require.NoError(t, err, yaml)
	w, err := warehouse.Open(context.Background(), warehouse.Options{Path: cfg.Warehouse.Path, Threads: 2})
	require.NoError(t, err)
	t.Cleanup(func() { w.Close() })
	return &stage{broker: b, cfg: cfg, w: w, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

func (s *stage) runner() *pipelines.Runner {
	return &pipelines.Runner{Config: s.cfg, Warehouse: s.w, Log: s.log}
}

// produceOrders produces devkafka.Orders(from, to).
func (s *stage) produceOrders(t *testing.T, from, to int) {
	p := devkafka.NewProducer(s.broker.Addr)
	defer p.Close()
	require.NoError(t, p.Produce(context.Background(), "orders", devkafka.Orders(from, to)))
}

// waitForOrders waits until a follow has loaded n orders. The deadline only ends a follow that
// hangs: 50 batches under -race on two busy cores took over 30 s.
func (s *stage) waitForOrders(t *testing.T, n int) {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var got int
		require.NoError(t, s.w.DB().QueryRow(`SELECT count(*) FROM orders`).Scan(&got))
		if got == n {
			return
		}
		require.True(t, time.Now().Before(deadline), "%d of %d orders loaded", got, n)
		time.Sleep(50 * time.Millisecond)
	}
}

// countingWriter is the pipeline's writer, adding up what its committed batches did.
type countingWriter struct {
	connectors.Writer
	stats *tally
}

func (c countingWriter) Write(ctx context.Context, b connectors.Batch) (connectors.BatchStats, error) {
	st, err := c.Writer.Write(ctx, b)
	if err == nil {
		c.stats.add(st)
	}
	return st, err
}

// tally adds up batch stats from several goroutines.
type tally struct {
	mu    sync.Mutex
	stats connectors.BatchStats
}

func (t *tally) add(st connectors.BatchStats) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.stats.Add(st)
}

func (t *tally) total() connectors.BatchStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.stats
}

// reader opens the source as a run would, on its own warehouse connection.
func (s *stage) reader(t *testing.T, runID string) (*Source, connectors.Writer, func()) {
	conn, err := s.w.Conn(context.Background())
	require.NoError(t, err)
	src := s.cfg.Sources["orders"]
	env := connectors.Env{Source: "orders", Table: "orders", BaseDir: s.cfg.BaseDir, RunID: runID, DB: conn,
		Positions: pipelines.StoredPositions(conn, "orders"), Log: s.log}
	k, err := Open(env, *src.Options.(*Config))
	require.NoError(t, err)
	return k, pipelines.NewSourceWriter(conn, s.cfg, "orders", runID, s.log), func() { conn.Close() }
}

var errCrash = errors.New("simulated crash")

// requireExactlyOnce checks that orders 0..n-1 are each in the table once, with their amount,
// that the committed batches merged n rows in all and absorbed no message delivered twice (a
// redelivery of the same record collapses silently into the table, so only the stats show it),
// and that the stored offsets are the partitions' ends.
func (s *stage) requireExactlyOnce(t *testing.T, n int, st connectors.BatchStats) {
	var rows, distinct int
	var total float64
	require.NoError(t, s.w.DB().QueryRow(`SELECT count(*), count(DISTINCT order_id), sum(amount) FROM orders`).Scan(&rows, &distinct, &total))
	want := 0.0
	for i := range n {
		want += float64(i%100) + 0.5
	}
	require.Equal(t, n, rows, "every message once")
	require.Equal(t, n, distinct)
	require.InDelta(t, want, total, 1e-6)
	require.EqualValues(t, n, st.Loaded, "committed batches merged each message")
	require.Zero(t, st.Collapsed+st.Replaced, "no message was committed twice")
	require.EqualValues(t, n, st.Read, "no message was read into a committed batch twice")
	var stored int64
	require.NoError(t, s.w.DB().QueryRow(`SELECT coalesce(sum(next_offset), 0) FROM ingest_offsets WHERE source = 'orders'`).Scan(&stored))
	require.EqualValues(t, n, stored, "stored offsets are the ends of the partitions")
	var badPositions int
	require.NoError(t, s.w.DB().QueryRow(`SELECT count(*) FROM orders WHERE NOT regexp_matches(_position, '^orders/[0-9]+@[0-9]+$')`).Scan(&badPositions))
	require.Zero(t, badPositions, "each row names its topic/partition@offset")
}

// requireGroupCaughtUp checks the consumer group's committed offsets (the lag hint) reached the
// partitions' ends.
func (s *stage) requireGroupCaughtUp(t *testing.T, partitions, n int) {
	client := &kafka.Client{Addr: kafka.TCP(s.broker.Addr), Transport: &kafka.Transport{}}
	ids := make([]int, partitions)
	for i := range ids {
		ids[i] = i
	}
	res, err := client.OffsetFetch(context.Background(), &kafka.OffsetFetchRequest{GroupID: "ckm-orders", Topics: map[string][]int{"orders": ids}})
	require.NoError(t, err)
	var committed int64
	for _, p := range res.Topics["orders"] {
		require.NoError(t, p.Error)
		committed += p.CommittedOffset
	}
	require.EqualValues(t, n, committed, "the group's committed offsets show no lag")
}

func TestStoppedAtRandomPointsEveryMessageLandsExactlyOnce(t *testing.T) {
	const n = 120_000
	s := newStage(t, 6, ", batch_size: 4000", "")
	s.produceOrders(t, 0, n)
	rng := rand.New(rand.NewPCG(7, 11))
	var loaded tally
	var crashes, stops int
	for attempt := 0; ; attempt++ {
		require.Less(t, attempt, 60, "the reader never finished")
		src, w, closeConn := s.reader(t, fmt.Sprintf("run-%d", attempt))
		chaos := attempt < 12
		if chaos && attempt%2 == 0 {
			// Stop right after a DuckDB commit, before the group commit.
			after := rng.IntN(4)
			src.afterCommit = func() error {
				if after == 0 {
					return errCrash
				}
				after--
				return nil
			}
		}
		ctx, cancel := context.WithCancel(context.Background())
		if chaos && attempt%2 == 1 {
			// Stop at an arbitrary moment: mid-fetch, mid-write, between batches.
			time.AfterFunc(time.Duration(50+rng.IntN(400))*time.Millisecond, cancel)
		}
		err := src.Read(ctx, countingWriter{w, &loaded})
		cancel()
		closeConn()
		if err == nil {
			break
		}
		switch {
		case errors.Is(err, errCrash):
			crashes++
		case errors.Is(err, context.Canceled):
			stops++
		default:
			t.Fatalf("unexpected error: %v", err)
		}
	}
	t.Logf("%d crashes after the DuckDB commit, %d stops at random times", crashes, stops)
	require.Positive(t, crashes)
	require.Positive(t, stops)
	s.requireExactlyOnce(t, n, loaded.total())
	s.requireGroupCaughtUp(t, 6, n)
}

// Two readers at once (a second process started by mistake, or the same source in two runs)
// read the same partitions: the stored offsets' compare-and-set lets one commit each range, the
// other rolls back and rereads, so nothing is dropped or doubled.
func TestTwoReadersAtOnceNeitherDropNorDouble(t *testing.T) {
	const n = 100_000
	s := newStage(t, 6, ", batch_size: 2000", "")
	s.produceOrders(t, 0, n)
	var loadedA, loadedB tally
	a, wa, closeA := s.reader(t, "run-a")
	defer closeA()
	b, wb, closeB := s.reader(t, "run-b")
	defer closeB()
	// After A's first commit, A waits until B, started then, has read a batch of its own: both
	// then hold batches read from the same stored offsets.
	gateB := &gatedWriter{countingWriter: countingWriter{wb, &loadedB}, reached: make(chan struct{}), release: make(chan struct{})}
	close(gateB.release)
	firstCommit := make(chan struct{})
	var once sync.Once
	a.afterCommit = func() error {
		once.Do(func() { close(firstCommit); <-gateB.reached })
		return nil
	}
	var wg sync.WaitGroup
	var errA, errB error
	wg.Go(func() { errA = a.Read(context.Background(), countingWriter{wa, &loadedA}) })
	<-firstCommit
	wg.Go(func() { errB = b.Read(context.Background(), gateB) })
	wg.Wait()
	require.NoError(t, errA)
	require.NoError(t, errB)
	both := loadedA.total()
	both.Add(loadedB.total())
	t.Logf("reader A merged %d, reader B %d", loadedA.total().Loaded, loadedB.total().Loaded)
	s.requireExactlyOnce(t, n, both)
}

// gatedWriter holds its first batch until released, and keeps the error that batch got.
type gatedWriter struct {
	countingWriter
	reached, release chan struct{}
	once             sync.Once
	firstErr         error
}

func (g *gatedWriter) Write(ctx context.Context, b connectors.Batch) (connectors.BatchStats, error) {
	first := false
	g.once.Do(func() { first = true })
	if !first {
		return g.countingWriter.Write(ctx, b)
	}
	close(g.reached)
	<-g.release
	st, err := g.countingWriter.Write(ctx, b)
	g.firstErr = err
	return st, err
}

// A stale reader — one that read the stored offsets before another reader moved them on, like
// a process resuming from an older offset — tries to commit the batch it read from there: the
// compare-and-set refuses it, so nothing is committed twice and the stored offset never goes
// back; the stale reader then rereads the stored offsets and finds nothing left to do.
func TestAStaleReaderIsRefusedItsCommit(t *testing.T) {
	const n = 10_000
	s := newStage(t, 1, ", batch_size: 2000", "")
	s.produceOrders(t, 0, n)
	var loaded tally

	// A first reader commits one batch and stops: the stored offset is 2000.
	first, w, closeFirst := s.reader(t, "run-first")
	first.afterCommit = func() error { return errCrash }
	require.ErrorIs(t, first.Read(context.Background(), countingWriter{w, &loaded}), errCrash)
	closeFirst()

	// The stale reader reads the stored offset and a batch from it, then stalls before its commit.
	stale, ws, closeStale := s.reader(t, "run-stale")
	defer closeStale()
	var staleLoaded tally
	gate := &gatedWriter{countingWriter: countingWriter{ws, &staleLoaded}, reached: make(chan struct{}), release: make(chan struct{})}
	staleDone := make(chan error, 1)
	go func() { staleDone <- stale.Read(context.Background(), gate) }()
	<-gate.reached

	// Meanwhile a newer reader reads everything to the end.
	newer, wn, closeNewer := s.reader(t, "run-newer")
	require.NoError(t, newer.Read(context.Background(), countingWriter{wn, &loaded}))
	closeNewer()

	close(gate.release)
	require.NoError(t, <-staleDone, "the stale reader rereads the stored offsets and finds the partition read")
	require.ErrorIs(t, gate.firstErr, connectors.ErrPositionMoved, "the stale batch's commit is refused")
	require.Zero(t, staleLoaded.total(), "the stale reader committed nothing")
	s.requireExactlyOnce(t, n, loaded.total())
}

func TestBrokerLostMidRunFailsCleanlyAndTheNextRunResumes(t *testing.T) {
	const n = 50_000
	s := newStage(t, 4, ", batch_size: 2500", "")
	s.produceOrders(t, 0, n)
	var loaded tally
	src, w, closeConn := s.reader(t, "run-1")
	commits := 0
	var restore func()
	src.afterCommit = func() error {
		if commits++; commits == 3 {
			restore = s.broker.Outage()
		}
		return nil
	}
	err := src.Read(context.Background(), countingWriter{w, &loaded})
	closeConn()
	require.Error(t, err)
	require.Contains(t, err.Error(), s.broker.Addr, "the error names the broker")
	var rows, stored int64
	require.NoError(t, s.w.DB().QueryRow(`SELECT count(*), (SELECT sum(next_offset) FROM ingest_offsets) FROM orders`).Scan(&rows, &stored))
	require.Equal(t, rows, stored, "rows and offsets committed together: nothing half-written")
	require.EqualValues(t, loaded.total().Loaded, rows)
	require.Less(t, rows, int64(n))
	restore()

	src, w, closeConn = s.reader(t, "run-2")
	defer closeConn()
	require.NoError(t, src.Read(context.Background(), countingWriter{w, &loaded}))
	s.requireExactlyOnce(t, n, loaded.total())
}

// Brokers that refuse the connection, every one of them, fail the run at once, naming each: a
// wrong address is not mended by waiting connect_timeout (brokers lost mid-run are retried:
// TestBrokerLostMidRunFailsCleanlyAndTheNextRunResumes).
func TestUnreachableBrokersFailWithTheirAddresses(t *testing.T) {
	b, err := devkafka.Start(devkafka.Options{Topics: map[string]int32{"orders": 1}})
	require.NoError(t, err)
	addr := b.Addr
	b.Close() // nothing listens there now
	s := newStageOn(t, &devkafka.Broker{Addr: addr}, ", connect_timeout: 10m", "")
	r := s.runner()
	_, err = r.Ingest(context.Background(), "orders", false)
	require.Error(t, err)
	require.Contains(t, err.Error(), "cannot reach any kafka broker ("+addr+": connection refused)")
}

func TestBadMessagesAreDeadLetteredWithTheirCoordinatesAndPayload(t *testing.T) {
	s := newStage(t, 2, `, max_message_bytes: 2KiB`, "")
	big := fmt.Sprintf(`{"id": "BIG", "cust": "C1", "ts": "2026-01-02T00:00:00Z", "amt": 1, "note": "%s"}`, strings.Repeat("x", 3000))
	msgs := []devkafka.Message{
		{Value: devkafka.Order(1).Value},
		{Value: []byte(`{"id": "B1", "cust": "C1", "ts": "2026-01-02T00:00:00Z", "amt": 1`)},       // malformed
		{Value: []byte(`{"id": "B2", "cust": "C1", "ts": "2026-01-02T00:00:00Z", "amt": "many"}`)}, // wrong type
		{Value: []byte(`{"id": "B3", "cust": "C1", "amt": 3}`)},                                    // no timestamp
		{Value: []byte(`"just a string"`)},
		{Value: []byte(big)},
		{Value: devkafka.Order(2).Value},
		{Key: []byte("tombstone")}, // no value: skipped, not a dead letter
	}
	p := devkafka.NewProducer(s.broker.Addr)
	defer p.Close()
	require.NoError(t, p.Produce(context.Background(), "orders", msgs))

	r := s.runner()
	res, err := r.Ingest(context.Background(), "orders", false)
	require.NoError(t, err)
	require.EqualValues(t, 2, res.Loaded)
	require.EqualValues(t, 5, res.DeadLettered)

	rows, err := s.w.DB().Query(`SELECT position, reason, payload FROM dead_letters ORDER BY position`)
	require.NoError(t, err)
	defer rows.Close()
	reasons := map[string]string{}
	client := &kafka.Client{Addr: kafka.TCP(s.broker.Addr), Transport: &kafka.Transport{}}
	for rows.Next() {
		var pos, reason, payload string
		require.NoError(t, rows.Scan(&pos, &reason, &payload))
		var p, off int
		_, err := fmt.Sscanf(pos, "orders/%d@%d", &p, &off)
		require.NoError(t, err, "position %q names topic/partition@offset", pos)
		// The dead letter's payload is what sits at that position in Kafka.
		res, err := client.Fetch(context.Background(), &kafka.FetchRequest{Topic: "orders", Partition: p, Offset: int64(off), MaxBytes: 1 << 20, MaxWait: 100 * time.Millisecond})
		require.NoError(t, err)
		var raw []byte
		for {
			rec, err := res.Records.ReadRecord()
			require.NoError(t, err)
			if rec.Offset == int64(off) {
				raw, err = io.ReadAll(rec.Value)
				require.NoError(t, err)
				break
			}
		}
		require.True(t, strings.HasPrefix(string(raw), payload), "payload at %s", pos)
		reasons[string(raw[:min(len(raw), 13)])] = reason
	}
	require.NoError(t, rows.Err())
	require.Equal(t, "not valid JSON", reasons[`{"id": "B1", `])
	require.Contains(t, reasons[`{"id": "B2", `], "amount: cannot read 'many' as a number")
	require.Contains(t, reasons[`{"id": "B3", `], "missing order_ts (field ts)")
	require.Equal(t, "not a JSON object", reasons[`"just a strin`])
	require.Contains(t, reasons[`{"id": "BIG",`], "exceeds max_message_bytes 2048")
}

// A dead letter outlives the topic's retention: a bad message within max_message_bytes is kept
// whole (here 20,000 bytes with a wrong type), one over it by its first 4,096 bytes.
func TestADeadLetterKeepsItsMessageWhole(t *testing.T) {
	s := newStage(t, 1, ", max_message_bytes: 64KiB", "")
	whole := fmt.Sprintf(`{"id": "W1", "cust": "C1", "ts": "2026-01-02T00:00:00Z", "amt": "many", "note": "%s"}`, strings.Repeat("é", 10_000))
	over := fmt.Sprintf(`{"id": "O1", "cust": "C1", "ts": "2026-01-02T00:00:00Z", "amt": 1, "note": "%s"}`, strings.Repeat("x", 70_000))
	p := devkafka.NewProducer(s.broker.Addr)
	defer p.Close()
	require.NoError(t, p.Produce(context.Background(), "orders", []devkafka.Message{{Value: []byte(whole)}, {Value: []byte(over)}, {Value: devkafka.Order(1).Value}}))
	res, err := s.runner().Ingest(context.Background(), "orders", false)
	require.NoError(t, err)
	require.EqualValues(t, []int64{3, 1, 2}, []int64{res.Read, res.Loaded, res.DeadLettered})
	var payload, reason string
	require.NoError(t, s.w.DB().QueryRow(`SELECT payload, reason FROM dead_letters WHERE position = 'orders/0@0'`).Scan(&payload, &reason))
	require.Equal(t, whole, payload, "all %d bytes", len(whole))
	require.Equal(t, "amount: cannot read 'many' as a number", reason)
	require.NoError(t, s.w.DB().QueryRow(`SELECT payload, reason FROM dead_letters WHERE position = 'orders/0@1'`).Scan(&payload, &reason))
	require.Equal(t, over[:4096], payload)
	require.Contains(t, reason, "exceeds max_message_bytes 65536 (payload holds its first 4096 bytes)")
}

// A topic is read once, by offset, and its retention drops what is old: `ckm ingest --reload`
// refuses a Kafka source, naming it, and reads nothing.
func TestReloadRefusesAKafkaSource(t *testing.T) {
	s := newStage(t, 1, "", "")
	s.produceOrders(t, 0, 10)
	_, err := s.runner().Reload(context.Background(), "orders")
	require.EqualError(t, err, "source orders: the kafka connector cannot read its input again from the start (only file sources reload)")
	var n int
	require.NoError(t, s.w.DB().QueryRow(`SELECT count(*) FROM orders`).Scan(&n))
	require.Zero(t, n)
}

// A topic deleted and created again begins its offsets anew, below the stored ones. Reading on
// from the stored offset would pass over every message the new topic holds below it, without a
// word (it did: the five new orders were never read and the run succeeded). The read stops,
// saying what happened and how to go on; `--restart` reads the partition as never read.
func TestARecreatedTopicStopsTheReadUntilItsPartitionIsRestarted(t *testing.T) {
	s := newStage(t, 1, ", batch_size: 100", "")
	s.produceOrders(t, 0, 20)
	r := s.runner()
	res, err := r.Ingest(context.Background(), "orders", false)
	require.NoError(t, err)
	require.EqualValues(t, 20, res.Loaded)

	require.NoError(t, s.broker.Recreate(context.Background(), "orders", 1))
	s.produceOrders(t, 100, 105)

	_, err = r.Ingest(context.Background(), "orders", false)
	require.ErrorContains(t, err, "source orders: partition orders/0: the stored offset 20 is past the partition's end 5: the topic was deleted and created again")
	require.ErrorContains(t, err, "run `ckm ingest --source orders --restart orders/0`")

	// A follow session reading when the topic is created again stops the same way.
	require.NoError(t, r.Restart(context.Background(), "orders", []string{"orders/0"}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := r.Ingest(ctx, "orders", true)
		done <- err
	}()
	s.waitForOrders(t, 25)
	require.NoError(t, s.broker.Recreate(context.Background(), "orders", 1))
	s.produceOrders(t, 200, 202)
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the follow went on past the recreated topic")
	}
	// Its end is 0 or 2: the follow may look between the topic's creation and the two messages.
	require.Error(t, err)
	require.Regexp(t, `source orders: partition orders/0: the stored offset 5 is past the partition's end [02]: `, err.Error())
	require.ErrorContains(t, r.Restart(context.Background(), "orders", []string{"orders/7"}), `source orders has read no stream "orders/7" (it has read: orders/0)`)

	require.NoError(t, r.Restart(context.Background(), "orders", []string{"orders/0"}))
	res, err = r.Ingest(context.Background(), "orders", false)
	require.NoError(t, err)
	require.EqualValues(t, 2, res.Loaded, "the new topic's messages, from its start")
	var orders, stored int64
	require.NoError(t, s.w.DB().QueryRow(`SELECT count(*) FROM orders`).Scan(&orders))
	require.EqualValues(t, 27, orders)
	require.NoError(t, s.w.DB().QueryRow(`SELECT next_offset FROM ingest_offsets WHERE source = 'orders'`).Scan(&stored))
	require.EqualValues(t, 2, stored)
}

func TestUnknownFieldsAreIgnoredKeptOrRejected(t *testing.T) {
	for _, tc := range []struct {
		policy       string
		loaded, dead int64
		extra        string
	}{
		{"ignore", 3, 0, ""},
		{"keep", 3, 0, `{"coupon":"WINTER","meta":{"src":"app"}}`},
		{"fail", 1, 2, ""},
	} {
		t.Run(tc.policy, func(t *testing.T) {
			s := newStage(t, 1, "", "    unknown_fields: "+tc.policy)
			p := devkafka.NewProducer(s.broker.Addr)
			defer p.Close()
			require.NoError(t, p.Produce(context.Background(), "orders", []devkafka.Message{{Value: devkafka.Order(1).Value},
				{Value: []byte(`{"id": "X", "cust": "C1", "ts": "2026-01-02T00:00:00Z", "amt": 2, "coupon": "WINTER", "meta": {"src": "app"}}`)},
				// A field the mapping does not read, named twice: kept as sent (it failed the whole batch).
				{Value: []byte(`{"id": "Y", "cust": "C1", "ts": "2026-01-02T00:00:00Z", "amt": 2, "tag": "a", "tag": ["b"]}`)}}))
			r := s.runner()
			res, err := r.Ingest(context.Background(), "orders", false)
			require.NoError(t, err)
			require.Equal(t, tc.loaded, res.Loaded)
			require.Equal(t, tc.dead, res.DeadLettered)
			var extra *string
			err = s.w.DB().QueryRow(`SELECT CAST(_extra AS VARCHAR) FROM orders WHERE order_id = 'X'`).Scan(&extra)
			if tc.policy == "fail" {
				var reasons string
				require.NoError(t, s.w.DB().QueryRow(`SELECT string_agg(reason, ' | ' ORDER BY reason) FROM dead_letters`).Scan(&reasons))
				require.Equal(t, "unknown fields: coupon, meta | unknown fields: tag, tag", reasons)
				return
			}
			require.NoError(t, err)
			var twice *string
			require.NoError(t, s.w.DB().QueryRow(`SELECT CAST(_extra AS VARCHAR) FROM orders WHERE order_id = 'Y'`).Scan(&twice))
			if tc.extra == "" {
				require.Nil(t, extra)
				require.Nil(t, twice)
			} else {
				require.JSONEq(t, tc.extra, *extra)
				require.Equal(t, `{"tag":"a","tag":["b"]}`, *twice)
			}
		})
	}
}

func TestFollowLoadsNewMessagesInMicroBatchesUntilStopped(t *testing.T) {
	s := newStage(t, 3, ", flush_interval: 200ms", "")
	r := s.runner()
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var res pipelines.SourceResult
	go func() {
		var err error
		res, err = r.Ingest(ctx, "orders", true)
		done <- err
	}()
	s.produceOrders(t, 0, 1000)
	s.waitForOrders(t, 1000)
	s.produceOrders(t, 1000, 1500)
	s.waitForOrders(t, 1500)
	stop()
	require.NoError(t, <-done, "an interrupt ends continuous ingest cleanly")
	s.requireExactlyOnce(t, 1500, res.BatchStats)
}

// A follow session runs for days: max_bad_ratio judges its latest records (the batches that hold
// the last 10,000), so input that turns bad stops it within about 550 bad messages at 5%. Over
// all its records, 2,000 bad messages after 50,000 good ones (3.8%) would never stop it; a run
// reading the same messages is judged over them all, and loads.
func TestAFollowStopsSoonAfterItsInputTurnsBad(t *testing.T) {
	s := newStage(t, 1, ", flush_interval: 100ms, batch_size: 1000", "    max_bad_ratio: 0.05")
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan error, 1)
	go func() {
		_, err := s.runner().Ingest(ctx, "orders", true)
		done <- err
	}()
	s.produceOrders(t, 0, 50_000)
	s.waitForOrders(t, 50_000)
	bad := make([]devkafka.Message, 2000)
	for i := range bad {
		bad[i].Value = []byte(fmt.Sprintf(`{"id": "B%d", "cust": "C1"`, i))
	}
	p := devkafka.NewProducer(s.broker.Addr)
	defer p.Close()
	require.NoError(t, p.Produce(context.Background(), "orders", bad))

	var err error
	select {
	case err = <-done:
	case <-time.After(2 * time.Minute):
		t.Fatal("the follow went on reading bad messages")
	}
	var ratioErr *pipelines.BadRatioError
	require.True(t, errors.As(err, &ratioErr), "%v", err)
	require.True(t, ratioErr.Latest)
	require.GreaterOrEqual(t, ratioErr.Read, int64(10_000), "judged over at least the window")
	require.Less(t, ratioErr.Read, int64(12_000), "judged over the window and the batch, not all 52,000")
	require.Contains(t, err.Error(), "of the latest")
	require.Contains(t, err.Error(), "first at orders/0@5")
	var deadLetters int
	require.NoError(t, s.w.DB().QueryRow(`SELECT count(*) FROM dead_letters`).Scan(&deadLetters))
	require.Less(t, deadLetters, 600, "the batches before the one that crossed: under 5%% of the window")

	run := newStageOn(t, s.broker, ", batch_size: 1000", "    max_bad_ratio: 0.05")
	res, err := run.runner().Ingest(context.Background(), "orders", false)
	require.NoError(t, err, "2,000 of 52,000 (3.8%) in one run")
	require.EqualValues(t, []int64{52_000, 50_000, 2000}, []int64{res.Read, res.Loaded, res.DeadLettered})
}

func TestSASLMechanismsAuthenticateAndAWrongPasswordFailsClearly(t *testing.T) {
	users := map[string]map[string]string{"PLAIN": {"plainuser": "p1"}, "SCRAM-SHA-256": {"scram256": "p2"}, "SCRAM-SHA-512": {"scram512": "p3"}}
	b, err := devkafka.Start(devkafka.Options{Topics: map[string]int32{"orders": 2}, Users: users})
	require.NoError(t, err)
	t.Cleanup(b.Close)
	p := &kafka.Writer{Addr: kafka.TCP(b.Addr), Topic: "orders", RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond,
		Transport: &kafka.Transport{SASL: plainMechanism("plainuser", "p1")}}
	require.NoError(t, p.WriteMessages(context.Background(), kafka.Message{Value: devkafka.Order(1).Value}, kafka.Message{Value: devkafka.Order(2).Value}))
	require.NoError(t, p.Close())
	for mech, u := range map[string][2]string{"PLAIN": {"plainuser", "p1"}, "SCRAM-SHA-256": {"scram256", "p2"}, "SCRAM-SHA-512": {"scram512", "p3"}} {
		t.Run(mech, func(t *testing.T) {
			t.Setenv("CKM_TEST_KAFKA_PASSWORD", u[1])
			s := newStageOn(t, b, fmt.Sprintf(", sasl: {mechanism: %s, username: %s, password_env: CKM_TEST_KAFKA_PASSWORD}", mech, u[0]), "")
			r := s.runner()
			res, err := r.Ingest(context.Background(), "orders", false)
			require.NoError(t, err)
			require.EqualValues(t, 2, res.Loaded)

			t.Setenv("CKM_TEST_KAFKA_PASSWORD", "wrong")
			s = newStageOn(t, b, fmt.Sprintf(", sasl: {mechanism: %s, username: %s, password_env: CKM_TEST_KAFKA_PASSWORD}, connect_timeout: 500ms", mech, u[0]), "")
			r = s.runner()
			_, err = r.Ingest(context.Background(), "orders", false)
			require.Error(t, err)
			require.Contains(t, err.Error(), b.Addr)
			require.NotContains(t, err.Error(), "wrong", "the password never appears in errors")
			require.Contains(t, err.Error(), "rejected the credentials")
			t.Logf("wrong password: %v", err)
		})
	}
}

func TestTLSWithAPrivateCA(t *testing.T) {
	dir := t.TempDir()
	serverTLS, clientTLS := writeCA(t, dir)
	b, err := devkafka.Start(devkafka.Options{Topics: map[string]int32{"orders": 1}, TLS: serverTLS})
	require.NoError(t, err)
	t.Cleanup(b.Close)
	s := newStageOn(t, b, fmt.Sprintf(", tls: {enabled: true, ca_file: %q, server_name: localhost}", filepath.Join(dir, "ca.pem")), "")
	p := &kafka.Writer{Addr: kafka.TCP(b.Addr), Topic: "orders", RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond,
		Transport: &kafka.Transport{TLS: clientTLS}}
	require.NoError(t, p.WriteMessages(context.Background(), kafka.Message{Value: devkafka.Order(1).Value}))
	require.NoError(t, p.Close())
	r := s.runner()
	res, err := r.Ingest(context.Background(), "orders", false)
	require.NoError(t, err)
	require.EqualValues(t, 1, res.Loaded)

	// Without the CA the broker's certificate is not trusted: a clear failure, not a hang.
	s = newStageOn(t, b, ", tls: {enabled: true}, connect_timeout: 500ms", "")
	r = s.runner()
	_, err = r.Ingest(context.Background(), "orders", false)
	require.ErrorContains(t, err, "certificate")
	t.Logf("untrusted broker: %v", err)
}

func TestAFilterRoutesOneMixedTopicToTwoSources(t *testing.T) {
	b, err := devkafka.Start(devkafka.Options{Topics: map[string]int32{"events": 2}})
	require.NoError(t, err)
	t.Cleanup(b.Close)
	p := devkafka.NewProducer(b.Addr)
	defer p.Close()
	require.NoError(t, p.Produce(context.Background(), "events", []devkafka.Message{
		{Value: []byte(`{"type": "order", "id": "O1", "cust": "C1", "ts": "2026-01-02T00:00:00Z", "amt": 5}`)},
		{Value: []byte(`{"type": "feedback", "id": "E1", "cust": "C1", "ts": "2026-01-03T00:00:00Z", "kind": "praise"}`)},
		{Value: []byte(`{"type": "order", "id": "O2", "cust": "C2", "ts": "2026-01-04T00:00:00Z", "amt": 7}`)},
		{Value: []byte(`{"type": "order", broken`)},
	}))
	s := openStage(t, b, fmt.Sprintf(`warehouse: {path: ckm.duckdb}
max_bad_ratio: 0.5
sources:
  orders:
    table: orders
    filter: "json_extract_string(_doc, '$.type') = 'order'"
    kafka: {brokers: ["%[1]s"], topics: [events]}
    mapping: {order_id: id, customer_id: cust, order_ts: ts, amount: amt, status: {const: completed}}
  feedback:
    table: feedback
    filter: "json_extract_string(_doc, '$.type') = 'feedback'"
    kafka: {brokers: ["%[1]s"], topics: [events]}
    mapping: {event_id: id, customer_id: cust, event_ts: ts, kind: kind, direction: {const: inbound}}
`, b.Addr))
	r := s.runner()
	orders, err := r.Ingest(context.Background(), "orders", false)
	require.NoError(t, err)
	feedback, err := r.Ingest(context.Background(), "feedback", false)
	require.NoError(t, err)
	require.EqualValues(t, 2, orders.Loaded)
	require.EqualValues(t, 1, feedback.Loaded)
	require.EqualValues(t, 1, orders.DeadLettered, "a message no filter can read is each source's dead letter")
	require.EqualValues(t, 1, feedback.DeadLettered)
	var stored int64
	require.NoError(t, s.w.DB().QueryRow(`SELECT sum(next_offset) FROM ingest_offsets WHERE source = 'orders'`).Scan(&stored))
	require.EqualValues(t, 4, stored, "skipped messages are read past, not reread")
}

func TestMessagesDeletedByRetentionBeforeTheyWereReadAreSkippedLoudly(t *testing.T) {
	s := newStage(t, 1, ", batch_size: 100", "")
	p := devkafka.NewProducer(s.broker.Addr)
	defer p.Close()
	for i := range 40 { // one record batch per produce call, so retention can drop some of them
		require.NoError(t, p.Produce(context.Background(), "orders", []devkafka.Message{{Value: devkafka.Order(2 * i).Value}, {Value: devkafka.Order(2*i + 1).Value}}))
	}
	r := s.runner()
	res, err := r.Ingest(context.Background(), "orders", false)
	require.NoError(t, err)
	require.EqualValues(t, 80, res.Loaded)
	for i := 40; i < 80; i++ {
		require.NoError(t, p.Produce(context.Background(), "orders", []devkafka.Message{{Value: devkafka.Order(2 * i).Value}, {Value: devkafka.Order(2*i + 1).Value}}))
	}
	require.NoError(t, s.broker.ApplyRetention(context.Background(), "orders", 2000))
	client := &kafka.Client{Addr: kafka.TCP(s.broker.Addr), Transport: &kafka.Transport{}}
	offs, err := client.ListOffsets(context.Background(), &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{"orders": {kafka.FirstOffsetOf(0)}}})
	require.NoError(t, err)
	first := offs.Topics["orders"][0].FirstOffset
	require.Greater(t, first, int64(80), "retention deleted messages the reader had not read yet")

	res, err = r.Ingest(context.Background(), "orders", false)
	require.NoError(t, err)
	require.EqualValues(t, 160-first, res.Loaded, "everything still kept is read")
	var stored int64
	require.NoError(t, s.w.DB().QueryRow(`SELECT next_offset FROM ingest_offsets`).Scan(&stored))
	require.EqualValues(t, 160, stored)
}

func TestBacklogReportsWhatWaitsPerPartition(t *testing.T) {
	s := newStage(t, 2, ", batch_size: 300", "")
	s.produceOrders(t, 0, 1000)
	r := s.runner()
	before, err := r.Backlog(context.Background(), "orders")
	require.NoError(t, err)
	require.Len(t, before, 2)
	var waiting int64
	for _, b := range before {
		require.EqualValues(t, -1, b.Next, "never read")
		waiting += b.Waiting
	}
	require.EqualValues(t, 1000, waiting)

	src, w, closeConn := s.reader(t, "run-1")
	defer closeConn()
	src.afterCommit = func() error { return errCrash } // stop after the first batch
	require.ErrorIs(t, src.Read(context.Background(), w), errCrash)
	var loaded int64
	require.NoError(t, s.w.DB().QueryRow(`SELECT count(*) FROM orders`).Scan(&loaded))
	after, err := r.Backlog(context.Background(), "orders")
	require.NoError(t, err)
	waiting = 0
	for _, b := range after {
		require.Equal(t, b.End-max(b.Next, 0), b.Waiting, b.Stream)
		waiting += b.Waiting
	}
	require.Equal(t, 1000-loaded, waiting)
	require.Positive(t, loaded)
}

func TestAMissingTopicFailsNamingIt(t *testing.T) {
	b, err := devkafka.Start(devkafka.Options{Topics: map[string]int32{"other": 1}})
	require.NoError(t, err)
	t.Cleanup(b.Close)
	s := newStageOn(t, b, "", "")
	r := s.runner()
	_, err = r.Ingest(context.Background(), "orders", false)
	require.ErrorContains(t, err, "topic orders at "+b.Addr)
	t.Log(err)
}

// Hostile bytes never block a partition: a payload that is not UTF-8 (a Latin-1 café) or holds a
// NUL byte is a dead letter with its position and its bytes kept safely (base64), a binary key
// is fine unless the mapping reads it, NaN, ±Inf and absurd amounts are dead letters, and the
// partition moves on: the offsets reach the end, a rerun reads nothing and a scoring run works.
func TestHostileMessagesAreDeadLetteredAndThePartitionMovesOn(t *testing.T) {
	s := newStage(t, 1, "", "")
	latin1 := []byte("{\"id\": \"L1\", \"cust\": \"caf\xe9\", \"ts\": \"2026-01-02T00:00:00Z\", \"amt\": 1}")
	msgs := []devkafka.Message{
		devkafka.Order(1),
		{Value: latin1},
		{Value: []byte("{\"id\": \"Z1\", \"cust\": \"C\x001\", \"ts\": \"2026-01-02T00:00:00Z\", \"amt\": 1}")},
		{Key: []byte{0xff, 0xfe, 0x01}, Value: devkafka.Order(2).Value}, // a binary key the mapping does not read
		{Value: []byte(`{"id": "N1", "cust": "C1", "ts": "2026-01-02T00:00:00Z", "amt": "NaN"}`)},
		{Value: []byte(`{"id": "N2", "cust": "C1", "ts": "2026-01-02T00:00:00Z", "amt": 1e400}`)},
		{Value: []byte(`{"id": "N3", "cust": "C1", "ts": "2026-01-02T00:00:00Z", "amt": "-inf"}`)},
		{Value: []byte(`{"id": "N4", "cust": "C1", "ts": "2026-01-02T00:00:00Z", "amt": 1e33}`)},
		{Value: []byte(`{"id": "N5", "cust": "C1", "ts": "2026-01-02T00:00:00Z", "amt": 5, "rating": 4.6}`)},
		{Value: []byte(`{"id": "U1", "cust": "C1", "ts": "2026-01-02T00:00:00Z", "amt": 2, "note": "x\u0000y"}`)}, // an escaped NUL the mapping does not read
		{Value: []byte("\ufeff" + `{"id": "B1", "cust": "C1", "ts": "2026-01-02T00:00:00Z", "amt": 3}`)},          // a .NET producer's byte order mark
		devkafka.Order(3),
	}
	p := devkafka.NewProducer(s.broker.Addr)
	defer p.Close()
	require.NoError(t, p.Produce(context.Background(), "orders", msgs))

	res, err := s.runner().Run(context.Background(), pipelines.Request{Pipeline: "p", AsOf: time.Date(2026, 1, 31, 0, 0, 0, 0, time.UTC)})
	require.NoError(t, err, "hostile messages never fail the run")
	src := res.Sources[0]
	require.EqualValues(t, len(msgs), src.Read)
	require.Equal(t, src.Read, src.Loaded+src.DeadLettered+src.Collapsed+src.Skipped)
	require.EqualValues(t, 6, src.DeadLettered)
	ids := map[string]bool{}
	rows, err := s.w.DB().Query(`SELECT order_id FROM orders`)
	require.NoError(t, err)
	for rows.Next() {
		var id string
		require.NoError(t, rows.Scan(&id))
		ids[id] = true
	}
	require.NoError(t, rows.Err())
	rows.Close()
	require.Equal(t, map[string]bool{"O0000001": true, "O0000002": true, "O0000003": true, "N5": true, "U1": true, "B1": true}, ids)

	dead := map[string][2]string{}
	rows, err = s.w.DB().Query(`SELECT position, reason, payload FROM dead_letters`)
	require.NoError(t, err)
	defer rows.Close()
	for rows.Next() {
		var pos, reason, payload string
		require.NoError(t, rows.Scan(&pos, &reason, &payload))
		dead[pos] = [2]string{reason, payload}
	}
	require.NoError(t, rows.Err())
	require.Equal(t, "payload is not valid UTF-8 (byte 0xE9 at offset 25)", dead["orders/0@1"][0])
	require.Equal(t, "base64:"+base64.StdEncoding.EncodeToString(latin1), dead["orders/0@1"][1], "the raw bytes, kept safely")
	require.Equal(t, "payload holds a NUL byte at offset 23", dead["orders/0@2"][0])
	require.Contains(t, dead["orders/0@4"][0], "amount: 'NaN' is not a finite number")
	require.Contains(t, dead["orders/0@5"][0], "amount: '1e400' is not a finite number")
	require.Contains(t, dead["orders/0@6"][0], "amount: '-inf' is not a finite number")
	require.Contains(t, dead["orders/0@7"][0], "amount: '1e33' is not a finite number")
	var next int64
	require.NoError(t, s.w.DB().QueryRow(`SELECT next_offset FROM ingest_offsets`).Scan(&next))
	require.EqualValues(t, len(msgs), next, "the partition moved past every hostile message")
	again, err := s.runner().Ingest(context.Background(), "orders", false)
	require.NoError(t, err)
	require.Zero(t, again.Read)

	// A mapping that reads the key as text dead-letters a message whose key is not UTF-8, and
	// only that one.
	keyed := openStage(t, s.broker, fmt.Sprintf(`warehouse: {path: ckm.duckdb, threads: 2}
max_bad_ratio: 0.9
sources:
  orders:
    table: orders
    kafka: {brokers: ["%s"], topics: [orders], connect_timeout: 2s}
    mapping: {order_id: {expr: "coalesce(kafka_key, json_extract_string(_doc, '$.id'))"}, customer_id: cust, order_ts: ts, amount: amt, status: {const: completed}}
pipelines:
  p: {transforms: [rfm]}
`, s.broker.Addr))
	kres, err := keyed.runner().Ingest(context.Background(), "orders", false)
	require.NoError(t, err)
	var keyReason string
	dl, _ := keyed.w.DB().Query(`SELECT position, reason FROM dead_letters`)
	for dl.Next() {
		var a, b string
		dl.Scan(&a, &b)
		t.Log(a, b)
	}
	dl.Close()
	t.Logf("%+v", kres)
	require.NoError(t, keyed.w.DB().QueryRow(`SELECT reason FROM dead_letters WHERE position = 'orders/0@3'`).Scan(&keyReason))
	require.Equal(t, "kafka_key could not be read as text", keyReason)
	require.EqualValues(t, 7, kres.DeadLettered)
}

// A member left in the consumer group by a reader killed right after it joined (it holds the
// partitions and never heartbeats) neither blocks nor shortens a bounded read: ckm reads the
// partitions itself, to the end they had when the read started, without joining the group.
func TestADeadGroupMemberNeitherBlocksNorShortensABoundedRead(t *testing.T) {
	const n = 20_000
	s := newStage(t, 4, "", "")
	s.produceOrders(t, 0, n)
	ctx := context.Background()
	client := &kafka.Client{Addr: kafka.TCP(s.broker.Addr), Transport: &kafka.Transport{}}
	join := &kafka.JoinGroupRequest{GroupID: "ckm-orders", SessionTimeout: 5 * time.Minute, RebalanceTimeout: 5 * time.Minute,
		ProtocolType: "consumer", Protocols: []kafka.GroupProtocol{{Name: "range", Metadata: kafka.GroupProtocolSubscription{Topics: []string{"orders"}}}}}
	res, err := client.JoinGroup(ctx, join)
	require.NoError(t, err)
	if errors.Is(res.Error, kafka.MemberIDRequired) {
		join.MemberID = res.MemberID
		res, err = client.JoinGroup(ctx, join)
		require.NoError(t, err)
	}
	require.NoError(t, res.Error)
	dead := res.MemberID

	var loaded tally
	src, w, closeConn := s.reader(t, "run-1")
	defer closeConn()
	require.NoError(t, src.Read(ctx, countingWriter{w, &loaded}))
	s.requireExactlyOnce(t, n, loaded.total())

	desc, err := client.DescribeGroups(ctx, &kafka.DescribeGroupsRequest{GroupIDs: []string{"ckm-orders"}})
	require.NoError(t, err)
	var members []string
	for _, g := range desc.Groups {
		for _, m := range g.Members {
			members = append(members, m.MemberID)
		}
	}
	require.Equal(t, []string{dead}, members, "the dead member is still there: the read neither waited for it nor joined")
}

// Producers compress record batches (lz4, snappy, zstd and gzip are common defaults): every codec
// Kafka has reads back message for message, each at its own offset, also when ckm's batches end
// inside a compressed record batch (the next fetch returns the whole record batch again).
func TestCompressedRecordBatchesOfEveryCodecLoad(t *testing.T) {
	for _, codec := range []kafka.Compression{kafka.Gzip, kafka.Snappy, kafka.Lz4, kafka.Zstd} {
		t.Run(codec.String(), func(t *testing.T) {
			s := newStage(t, 2, ", batch_size: 333", "")
			w := &kafka.Writer{Addr: kafka.TCP(s.broker.Addr), Topic: "orders", Compression: codec, Balancer: &kafka.Hash{},
				BatchSize: 500, BatchTimeout: time.Millisecond, RequiredAcks: kafka.RequireAll, Transport: &kafka.Transport{}}
			msgs := make([]kafka.Message, 0, 2000)
			for _, m := range devkafka.Orders(0, 2000) {
				msgs = append(msgs, kafka.Message{Key: m.Key, Value: m.Value})
			}
			require.NoError(t, w.WriteMessages(context.Background(), msgs...))
			require.NoError(t, w.Close())
			res, err := s.runner().Ingest(context.Background(), "orders", false)
			require.NoError(t, err)
			require.EqualValues(t, 2000, res.Loaded)
			var orders, positions int
			require.NoError(t, s.w.DB().QueryRow(`SELECT count(DISTINCT order_id), count(DISTINCT _position) FROM orders`).Scan(&orders, &positions))
			require.Equal(t, []int{2000, 2000}, []int{orders, positions})
		})
	}
}
