// Command ckm-devkafka runs a local, in-memory Kafka broker for trying ckm's Kafka connector
// without a cluster, and produces files to it as JSON messages:
//
//	ckm-devkafka --port 9092 orders=data/sample/orders.csv.gz:customer_id feedback=data/sample/feedback.jsonl.gz
//
// Each argument is topic=file[:key_field]; CSV rows become JSON objects of their header's
// fields. It serves until interrupted; its data is gone when it stops.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/ckm-dev/ckm/internal/devkafka"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "ckm-devkafka: "+err.Error())
		os.Exit(1)
	}
}

func run() error {
	port := flag.Int("port", 9092, "port to listen on, on 127.0.0.1")
	partitions := flag.Int("partitions", 3, "partitions of each topic")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: ckm-devkafka [--port 9092] [--partitions 3] [topic=file[:key_field] ...]")
		flag.PrintDefaults()
		fmt.Fprintln(os.Stderr, `examples:
  bin/ckm-devkafka --port 9092 customers=data/sample/customers.csv.gz:customer_id \
      orders=data/sample/orders.csv.gz:customer_id feedback=data/sample/feedback.jsonl.gz
  bin/ckm-devkafka --partitions 6 orders=data/generated/orders.csv:customer_id`)
	}
	flag.Parse()
	type feed struct{ topic, path, key string }
	var feeds []feed
	topics := map[string]int32{}
	for _, arg := range flag.Args() {
		topic, spec, ok := strings.Cut(arg, "=")
		if !ok || topic == "" || spec == "" {
			return fmt.Errorf("argument %q: want topic=file[:key_field]", arg)
		}
		path, key, _ := strings.Cut(spec, ":")
		feeds = append(feeds, feed{topic, path, key})
		topics[topic] = int32(*partitions)
	}
	b, err := devkafka.Start(devkafka.Options{Port: *port, Topics: topics})
	if err != nil {
		return err
	}
	defer b.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	p := devkafka.NewProducer(b.Addr)
	for _, f := range feeds {
		msgs, err := devkafka.FileMessages(f.path, f.key)
		if err != nil {
			return err
		}
		if err := p.Produce(ctx, f.topic, msgs); err != nil {
			return err
		}
		fmt.Printf("produced %d messages from %s to topic %s\n", len(msgs), f.path, f.topic)
	}
	if err := p.Close(); err != nil {
		return err
	}
	fmt.Printf("dev broker listening on %s (in memory; Ctrl-C stops it)\n", b.Addr)
	<-ctx.Done()
	return nil
}
