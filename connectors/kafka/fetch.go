package kafka

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/segmentio/kafka-go"

	"github.com/ckm-dev/ckm/connectors"
)

// schema is what a batch of messages looks like to SQL: the payload the mapping reads, the
// message's coordinates and metadata (mapping expressions may use them), and _ordinal.
var schema = arrow.NewSchema([]arrow.Field{
	{Name: "payload", Type: arrow.BinaryTypes.String, Nullable: true},
	{Name: "kafka_topic", Type: arrow.BinaryTypes.String},
	{Name: "kafka_partition", Type: arrow.PrimitiveTypes.Int32},
	{Name: "kafka_offset", Type: arrow.PrimitiveTypes.Int64},
	{Name: "kafka_key", Type: arrow.BinaryTypes.String, Nullable: true}, // NULL also when the key is not UTF-8
	{Name: "kafka_timestamp", Type: &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}},
	{Name: "kafka_key_unreadable", Type: arrow.FixedWidthTypes.Boolean}, // the key is not UTF-8 text
	{Name: "_ordinal", Type: arrow.PrimitiveTypes.Int64},
}, nil)

// streamSQL names a message's partition, as lineage and positions name it.
const streamSQL = "kafka_topic || '/' || kafka_partition"

// unreadable marks a key that is not UTF-8 (see connectors.Batch).
func unreadable() map[string]string { return map[string]string{"kafka_key": "kafka_key_unreadable"} }

// span is the offsets one batch covers in one partition: it read from `from` up to `to` (next).
type span struct{ from, to int64 }

// pending is one filled batch on its way to the warehouse.
type pending struct {
	rec     arrow.RecordBatch
	spans   map[partition]span
	rejects []connectors.Reject // messages that cannot be rows: oversized, not UTF-8
}

func (b *pending) release() { b.rec.Release() }

// batch is the pending messages as a connector batch of in-memory records, labelled with the
// offsets it covers.
func (b *pending) batch() connectors.Batch {
	var labels []string
	for p, sp := range b.spans {
		labels = append(labels, fmt.Sprintf("%s@%d..%d", p, sp.from, sp.to))
	}
	slices.Sort(labels)
	return connectors.Batch{
		Label:       strings.Join(labels, " "),
		Records:     b.rec,
		JSON:        true,
		Stream:      streamSQL,
		Seq:         "kafka_offset",
		PositionSep: "@",
		Unreadable:  unreadable(),
		Rejects:     b.rejects,
	}
}

// Replay reads dead letters again as the messages they were (connectors.Replayer): the payload
// as kept, the metadata the mapping stored with it, typed as schema types a fetch; the broker
// is not asked.
func (s *Source) Replay(deadLetters string) connectors.Batch {
	return connectors.Batch{
		Label: "dead letters",
		Relation: `(SELECT payload, meta->>'kafka_topic' AS kafka_topic, CAST(meta->>'kafka_partition' AS INTEGER) AS kafka_partition,
			CAST(meta->>'kafka_offset' AS BIGINT) AS kafka_offset, meta->>'kafka_key' AS kafka_key,
			CAST(meta->>'kafka_timestamp' AS TIMESTAMPTZ) AS kafka_timestamp, CAST(meta->>'kafka_key_unreadable' AS BOOLEAN) AS kafka_key_unreadable,
			row_number() OVER (ORDER BY kafka_topic, kafka_partition, kafka_offset) AS _ordinal
			FROM ` + deadLetters + `)`,
		JSON:        true,
		Stream:      streamSQL,
		Seq:         "kafka_offset",
		PositionSep: "@",
		Unreadable:  unreadable(),
		Replays:     deadLetters,
	}
}

// DocumentShape is the messages as a batch of none: Replay reads them as a fetch hands them
// over (connectors.DocumentShaper).
func (s *Source) DocumentShape() connectors.Batch {
	return s.Replay("(SELECT NULL::VARCHAR AS position, NULL::VARCHAR AS payload, NULL::VARCHAR AS meta LIMIT 0)")
}

// fetcher reads the assigned partitions into batches of batch_size messages or batch_bytes of
// payload, whichever fills first, while the previous batch is being written.
type fetcher struct {
	src    *Source
	pos    map[partition]int64 // where each partition's reading stands: its next offset
	ends   map[partition]int64 // bounded reads stop here
	follow bool
	pin    []partition // partitions first read now: their start offset is stored even if nothing is read

	b       *array.RecordBuilder
	scratch []byte // the message's value or key being read and checked, before the builder copies it
	spans   map[partition]span
	rejects []connectors.Reject
	bytes   int
	opened  time.Time
}

// fetchBytes bounds one fetch response; a larger single message still arrives whole.
const fetchBytes = 16 << 20

