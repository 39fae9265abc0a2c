// Package devkafka runs a local Kafka broker in process (franz-go's kfake, which speaks the
// real wire protocol) and produces files to it as JSON messages: for tests, benchmarks and the
// README's demo. It is not a production broker: data lives in memory.
package devkafka

import (
	"bufio"
	"compress/gzip"
	"context"
	"crypto/tls"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Broker is a running in-process broker.
type Broker struct {
	cluster *kfake.Cluster
	Addr    string // host:port clients connect to
}

// Options shape a broker.
type Options struct {
	Port   int              // 0: a random free port on 127.0.0.1
	Topics map[string]int32 // topic → partitions, created at start
	// Users adds SASL users (mechanism "PLAIN", "SCRAM-SHA-256" or "SCRAM-SHA-512" → user → password);
	// with any set, clients must authenticate.
	Users map[string]map[string]string
	TLS   *tls.Config // when set, clients must connect with TLS
}

// Start starts a broker. Close it when done.
func Start(o Options) (*Broker, error) {
	opts := []kfake.Opt{kfake.NumBrokers(1), kfake.Ports(o.Port),
		// Lets a crashed test consumer's partitions move on quickly; real brokers allow ≥ 6 s.
		kfake.GroupMinSessionTimeout(500 * time.Millisecond)}
	for topic, n := range o.Topics {
		opts = append(opts, kfake.SeedTopics(n, topic))
	}
	if len(o.Users) > 0 {
		opts = append(opts, kfake.EnableSASL())
		for mech, users := range o.Users {
			for user, pass := range users {
				opts = append(opts, kfake.Superuser(mech, user, pass))
			}
		}
	}
	if o.TLS != nil {
		opts = append(opts, kfake.TLS(o.TLS))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("start dev broker: %w", err)
	}
	return &Broker{cluster: c, Addr: c.ListenAddrs()[0]}, nil
}

// Close stops the broker; clients see it as lost.
func (b *Broker) Close() { b.cluster.Close() }

// Message is one message to produce.
type Message struct {
	Key, Value []byte
}

// Order is test order i as a JSON message keyed by its id: fields id, cust (997 customers),
// ts (January 2026) and amt (i%100 + 0.5).
func Order(i int) Message {
	v, _ := json.Marshal(map[string]any{"id": fmt.Sprintf("O%07d", i), "cust": fmt.Sprintf("C%04d", i%997),
		"ts": time.Date(2026, 1, 1+i%28, i%24, 0, 0, 0, time.UTC).Format(time.RFC3339), "amt": float64(i%100) + 0.5})
	return Message{Key: fmt.Appendf(nil, "O%07d", i), Value: v}
}

// Orders are Order(from) … Order(to-1).
func Orders(from, to int) []Message {
	out := make([]Message, 0, to-from)
	for i := from; i < to; i++ {
		out = append(out, Order(i))
	}
	return out
}

// Producer writes messages to one broker, waiting for every write to be acknowledged.
type Producer struct {
	w *kafka.Writer
}

// NewProducer connects a producer to addr.
func NewProducer(addr string) *Producer {
	return &Producer{w: &kafka.Writer{Addr: kafka.TCP(addr), RequiredAcks: kafka.RequireAll, Transport: &kafka.Transport{},
		// Record batches stay under the broker's default 1 MB message limit.
		Balancer: &kafka.Hash{}, BatchSize: 10_000, BatchBytes: 900_000, BatchTimeout: 5 * time.Millisecond,
		AllowAutoTopicCreation: true}}
}

// Produce writes messages to topic. Messages with a key go to the key's partition; without one
// they are spread round robin.
func (p *Producer) Produce(ctx context.Context, topic string, msgs []Message) error {
	out := make([]kafka.Message, len(msgs))
	for i, m := range msgs {
		out[i] = kafka.Message{Topic: topic, Key: m.Key, Value: m.Value}
	}
	for len(out) > 0 {
		n := min(len(out), 50_000)
		if err := p.w.WriteMessages(ctx, out[:n]...); err != nil {
			var each kafka.WriteErrors
			if errors.As(err, &each) {
				for _, e := range each {
					if e != nil {
						return fmt.Errorf("produce to %s: %d of %d messages failed, first: %w", topic, each.Count(), n, e)
					}
				}
			}
			return fmt.Errorf("produce to %s: %w", topic, err)
		}
		out = out[n:]
	}
	return nil
}

// Close flushes and closes the producer.
func (p *Producer) Close() error {
	err := p.w.Close()
	p.w.Transport.(*kafka.Transport).CloseIdleConnections() // a Writer leaves its transport's connections open
	return err
}

// FileMessages reads a CSV or JSON Lines file (optionally gzip-compressed) as JSON messages:
// a JSON line as it is (malformed too), a CSV row as an object of its header's fields. keyField, when set,
// names the field whose value becomes the message key.
func FileMessages(path, keyField string) ([]Message, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var r io.Reader = f
	name := path
	if strings.HasSuffix(name, ".gz") {
		gz, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		defer gz.Close()
		r, name = gz, strings.TrimSuffix(name, ".gz")
	}
	var out []Message
	key := func(doc map[string]any) []byte {
		if v, ok := doc[keyField]; ok && keyField != "" {
			return fmt.Append(nil, v)
		}
		return nil
	}
	if strings.HasSuffix(name, ".csv") {
		cr := csv.NewReader(r)
		cr.FieldsPerRecord = -1 // a short or long row is produced with the fields it has
		header, err := cr.Read()
		if err != nil {
			return nil, fmt.Errorf("%s: header: %w", path, err)
		}
		for line := 2; ; line++ {
			rec, err := cr.Read()
			if err == io.EOF {
				return out, nil
			}
			if err != nil {
				return nil, fmt.Errorf("%s:%d: %w", path, line, err)
			}
			doc := make(map[string]any, len(header))
			for i, h := range header[:min(len(header), len(rec))] {
				doc[h] = rec[i]
			}
			v, err := json.Marshal(doc)
			if err != nil {
				return nil, err
			}
			out = append(out, Message{Key: key(doc), Value: v})
		}
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var doc map[string]any
		_ = json.Unmarshal(sc.Bytes(), &doc) // a malformed line is produced as it is: ckm dead-letters it
		out = append(out, Message{Key: key(doc), Value: append([]byte(nil), sc.Bytes()...)})
	}
	return out, sc.Err()
}

// Outage makes the broker drop every connection until restore is called: to clients it is
// lost, as when a broker dies or the network splits.
func (b *Broker) Outage() (restore func()) {
	var down atomic.Bool
	down.Store(true)
	b.cluster.Control(func(kmsg.Request) (kmsg.Response, error, bool) {
		b.cluster.KeepControl()
		if down.Load() {
			return nil, errors.New("dev broker outage"), true
		}
		return nil, nil, false
	})
	return func() { down.Store(false) }
}

// ApplyRetention sets a topic's retention.bytes and has the broker enforce it now, deleting
// the oldest record batches beyond it, as a broker's retention would over time.
func (b *Broker) ApplyRetention(ctx context.Context, topic string, bytes int) error {
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	client := &kafka.Client{Addr: kafka.TCP(b.Addr), Transport: tr}
	res, err := client.AlterConfigs(ctx, &kafka.AlterConfigsRequest{Resources: []kafka.AlterConfigRequestResource{{
		ResourceType: kafka.ResourceTypeTopic, ResourceName: topic,
		Configs: []kafka.AlterConfigRequestConfig{{Name: "retention.bytes", Value: fmt.Sprint(bytes)}}}}})
	if err != nil {
		return fmt.Errorf("set retention of %s: %w", topic, err)
	}
	for _, e := range res.Errors {
		if e != nil {
			return fmt.Errorf("set retention of %s: %w", topic, e)
		}
	}
	b.cluster.ApplyRetention()
	return nil
}

// Recreate deletes topic and creates it again with partitions: its offsets begin anew at 0, as
// when an operator drops and recreates a topic.
func (b *Broker) Recreate(ctx context.Context, topic string, partitions int) error {
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	client := &kafka.Client{Addr: kafka.TCP(b.Addr), Transport: tr}
	deleted, err := client.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: []string{topic}})
	if err == nil {
		err = deleted.Errors[topic]
	}
	if err != nil {
		return fmt.Errorf("delete topic %s: %w", topic, err)
	}
	created, err := client.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{Topic: topic, NumPartitions: partitions, ReplicationFactor: 1}}})
	if err == nil {
		err = created.Errors[topic]
	}
	if err != nil {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	return nil
}
