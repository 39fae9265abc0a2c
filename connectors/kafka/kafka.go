// Package kafka is the Kafka connector: JSON messages from topics, read with segmentio/kafka-go.
//
// A source reads every partition of its topics itself, from the offsets stored in the warehouse:
// there is no group membership to wait for or to lose. Only one process can write the
// warehouse, so a consumer group's balancing would buy nothing, and a dead member left in a
// group (a reader killed right after joining) could hand partitions to nobody and let a bounded
// read end short. Each batch's rows and the next offset of every partition it read are committed
// in one DuckDB transaction, as the partition's position (the runtime stores it compare-and-set:
// a batch whose partition another reader advanced meanwhile rolls back and is reread). The consumer
// group's committed offsets are written afterwards, only as a lag hint for monitoring tools.
package kafka

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/ckm-dev/ckm/connectors"
)

func init() {
	connectors.Register("kafka", connectors.Spec{Summary: "JSON messages from Kafka topics, every partition read from offsets stored with the rows", Streaming: true},
		func(ctx context.Context, env connectors.Env, cfg Config) (connectors.Source, error) {
			return Open(env, cfg)
		})
}

// Source reads one configured set of topics.
type Source struct {
	env    connectors.Env
	cfg    Config
	set    settings
	tr     *kafka.Transport
	client *kafka.Client
	// answered says a broker has answered this source: from then on, unreachable brokers are
	// retried for connect_timeout.
	answered bool

	// afterCommit runs after each batch's DuckDB commit and before the group commit; tests
	// use it to stop a reader at exactly that point.
	afterCommit func() error
}

// Open prepares a source; it contacts no broker until Read.
func Open(env connectors.Env, cfg Config) (*Source, error) {
	set, errs := cfg.settings(env.Source)
	if len(errs) > 0 {
		return nil, fmt.Errorf("%s: %s", errs[0].key, errs[0].msg)
	}
	tc, mech, err := cfg.security(env.BaseDir)
	if err != nil {
		return nil, err
	}
	if cfg.SessionTimeout != "" {
		env.Log.Warn("kafka session_timeout is no longer used (ckm reads partitions itself, without consumer group membership); remove it")
	}
	tr := transport(tc, mech, set.connect)
	return &Source{env: env, cfg: cfg, set: set, tr: tr,
		client: &kafka.Client{Addr: kafka.TCP(cfg.Brokers...), Transport: tr, Timeout: set.connect}}, nil
}

// partition names one topic partition.
type partition struct {
	topic string
	id    int
}

func (p partition) String() string { return fmt.Sprintf("%s/%d", p.topic, p.id) }

// Read consumes every partition of the source's topics up to the high watermarks seen when it
// started, committing a batch at a time, and returns once each is caught up; a partition it
// could not read to its starting watermark fails the read, naming it. With env.Follow it keeps
// reading new messages until ctx ends, and picks up partitions added to the topics.
func (s *Source) Read(ctx context.Context, w connectors.Writer) error {
	defer s.tr.CloseIdleConnections()
	for {
		ends, err := s.watermarks(ctx)
		if err != nil {
			return err
		}
		parts := slices.SortedFunc(maps.Keys(ends), func(a, b partition) int { return strings.Compare(a.String(), b.String()) })
		roundCtx, cancel := context.WithCancel(ctx)
		grown := make(chan struct{})
		if s.env.Follow {
			go s.watchPartitions(roundCtx, len(parts), func() { close(grown); cancel() })
		}
		err = s.readPartitions(roundCtx, parts, ends, w)
		cancel()
		select {
		case <-grown:
			s.env.Log.Info("partitions added to the topics; reading them too")
			continue
		default:
		}
		switch {
		case errors.Is(err, connectors.ErrPositionMoved):
			s.env.Log.Info("another reader advanced a partition; rereading stored offsets", "err", err)
			continue
		case s.env.Follow && ctx.Err() != nil:
			return ctx.Err()
		}
		return err
	}
}

// partitionWatch is how often a following reader looks for partitions added to its topics.
const partitionWatch = 30 * time.Second

// watchPartitions calls grown once the topics have more than n partitions, until ctx ends.
func (s *Source) watchPartitions(ctx context.Context, n int, grown func()) {
	t := time.NewTicker(partitionWatch)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		parts, err := s.partitions(ctx)
		if err == nil && len(parts) > n {
			grown()
			return
		}
	}
}

