// Package skeleton is a connector to copy when you write your own: it reads an append-only
// JSON Lines log (one JSON document a line, lines only ever added at the end), resumes from the
// byte offset it stored, dead-letters lines that are not text, and with follow keeps reading as
// the log grows. It passes the conformance suite (skeleton_test.go); docs/connectors.md walks
// through it. It is not in connectors/all: import it there to make the kind available.
package skeleton

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/ckm-dev/ckm/connectors"
	"github.com/ckm-dev/ckm/warehouse"
)

func init() {
	connectors.Register("skeleton", connectors.Spec{Summary: "an append-only JSON Lines log, read on from the byte offset stored (a template connector)", Streaming: true},
		func(ctx context.Context, env connectors.Env, cfg Config) (connectors.Source, error) {
			path := cfg.Path
			if !filepath.IsAbs(path) {
				path = filepath.Join(env.BaseDir, path)
			}
			return &Source{env: env, cfg: cfg, path: path}, nil
		})
}

// Config is the source's block; every key documents itself in its tags (see connectors.Spec).
type Config struct {
	Path      string `yaml:"path" required:"true" example:"data/events.jsonl" doc:"the log file, relative to the config file"`
	BatchSize int    `yaml:"batch_size" default:"10000" doc:"lines per DuckDB transaction"`
}

// position is where the log's reading stands. The runtime stores it as the connector wrote it.
type position struct {
	Offset int64 `json:"offset"` // the byte after the last line handed over
	Line   int64 `json:"line"`   // that line's number
}

// Source reads one log.
type Source struct {
	env  connectors.Env
	cfg  Config
	path string
}

// schema is a batch's layout: the line as a JSON document, its number in the log, and last the
// record's number in the batch (every batch ends with that column).
var schema = arrow.NewSchema([]arrow.Field{
	{Name: "payload", Type: arrow.BinaryTypes.String},
	{Name: "line", Type: arrow.PrimitiveTypes.Int64},
	{Name: "ordinal", Type: arrow.PrimitiveTypes.Int64},
}, nil)

// Read hands over the complete lines after the stored position, a batch at a time.
func (s *Source) Read(ctx context.Context, w connectors.Writer) error {
	stored, err := s.env.Positions.Load(ctx)
	if err != nil {
		return err
	}
	from := stored[s.cfg.Path]
	var pos position
	if from != "" {
		if err := json.Unmarshal([]byte(from), &pos); err != nil {
			return fmt.Errorf("read stored position of %s: %w", s.cfg.Path, err)
		}
	}
	for {
		next, err := s.readFrom(ctx, w, from, pos)
		if err != nil {
			return err
		}
		from, pos = next.from, next.pos
		if !s.env.Follow {
			return nil
		}
		select { // follow: look for new lines every 100 ms until told to stop
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

type resume struct {
	from string
	pos  position
}

// readFrom reads the log from pos to its last complete line.
func (s *Source) readFrom(ctx context.Context, w connectors.Writer, from string, pos position) (resume, error) {
	f, err := os.Open(s.path)
	if err != nil {
		return resume{from, pos}, fmt.Errorf("read %s: %w", s.cfg.Path, err)
	}
	defer f.Close()
	if _, err := f.Seek(pos.Offset, io.SeekStart); err != nil {
		return resume{from, pos}, fmt.Errorf("read %s: %w", s.cfg.Path, err)
	}
	r := bufio.NewReader(f)
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	var rejects []connectors.Reject
	next, n := pos, 0
	flush := func() error {
		if next == pos {
			return nil
		}
		rec := b.NewRecordBatch()
		defer rec.Release()
		to, _ := json.Marshal(next)
		batch := connectors.Batch{
			Label:   fmt.Sprintf("%s lines %d..%d", s.cfg.Path, pos.Line+1, next.Line),
			Records: rec, JSON: true,
			Stream: warehouse.Quote(s.cfg.Path), Seq: "line", PositionSep: ":",
			Rejects:   rejects,
			Positions: []connectors.Advance{{Stream: s.cfg.Path, From: from, To: string(to)}},
		}
		if _, err := w.Write(ctx, batch); err != nil {
			return err
		}
		from, pos, rejects, n = string(to), next, nil, 0
		return ctx.Err()
	}
	for {
		line, err := r.ReadBytes('\n')
		if errors.Is(err, io.EOF) {
			break // a line without its \n is still being written: read it next time
		}
		if err != nil {
			return resume{from, pos}, fmt.Errorf("read %s: %w", s.cfg.Path, err)
		}
		next.Offset += int64(len(line))
		next.Line++
		text := line[:len(line)-1]
		if why := connectors.NotText(text); why != "" {
			rejects = append(rejects, connectors.Reject{Stream: s.cfg.Path, Seq: next.Line, Position: fmt.Sprintf("%s:%d", s.cfg.Path, next.Line),
				Reason: "the line " + why, Payload: text})
		} else {
			n++
			b.Field(0).(*array.StringBuilder).Append(string(text))
			b.Field(1).(*array.Int64Builder).Append(next.Line)
			b.Field(2).(*array.Int64Builder).Append(int64(n))
		}
		if n+len(rejects) >= cmp.Or(s.cfg.BatchSize, 10_000) {
			if err := flush(); err != nil {
				return resume{from, pos}, err
			}
		}
	}
	return resume{from, pos}, flush()
}