func (f *fetcher) run(ctx context.Context, parts []partition, out chan<- *pending) error {
	defer close(out)
	f.b = array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer f.b.Release()
	f.reset()
	for _, p := range f.pin {
		f.spans[p] = span{f.pos[p], f.pos[p]}
	}
	for {
		progressed := false
		for _, p := range parts {
			if !f.follow && f.pos[p] >= f.ends[p] {
				continue
			}
			n, err := f.fetch(ctx, p)
			if err != nil {
				return err
			}
			progressed = progressed || n > 0
			if f.full() {
				if err := f.flush(ctx, out); err != nil {
					return err
				}
			}
		}
		caughtUp := true
		for _, p := range parts {
			caughtUp = caughtUp && f.pos[p] >= f.ends[p]
		}
		switch {
		case !f.follow && caughtUp:
			if len(f.spans) > 0 {
				return f.flush(ctx, out)
			}
			return nil
		case f.follow && len(f.spans) > 0 && (!progressed || time.Since(f.opened) >= f.src.set.flushInterval):
			if err := f.flush(ctx, out); err != nil {
				return err
			}
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// fetch reads one response's worth of messages of p from its position, retrying a lost broker
// for connect_timeout. It returns how many messages it appended.
func (f *fetcher) fetch(ctx context.Context, p partition) (int, error) {
	pos := f.pos
	maxWait := 50 * time.Millisecond
	if f.follow {
		// Idle partitions are waited on in turn: a round of them stays within flush_interval.
		maxWait = min(500*time.Millisecond, max(10*time.Millisecond, f.src.set.flushInterval/time.Duration(2*len(f.pos))))
	}
	var res *kafka.FetchResponse
	_, _, err := f.src.retry(ctx, func() error {
		var err error
		res, err = f.src.client.Fetch(ctx, &kafka.FetchRequest{Topic: p.topic, Partition: p.id, Offset: pos[p],
			MinBytes: 1, MaxBytes: fetchBytes, MaxWait: maxWait})
		if err == nil {
			err = res.Error
		}
		switch {
		case err == nil:
		case errors.Is(err, kafka.OffsetOutOfRange), ctx.Err() != nil:
			return permanent{err}
		default:
			f.src.env.Log.Warn("kafka fetch failed, retrying", "partition", p.String(), "offset", pos[p], "err", err)
		}
		return err
	})
	switch {
	case errors.Is(err, kafka.OffsetOutOfRange):
		return 0, f.skipLost(ctx, p)
	case ctx.Err() != nil:
		return 0, ctx.Err()
	case err != nil:
		return 0, fmt.Errorf("fetch %s at offset %d from %s: %w", p, pos[p], strings.Join(f.src.cfg.Brokers, ","), err)
	}
	n := 0
	for {
		r, err := res.Records.ReadRecord()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return n, fmt.Errorf("decode %s at offset %d: %w", p, pos[p], err)
		}
		if r.Offset < pos[p] {
			continue // a compressed batch can start before the requested offset
		}
		if !f.follow && r.Offset >= f.ends[p] {
			break
		}
		if err := f.append(p, r, pos[p]); err != nil {
			return n, err
		}
		pos[p] = r.Offset + 1
		n++
		if f.full() {
			break // the next fetch resumes here
		}
	}
	if n == 0 && !f.follow && res.HighWatermark <= pos[p] {
		// The log ends before the watermark seen at start (truncated): nothing more to read.
		f.ends[p] = pos[p]
	}
	return n, nil
}

// skipLost moves a partition whose next offset retention has already deleted to the oldest
// one left, loudly: those messages are gone from Kafka before ckm could read them. An offset
// past the log's end instead stops the read (see pastTheEnd).
func (f *fetcher) skipLost(ctx context.Context, p partition) error {
	pos := f.pos
	offs, err := f.src.listOffsets(ctx, []partition{p}, func(id int) kafka.OffsetRequest { return kafka.FirstOffsetOf(id) })
	if err != nil {
		return err
	}
	first := offs[p].FirstOffset
	if first <= pos[p] {
		ends, err := f.src.listOffsets(ctx, []partition{p}, func(id int) kafka.OffsetRequest { return kafka.LastOffsetOf(id) })
		if err == nil && ends[p].LastOffset < pos[p] {
			return f.src.pastTheEnd(p, pos[p], ends[p].LastOffset)
		}
		return fmt.Errorf("fetch %s at offset %d: %w", p, pos[p], kafka.OffsetOutOfRange)
	}
	f.src.env.Log.Error("messages deleted by retention before they were read; continuing at the oldest kept",
		"partition", p.String(), "stored_offset", pos[p], "first_kept", first, "lost", first-pos[p])
	sp, ok := f.spans[p]
	if !ok {
		sp.from = pos[p]
	}
	pos[p], sp.to = first, first
	f.spans[p] = sp
	return nil
}

// append adds one message of p to the batch; from is where p's reading stood before it. A
// message that cannot be a row (larger than max_message_bytes, a payload that is not UTF-8) is
// a reject, dead-lettered with the batch: it never stops the partition.
func (f *fetcher) append(p partition, r *kafka.Record, from int64) error {
	sp, ok := f.spans[p]
	if !ok {
		sp.from = from
	}
	sp.to = r.Offset + 1
	f.spans[p] = sp
	reject := func(reason string, head []byte) {
		stream := p.String()
		f.rejects = append(f.rejects, connectors.Reject{Stream: stream, Seq: r.Offset, Position: fmt.Sprintf("%s@%d", stream, r.Offset),
			Reason: reason, Payload: head})
	}
	var value []byte
	if r.Value != nil {
		size := r.Value.Len()
		if size > f.src.set.maxMessageBytes {
			head := make([]byte, min(size, connectors.OversizedHead))
			if _, err := io.ReadFull(r.Value, head); err != nil {
				return fmt.Errorf("read %s at offset %d: %w", p, r.Offset, err)
			}
			reject(fmt.Sprintf("message of %d bytes exceeds max_message_bytes %d (payload holds its first %d bytes)", size, f.src.set.maxMessageBytes, len(head)), head)
			f.src.env.Log.Debug("oversized message", "partition", p.String(), "offset", r.Offset, "bytes", size)
			return nil
		}
		var err error
		if value, err = f.read(r.Value, size); err != nil {
			return fmt.Errorf("read %s at offset %d: %w", p, r.Offset, err)
		}
		if problem := connectors.NotText(value); problem != "" {
			reject("payload "+problem, slices.Clone(value))
			return nil
		}
		value = connectors.WithoutBOM(value)
	}
	payload := f.b.Field(0).(*array.StringBuilder)
	if r.Value == nil {
		payload.AppendNull() // a tombstone: the mapping skips empty payloads
	} else {
		payload.BinaryBuilder.Append(value)
		f.bytes += len(value)
	}
	f.b.Field(1).(*array.StringBuilder).Append(p.topic)
	f.b.Field(2).(*array.Int32Builder).Append(int32(p.id))
	f.b.Field(3).(*array.Int64Builder).Append(r.Offset)
	key, keyUnreadable := f.b.Field(4).(*array.StringBuilder), false
	if r.Key == nil {
		key.AppendNull()
	} else {
		k, err := f.read(r.Key, r.Key.Len())
		if err != nil {
			return fmt.Errorf("read key of %s at offset %d: %w", p, r.Offset, err)
		}
		if connectors.NotText(k) != "" {
			// Binary keys are common (a serialized id): only a mapping that reads the key as text
			// dead-letters the message.
			key.AppendNull()
			keyUnreadable = true
		} else {
			key.BinaryBuilder.Append(k)
		}
	}
	f.b.Field(5).(*array.TimestampBuilder).Append(arrow.Timestamp(r.Time.UnixMicro()))
	f.b.Field(6).(*array.BooleanBuilder).Append(keyUnreadable)
	f.b.Field(7).(*array.Int64Builder).Append(int64(f.b.Field(7).Len() + 1))
	return nil
}

// read reads the next n bytes of r into the fetcher's scratch buffer, valid until the next read:
// a copy per message and value would be garbage by the next batch.
func (f *fetcher) read(r io.Reader, n int) ([]byte, error) {
	if cap(f.scratch) < n {
		f.scratch = make([]byte, n)
	}
	f.scratch = f.scratch[:n]
	_, err := io.ReadFull(r, f.scratch)
	return f.scratch, err
}

func (f *fetcher) full() bool {
	return f.b.Field(7).Len()+len(f.rejects) >= f.src.set.batchSize || f.bytes >= f.src.set.batchBytes
}

func (f *fetcher) flush(ctx context.Context, out chan<- *pending) error {
	b := &pending{rec: f.b.NewRecordBatch(), spans: f.spans, rejects: f.rejects}
	// The next batch is likely this one's size: reserving it at once spares the builders growing
	// by doubling, each step copying the payloads so far into fresh, zeroed memory.
	f.b.Reserve(int(b.rec.NumRows()))
	f.b.Field(0).(*array.StringBuilder).ReserveData(f.bytes)
	f.reset()
	select {
	case out <- b:
		return nil
	case <-ctx.Done():
		b.release()
		return ctx.Err()
	}
}

func (f *fetcher) reset() {
	f.spans, f.rejects, f.bytes, f.opened = map[partition]span{}, nil, 0, time.Now()
}