// watermarks returns each partition's high watermark now: a bounded run reads up to these.
func (s *Source) watermarks(ctx context.Context) (map[partition]int64, error) {
	parts, err := s.partitions(ctx)
	if err != nil {
		return nil, err
	}
	offsets, err := s.listOffsets(ctx, parts, func(id int) kafka.OffsetRequest { return kafka.LastOffsetOf(id) })
	if err != nil {
		return nil, err
	}
	ends := map[partition]int64{}
	for p, o := range offsets {
		ends[p] = o.LastOffset
	}
	return ends, nil
}

// partitions lists the partitions of the source's topics, retrying unreachable brokers with
// backoff for connect_timeout. Brokers that have not answered yet and cannot be found or refuse
// the connection, every one of them, fail at once: waiting would not mend a wrong address.
func (s *Source) partitions(ctx context.Context) ([]partition, error) {
	if !s.answered {
		if err := s.dialable(ctx); err != nil {
			return nil, err
		}
	}
	var out []partition
	attempts, elapsed, err := s.retry(ctx, func() error {
		attemptCtx, cancel := context.WithTimeout(ctx, min(s.set.connect, 10*time.Second))
		defer cancel()
		md, err := s.client.Metadata(attemptCtx, &kafka.MetadataRequest{Topics: s.cfg.Topics})
		if err != nil {
			s.env.Log.Warn("kafka brokers unreachable, retrying", "brokers", strings.Join(s.cfg.Brokers, ","), "err", err)
			return err
		}
		for _, t := range md.Topics {
			if t.Error != nil {
				return permanent{fmt.Errorf("topic %s at %s: %w", t.Name, strings.Join(s.cfg.Brokers, ","), t.Error)}
			}
			for _, p := range t.Partitions {
				out = append(out, partition{t.Name, p.ID})
			}
		}
		s.answered = true
		return nil
	})
	var stop permanent
	if err == nil || ctx.Err() != nil || errors.As(err, &stop) {
		return out, err
	}
	hint := ""
	if s.cfg.SASL.Mechanism != "" && errors.Is(err, io.ErrUnexpectedEOF) {
		hint = " (the broker closed the connection: with SASL that usually means it rejected the credentials)"
	}
	return nil, fmt.Errorf("cannot connect to kafka brokers %s: %d attempts over %s (connect_timeout %s): %w%s",
		strings.Join(s.cfg.Brokers, ","), attempts, elapsed.Round(time.Millisecond), s.set.connect, err, hint)
}

// dialable fails when no broker can be reached because every one's name does not resolve or its
// host refuses the connection; any other outcome (one answers, one times out) leaves it to the
// metadata request and its retries.
func (s *Source) dialable(ctx context.Context) error {
	var why []string
	for _, b := range s.cfg.Brokers {
		dialCtx, cancel := context.WithTimeout(ctx, 3*time.Second)
		conn, err := (&net.Dialer{}).DialContext(dialCtx, "tcp", b)
		cancel()
		if err == nil {
			conn.Close()
			return nil
		}
		var dnsErr *net.DNSError
		switch {
		case errors.As(err, &dnsErr):
			why = append(why, b+": no such host")
		case errors.Is(err, syscall.ECONNREFUSED):
			why = append(why, b+": connection refused")
		default:
			return nil
		}
	}
	return fmt.Errorf("cannot reach any kafka broker (%s)", strings.Join(why, "; "))
}

// permanent marks an error retrying cannot mend.
type permanent struct{ error }

func (p permanent) Unwrap() error { return p.error }

