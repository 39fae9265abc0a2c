package file

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/ckm-dev/ckm/connectors"
)

// A CSV file larger than batch_bytes loads in pieces of about that size, each a batch of its own:
// a batch's mapped records stay in DuckDB's memory until they commit, so the 1M bench's 1.7 GB
// orders file loaded whole peaked at 3.7 GB against read_csv's 0.8 GB (and the 10M one's 14 GB
// spilled 18 GB to disk). Each piece is a copy of whole lines of the file, cut where a line ends
// outside quotes, and knows the line it starts at, so every record keeps its line in the file.
// Like a JSON Lines file's batches, the pieces move the file's position to a partial version
// until the last one commits: a load that stops half-way resumes at the first piece that did not
// commit, or reads the file again whole once it changed.

// piece is one part of a CSV file, copied into a file of its own.
type piece struct {
	path      string
	firstLine int64 // the line of the file the piece starts at, from 1
	marked    int64 // marker rows among its lines (see markSkippedLines)
	last      bool
}

// csvPieces cuts a CSV file's decompressed content into pieces of about size bytes.
type csvPieces struct {
	content      *bufio.Reader
	closeContent func()
	file         *os.File
	dir          string
	size         int64
	quotes       quoting
	marker       []byte
	// raw lines are the first lines, which the reader skips without parsing (a title, `sep=;`):
	// their quotes open nothing. lead lines come before the first record; the first piece holds
	// them and at least one line more.
	raw, lead int64
	lines     int64 // the lines cut into pieces so far
	pieces    int
}

func openPieces(r csvRead, dir string, size int) (*csvPieces, error) {
	f, err := os.Open(r.target)
	if err != nil {
		return nil, err
	}
	content, closeContent, err := decompressed(r.target, f)
	if err != nil {
		f.Close()
		return nil, err
	}
	p := &csvPieces{content: bufio.NewReaderSize(content, 1<<20), closeContent: closeContent, file: f, dir: dir, size: int64(size),
		quotes: quotingOf(r.d), raw: r.d.skip + r.leading, lead: r.headerLines}
	if r.marker != "" {
		p.marker = []byte(r.marker)
	}
	return p, nil
}

func (p *csvPieces) Close() {
	p.closeContent()
	p.file.Close()
}

// next copies the next piece into a file of its own: whole lines, at least size bytes of them
// unless the file ends first, up to a line end outside quotes.
func (p *csvPieces) next() (pc piece, err error) {
	p.pieces++
	pc = piece{path: filepath.Join(p.dir, fmt.Sprintf("piece-%06d.csv", p.pieces)), firstLine: p.lines + 1}
	out, err := os.OpenFile(pc.path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return pc, err
	}
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
	}()
	w := bufio.NewWriterSize(out, 1<<20)
	least := pc.firstLine // the piece's last line is at least this one
	if pc.firstLine == 1 {
		least += p.lead
	}
	var written int64
	lineStart := true
	for {
		recordStart := lineStart && !p.quotes.inQuotes
		frag, ended, eof, err := p.read()
		if err != nil {
			return pc, err
		}
		if recordStart && p.marker != nil && bytes.HasPrefix(frag, p.marker) {
			pc.marked++
		}
		if _, err := w.Write(frag); err != nil {
			return pc, err
		}
		written += int64(len(frag))
		lineStart = ended
		if eof {
			pc.last = true
			break
		}
		if ended && !p.quotes.inQuotes && p.lines >= least && written >= p.size {
			if _, err := p.content.Peek(1); err == io.EOF {
				pc.last = true
			} else if err != nil {
				return pc, err
			}
			break
		}
	}
	return pc, w.Flush()
}

// read reads the next fragment of the content (a line, or a part of a line longer than the
// buffer), following its quotes and counting the line it ends; eof says the content ended.
func (p *csvPieces) read() (frag []byte, ended, eof bool, err error) {
	frag, err = p.content.ReadSlice('\n')
	if err != nil && err != bufio.ErrBufferFull && err != io.EOF {
		return nil, false, false, err
	}
	if p.lines >= p.raw {
		p.quotes.feed(frag)
	}
	if ended = len(frag) > 0 && frag[len(frag)-1] == '\n'; ended {
		p.lines++
	}
	return frag, ended, err == io.EOF, nil
}

// skipTo passes over the lines before line from, following their quotes.
func (p *csvPieces) skipTo(from int64) error {
	for p.lines < from-1 {
		_, _, eof, err := p.read()
		if err != nil {
			return err
		}
		if eof && p.lines < from-1 {
			return fmt.Errorf("the file ends at line %d", p.lines+1)
		}
	}
	return nil
}

// readCSVPieces loads the CSV file r reads in pieces of about size bytes, each a batch, from line
// from on (1: the whole file). first is the file's batch as a whole, with what it replaces;
// advance moves the file's position with each piece.
func (s *Source) readCSVPieces(ctx context.Context, w connectors.Writer, first connectors.Batch, r csvRead, dir string, size int, from int64,
	advance func(next int64) []connectors.Advance) error {
	pieces, err := openPieces(r, dir, size)
	if err != nil {
		return fmt.Errorf("read %s: %w", first.Label, err)
	}
	defer pieces.Close()
	if err := pieces.skipTo(from); err != nil {
		return fmt.Errorf("read %s: resume at line %d: %w", first.Label, from, err)
	}
	b := first
	for {
		pc, err := pieces.next()
		if err != nil {
			return fmt.Errorf("read %s: cut the piece from line %d: %w", first.Label, pc.firstLine, err)
		}
		r.batch(&b, pc.path, pc.firstLine, pc.marked)
		next := pieces.lines + 1
		if pc.last {
			next = 0
		}
		b.Positions = advance(next)
		_, err = w.Write(ctx, b)
		os.Remove(pc.path)
		if err != nil || pc.last {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		// Later pieces add to the file: only the first replaces its earlier rows.
		b = connectors.Batch{Label: first.Label, Stream: first.Stream, PositionSep: first.PositionSep}
	}
}
