package file

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"golang.org/x/text/transform"

	"github.com/ckm-dev/ckm/connectors"
)

// JSON Lines are split into lines here, not by DuckDB: its CSV reader, which has no business
// with JSON, fails a whole file on a stray \r and stores no line it cannot decode. A line is
// what ends with \n (a \r before it is dropped); the mapping parses each as a JSON document.

// jsonlSchema is a batch of lines: the line's text and its number in the file.
var jsonlSchema = arrow.NewSchema([]arrow.Field{
	{Name: "payload", Type: arrow.BinaryTypes.String},
	{Name: "line", Type: arrow.PrimitiveTypes.Int64},
}, nil)

// jsonlShape is jsonlSchema as a relation of no lines.
const jsonlShape = "(SELECT NULL::VARCHAR AS payload, NULL::BIGINT AS line LIMIT 0)"

// DocumentShape is a batch of no JSON lines, as readJSONLines hands lines over
// (connectors.DocumentShaper).
func (s *Source) DocumentShape() connectors.Batch {
	return connectors.Batch{Label: "JSON Lines", Relation: jsonlShape, JSON: true, Stream: "''", Seq: "{ordinal}", PositionSep: ":"}
}

// Lines go to the writer in batches of at most batch_size lines or batch_bytes of text. Batches
// are large because DuckDB maps a batch with one thread per row group (122,880 rows): 100k-line
// batches mapped 1.7× slower than the whole file at once.
const defaultJSONLBatchLines = 1_000_000

// readJSONLines hands the file's lines to w a batch at a time. A line that is not UTF-8 text
// or is longer than maxLine is a reject; a file that starts with a UTF-16 byte order mark is
// decoded from UTF-16 (JSON's first RFC allowed it; PowerShell writes it). It starts at line
// from (1: the whole file); first is the file's first batch, with what it replaces; advance
// moves the file's position with each batch.
func (s *Source) readJSONLines(ctx context.Context, w connectors.Writer, path string, inUTF16 bool, first connectors.Batch, maxLine, from int64,
	advance func(next int64) []connectors.Advance) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("read %s: %w", first.Label, err)
	}
	defer f.Close()
	content, closeContent, err := decompressed(path, f)
	if err != nil {
		return fmt.Errorf("read %s: %w", first.Label, err)
	}
	defer closeContent()
	if inUTF16 {
		content = transform.NewReader(content, utf16.NewDecoder())
	}
	br := bufio.NewReaderSize(content, 1<<20)
	b := array.NewRecordBuilder(memory.DefaultAllocator, jsonlSchema)
	defer b.Release()
	batch, bytesIn := first, 0
	batchLines := cmp.Or(s.cfg.BatchSize, defaultJSONLBatchLines)
	batchBytes, err := s.cfg.batchBytes()
	if err != nil {
		return err
	}
	flush := func(next int64) error {
		rec := b.NewRecordBatch()
		defer rec.Release()
		batch.Records, batch.JSON, batch.Seq = rec, true, "{ordinal}"
		batch.Positions = advance(next)
		if _, err := w.Write(ctx, batch); err != nil {
			return err
		}
		// Later batches add to the file: only the first replaces its earlier rows.
		batch, bytesIn = connectors.Batch{Label: first.Label, Stream: first.Stream, PositionSep: first.PositionSep}, 0
		return ctx.Err()
	}
	var line []byte
	for n := int64(1); ; n++ {
		line, err = readLine(br, line[:0], maxLine)
		if err == io.EOF && line == nil {
			return flush(0)
		}
		if err != nil && err != io.EOF && err != errLongLine {
			return fmt.Errorf("read %s: %w", first.Label, err)
		}
		if n < from {
			continue // committed by a load that stopped after it
		}
		text := bytes.TrimSuffix(line, []byte("\r"))
		if n == 1 {
			text = connectors.WithoutBOM(text)
		}
		// A reject keeps a copy of its bytes: the next line is read into the same buffer.
		switch problem := connectors.NotText(text); {
		case err == errLongLine:
			batch.Rejects = append(batch.Rejects, connectors.Reject{Stream: first.Label, Seq: n, Position: fmt.Sprintf("%s:%d", first.Label, n),
				Reason:  fmt.Sprintf("line longer than max_line_size %d bytes (payload holds its first %d bytes)", maxLine, min(len(text), connectors.OversizedHead)),
				Payload: bytes.Clone(text[:min(len(text), connectors.OversizedHead)])})
		case problem != "":
			batch.Rejects = append(batch.Rejects, connectors.Reject{Stream: first.Label, Seq: n, Position: fmt.Sprintf("%s:%d", first.Label, n),
				Reason: "line " + problem, Payload: bytes.Clone(text)})
		default:
			b.Field(0).(*array.StringBuilder).BinaryBuilder.Append(text)
			b.Field(1).(*array.Int64Builder).Append(n)
			bytesIn += len(text)
		}
		if b.Field(1).Len()+len(batch.Rejects) >= batchLines || bytesIn >= batchBytes {
			if err := flush(n + 1); err != nil {
				return err
			}
		}
	}
}

// errLongLine is a line longer than the maximum: readLine keeps its start and skips the rest.
var errLongLine = errors.New("line too long")

// readLine reads the next line, without its \n, into buf, keeping at most max+1 bytes of it. A
// last line without \n comes with io.EOF; after it, a nil line and io.EOF.
func readLine(br *bufio.Reader, buf []byte, max int64) ([]byte, error) {
	var length int64
	for {
		chunk, err := br.ReadSlice('\n')
		if err != nil && err != bufio.ErrBufferFull && err != io.EOF {
			return nil, err
		}
		ended := len(chunk) > 0 && chunk[len(chunk)-1] == '\n'
		body := chunk
		if ended {
			body = chunk[:len(chunk)-1]
		}
		length += int64(len(body))
		if room := max + 1 - int64(len(buf)); room > 0 {
			buf = append(buf, body[:min(int64(len(body)), room)]...)
		}
		switch {
		case err == bufio.ErrBufferFull:
			continue
		case !ended && length == 0:
			return nil, io.EOF
		case length > max:
			return buf, errLongLine
		case !ended:
			return buf, io.EOF
		}
		return buf, nil
	}
}