// retry calls attempt until it succeeds, fails with a permanent error, or connect_timeout would
// pass, waiting 250 ms, 500 ms, … 5 s between attempts. It returns how many attempts it made
// over how long, and the last error.
func (s *Source) retry(ctx context.Context, attempt func() error) (int, time.Duration, error) {
	start, wait := time.Now(), 250*time.Millisecond
	for attempts := 1; ; attempts++ {
		err := attempt()
		var stop permanent
		if err == nil || errors.As(err, &stop) || time.Since(start)+wait > s.set.connect {
			return attempts, time.Since(start), err
		}
		select {
		case <-ctx.Done():
			return attempts, time.Since(start), ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

func (s *Source) listOffsets(ctx context.Context, parts []partition, req func(id int) kafka.OffsetRequest) (map[partition]kafka.PartitionOffsets, error) {
	topics := map[string][]kafka.OffsetRequest{}
	for _, p := range parts {
		topics[p.topic] = append(topics[p.topic], req(p.id))
	}
	res, err := s.client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: topics})
	if err != nil {
		return nil, fmt.Errorf("list offsets at %s: %w", strings.Join(s.cfg.Brokers, ","), err)
	}
	out := map[partition]kafka.PartitionOffsets{}
	for topic, ps := range res.Topics {
		for _, o := range ps {
			if o.Error != nil {
				return nil, fmt.Errorf("list offsets of %s/%d: %w", topic, o.Partition, o.Error)
			}
			out[partition{topic, o.Partition}] = o
		}
	}
	return out, nil
}

// Check reaches the brokers and finds the source's topics, loading nothing (ckm validate
// --connect). Messages are JSON documents: each topic is listed without fields.
func (s *Source) Check(ctx context.Context) (map[string][]connectors.StreamField, []string) {
	defer s.tr.CloseIdleConnections()
	if _, err := s.partitions(ctx); err != nil {
		return nil, []string{err.Error()}
	}
	topics := map[string][]connectors.StreamField{}
	for _, t := range s.cfg.Topics {
		topics[t] = nil
	}
	return topics, nil
}

// Backlog reports, per partition, the stored next offset, the high watermark now and the
// messages between them (from the partition's start for a partition never read).
func (s *Source) Backlog(ctx context.Context) ([]connectors.Backlog, error) {
	defer s.tr.CloseIdleConnections()
	ends, err := s.watermarks(ctx)
	if err != nil {
		return nil, err
	}
	parts := slices.SortedFunc(maps.Keys(ends), func(a, b partition) int { return strings.Compare(a.String(), b.String()) })
	stored, err := s.storedOffsets(ctx, parts)
	if err != nil {
		return nil, err
	}
	firsts, err := s.listOffsets(ctx, parts, func(id int) kafka.OffsetRequest { return kafka.FirstOffsetOf(id) })
	if err != nil {
		return nil, err
	}
	out := make([]connectors.Backlog, 0, len(parts))
	for _, p := range parts {
		b := connectors.Backlog{Stream: p.String(), Next: -1, End: ends[p]}
		from := max(firsts[p].FirstOffset, 0)
		if next, ok := stored[p]; ok {
			b.Next, from = next, max(next, from)
		}
		b.Waiting = max(b.End-from, 0)
		out = append(out, b)
	}
	return out, nil
}

// readPartitions reads the partitions from their stored offsets, writing batches as the
// fetcher fills them.
func (s *Source) readPartitions(ctx context.Context, parts []partition, ends map[partition]int64, w connectors.Writer) error {
	if len(parts) == 0 {
		return nil
	}
	stored, err := s.storedOffsets(ctx, parts)
	if err != nil {
		return err
	}
	// A reader stopped between its DuckDB commit and its group commit left the hint behind.
	s.commitGroup(ctx, stored)
	pos := maps.Clone(stored)
	var fresh []partition
	var replaced []error
	for _, p := range parts {
		next, ok := stored[p]
		if !ok {
			fresh = append(fresh, p)
		} else if next > ends[p] {
			replaced = append(replaced, s.pastTheEnd(p, next, ends[p]))
		}
	}
	if len(replaced) > 0 {
		return errors.Join(replaced...)
	}
	if len(fresh) > 0 {
		starts, err := s.startOffsets(ctx, fresh, ends)
		if err != nil {
			return err
		}
		maps.Copy(pos, starts)
	}
	goal := maps.Clone(ends)
	f := &fetcher{src: s, pos: pos, ends: ends, follow: s.env.Follow, pin: fresh}
	batches := make(chan *pending, 1)
	fetchCtx, stopFetching := context.WithCancel(ctx)
	defer stopFetching()
	fetchErr := make(chan error, 1)
	go func() { fetchErr <- f.run(fetchCtx, parts, batches) }()
	for b := range batches {
		err := s.write(ctx, b, stored, w)
		b.release()
		if err != nil {
			stopFetching()
			for b := range batches {
				b.release()
			}
			<-fetchErr
			return err
		}
	}
	if err := <-fetchErr; err != nil {
		return err
	}
	if s.env.Follow {
		return nil
	}
	// A bounded read ends at every partition's starting watermark, or says which it did not reach.
	var short []string
	for _, p := range parts {
		if stored[p] < goal[p] && pos[p] < goal[p] {
			short = append(short, fmt.Sprintf("%s (at %d of %d)", p, max(stored[p], pos[p]), goal[p]))
		}
	}
	if len(short) > 0 {
		return fmt.Errorf("partitions not read to the end they had when the run started: %s", strings.Join(short, ", "))
	}
	return nil
}

// pastTheEnd is the error for a partition whose stored offset lies past its log's end. Its
// messages up to there are not the ones ckm read: the topic was deleted and created again, or
// an unclean leader election truncated the log. Skipping to the stored offset would lose
// what the partition holds now; reading it again on a guess would load everything again
// when the end is only behind for a moment, as after a leader change. So the read stops,
// and the operator restarts the partition once the cause is known.
func (s *Source) pastTheEnd(p partition, stored, end int64) error {
	return fmt.Errorf("partition %s: the stored offset %d is past the partition's end %d: the topic was deleted and created again, "+
		"or its log truncated, after ckm read it (a leader change can also hold the end back for a moment: then the next read goes on); "+
		"to read the partition again as never read (start: %s), run `ckm ingest --source %s --restart %s`", p, stored, end, s.set.start, s.env.Source, p)
}

// write commits one batch with its offsets, then commits the group offsets as a hint.
func (s *Source) write(ctx context.Context, b *pending, stored map[partition]int64, w connectors.Writer) error {
	batch := b.batch()
	batch.Positions = advances(b.spans, stored)
	if _, err := w.Write(ctx, batch); err != nil {
		return err
	}
	for p, sp := range b.spans {
		stored[p] = sp.to
	}
	if s.afterCommit != nil {
		if err := s.afterCommit(); err != nil {
			return err
		}
	}
	next := make(map[partition]int64, len(b.spans))
	for p, sp := range b.spans {
		next[p] = sp.to
	}
	s.commitGroup(ctx, next)
	return nil
}

// advances move each partition of the batch to its next offset, from the offset the batch
// started at: a partition another reader moved meanwhile fails the batch.
func advances(spans map[partition]span, stored map[partition]int64) []connectors.Advance {
	out := make([]connectors.Advance, 0, len(spans))
	for _, p := range slices.SortedFunc(maps.Keys(spans), func(a, b partition) int { return strings.Compare(a.String(), b.String()) }) {
		a := connectors.Advance{Stream: p.String(), To: strconv.FormatInt(spans[p].to, 10)}
		if _, known := stored[p]; known {
			a.From = strconv.FormatInt(spans[p].from, 10)
		}
		out = append(out, a)
	}
	return out
}

// commitGroup records the group's offsets after the DuckDB commit, for lag monitoring only, as
// a consumer outside any generation (the way standalone consumers commit). It has a deadline and
// its failure is logged, never fatal: the stored offsets are the truth.
func (s *Source) commitGroup(ctx context.Context, next map[partition]int64) {
	if len(next) == 0 {
		return
	}
	topics := map[string][]kafka.OffsetCommit{}
	for p, offset := range next {
		topics[p.topic] = append(topics[p.topic], kafka.OffsetCommit{Partition: p.id, Offset: offset})
	}
	commitCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	res, err := s.client.OffsetCommit(commitCtx, &kafka.OffsetCommitRequest{GroupID: s.set.group, GenerationID: -1, Topics: topics})
	if err == nil {
		var each []error
		for _, ps := range res.Topics {
			for _, p := range ps {
				each = append(each, p.Error)
			}
		}
		err = errors.Join(each...)
	}
	if err != nil {
		s.env.Log.Warn("group offset commit failed (only the lag hint; the warehouse holds the offsets)", "group", s.set.group, "err", err)
	}
}

// storedOffsets reads the next offsets stored for the partitions.
func (s *Source) storedOffsets(ctx context.Context, parts []partition) (map[partition]int64, error) {
	positions, err := s.env.Positions.Load(ctx)
	if err != nil {
		return nil, err
	}
	out := map[partition]int64{}
	for _, p := range parts {
		pos, ok := positions[p.String()]
		if !ok {
			continue
		}
		next, err := strconv.ParseInt(pos, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("stored position of %s is not an offset: %q", p, pos)
		}
		out[p] = next
	}
	return out, nil
}

// startOffsets is where partitions never read before start, per the start setting.
func (s *Source) startOffsets(ctx context.Context, parts []partition, ends map[partition]int64) (map[partition]int64, error) {
	out := map[partition]int64{}
	switch s.set.start {
	case "latest":
		for _, p := range parts {
			out[p] = ends[p]
		}
	case "earliest":
		offs, err := s.listOffsets(ctx, parts, func(id int) kafka.OffsetRequest { return kafka.FirstOffsetOf(id) })
		if err != nil {
			return nil, err
		}
		for _, p := range parts {
			out[p] = max(offs[p].FirstOffset, 0)
		}
	default:
		offs, err := s.listOffsets(ctx, parts, func(id int) kafka.OffsetRequest { return kafka.TimeOffsetOf(id, s.set.startTime) })
		if err != nil {
			return nil, err
		}
		for _, p := range parts {
			out[p] = ends[p] // nothing at or after the time yet
			for o := range offs[p].Offsets {
				if o >= 0 {
					out[p] = min(out[p], o)
				}
			}
		}
	}
	return out, nil
}
