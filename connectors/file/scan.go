package file

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/zeebo/xxh3"
)

// scan is what one pass over a file tells before DuckDB reads it.
type scan struct {
	size       int64
	modifiedNS *int64 // the modification time seen before reading, once settled (see settledModTime)
	checksum   string // xxh3-128 of the file's bytes as stored
	// damage says why the file cannot be read whole (a truncated or corrupt compressed stream);
	// empty for a sound file.
	damage string
	empty  bool // no bytes once decompressed
	// textBytes is the content's length once decompressed.
	textBytes int64
	// crlf and lf count lines ending in \r\n and in a bare \n: DuckDB's CSV reader fails a file
	// that mixes them, so such a file is read through a copy with \n endings.
	crlf, lf int64
	// longest is the longest line's length in bytes; sample holds the first lines (without the
	// ones longer than the maximum line size, which DuckDB's dialect sniffer cannot read past),
	// endings made \n; quoted tells whether the sample holds a double quote; wholeSample,
	// whether it holds every line of the file.
	longest     int64
	sample      []byte
	quoted      bool
	wholeSample bool
	// blankLines counts the blank lines with a line that is not blank after them (the CSV
	// reader passes over them; see markSkippedLines).
	blankLines int64
	// compression is how the file is compressed (see compressionOf).
	compression string
	// utf16 says the content starts with a UTF-16 byte order mark (Excel's "Unicode text",
	// PowerShell's redirections): it declares the encoding, which is then decoded (see utf16).
	utf16 bool
}

// Sample bounds: DuckDB sniffs the first 20,480 rows.
const (
	sampleLines = 20_480
	sampleBytes = 8 << 20
)

// scanFile reads the file once: its size and checksum, and for text formats (text true) the
// decompressed content's soundness, line endings, longest line and a sample of its first lines.
func scanFile(path string, text bool, maxLine int64) (scan, error) {
	var sc scan
	f, err := os.Open(path)
	if err != nil {
		return sc, fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	h := xxh3.New()
	counted := &countingReader{r: f}
	raw := io.TeeReader(counted, h)
	if info, err := f.Stat(); err == nil && info.Size() == 0 {
		text = false // no bytes: an empty file, whatever its name says it is compressed with
		sc.empty = true
	}
	if !text {
		if _, err := io.Copy(io.Discard, raw); err != nil {
			return sc, fmt.Errorf("read %s: %w", path, err)
		}
	} else {
		buffered := bufio.NewReader(raw)
		sc.compression = compressionOf(path, buffered)
		content, closeContent, err := decompress(sc.compression, buffered)
		if err != nil {
			sc.damage = err.Error()
		} else {
			err = sc.lines(content, maxLine)
			closeContent()
			if err != nil {
				var readErr *os.PathError
				if errors.As(err, &readErr) {
					return sc, fmt.Errorf("read %s: %w", path, err)
				}
				sc.damage = err.Error()
			}
		}
		// The checksum covers every byte, also past the damage.
		if _, err := io.Copy(io.Discard, raw); err != nil {
			return sc, fmt.Errorf("read %s: %w", path, err)
		}
	}
	sum := h.Sum128().Bytes()
	sc.size, sc.checksum = counted.n, "xxh3:"+hex.EncodeToString(sum[:])
	return sc, nil
}

// decompressed reads the file's content: gunzipped or un-zstd'ed as compressionOf tells.
// Decompressing checks the stream's own integrity (gzip's CRC and length): DuckDB reads a
// truncated gzip file up to the cut and says nothing.
func decompressed(path string, raw io.Reader) (io.Reader, func(), error) {
	br := bufio.NewReader(raw)
	return decompress(compressionOf(path, br), br)
}

// decompress reads content compressed as compression ("" for not at all).
func decompress(compression string, br *bufio.Reader) (io.Reader, func(), error) {
	switch compression {
	case "gzip":
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, nil, fmt.Errorf("truncated or corrupt gzip: %v", err)
		}
		zr.Multistream(true)
		return &damageReader{r: zr, what: "gzip"}, func() { zr.Close() }, nil
	case "zstd":
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, nil, fmt.Errorf("truncated or corrupt zstd: %v", err)
		}
		return &damageReader{r: zr, what: "zstd"}, zr.Close, nil
	}
	return br, func() {}, nil
}

// compressedSuffix is the file name suffix of each compression DuckDB's readers tell by name.
var compressedSuffix = map[string]string{"gzip": ".gz", "zstd": ".zst"}

// compressionOf tells how content is compressed ("gzip", "zstd", "" for not at all): by its
// first bytes, so that a gzip file named orders.csv is read as one, or else by the file's name,
// so that a file named .gz that is not gzip is damage.
func compressionOf(path string, content *bufio.Reader) string {
	head, _ := content.Peek(4)
	switch lower := strings.ToLower(path); {
	case bytes.HasPrefix(head, []byte{0x1F, 0x8B}):
		return "gzip"
	case bytes.HasPrefix(head, []byte{0x28, 0xB5, 0x2F, 0xFD}):
		return "zstd"
	case strings.HasSuffix(lower, compressedSuffix["gzip"]):
		return "gzip"
	case strings.HasSuffix(lower, compressedSuffix["zstd"]):
		return "zstd"
	}
	return ""
}

// damageReader names a decompressor's errors as damage to the file.
type damageReader struct {
	r    io.Reader
	what string
	n    int64
}

func (d *damageReader) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	d.n += int64(n)
	if err != nil && err != io.EOF {
		return n, fmt.Errorf("truncated or corrupt %s (after %d decompressed bytes): %v", d.what, d.n, err)
	}
	return n, err
}

// lines scans decompressed content for its line endings, its longest line and a sample.
func (sc *scan) lines(r io.Reader, maxLine int64) error {
	br := bufio.NewReaderSize(r, 1<<20)
	var line []byte  // the current line so far, kept while it may go into the sample
	var length int64 // the current line's bytes so far, without its \n
	var last byte    // the current line's last byte so far
	lines := 0
	var blanks int64 // blank lines since the last line that was not
	sc.empty, sc.wholeSample = true, true
	if head, _ := br.Peek(2); len(head) == 2 && (head[0] == 0xFF && head[1] == 0xFE || head[0] == 0xFE && head[1] == 0xFF) {
		sc.utf16 = true
	}
	for {
		chunk, err := br.ReadSlice('\n')
		if err != nil && err != bufio.ErrBufferFull && err != io.EOF {
			return err
		}
		sc.empty = sc.empty && len(chunk) == 0
		sc.textBytes += int64(len(chunk))
		newline := len(chunk) > 0 && chunk[len(chunk)-1] == '\n'
		body := chunk
		if newline {
			body = chunk[:len(chunk)-1]
		}
		if len(body) > 0 {
			last = body[len(body)-1]
		}
		length += int64(len(body))
		sampling := lines < sampleLines && len(sc.sample) < sampleBytes
		if sampling && length <= maxLine+1 {
			line = append(line, body...)
		}
		if newline || (err == io.EOF && length > 0) {
			content := length
			switch {
			case newline && length > 0 && last == '\r':
				sc.crlf++
				content--
			case newline:
				sc.lf++
			}
			sc.longest = max(sc.longest, content)
			if content == 0 {
				blanks++
			} else {
				sc.blankLines += blanks
				blanks = 0
			}
			if sampling && content <= maxLine {
				kept := line[:content]
				sc.quoted = sc.quoted || bytes.IndexByte(kept, '"') >= 0
				sc.sample = append(append(sc.sample, kept...), '\n')
			} else {
				sc.wholeSample = false
			}
			lines++
			line, length, last = line[:0], 0, 0
		}
		if err == io.EOF {
			return nil
		}
	}
}

// mixedEndings tells whether the file ends some lines with \r\n and others with \n.
func (sc scan) mixedEndings() bool { return sc.crlf > 0 && sc.lf > 0 }

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// rewrite writes dst from the file at path, decompressed, through fn: the copies DuckDB reads in
// place of a file (line endings made one, blank lines marked, an encoding decoded).
func rewrite(path, dst string, fn func(content *bufio.Reader, w *bufio.Writer) error) (err error) {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	content, closeContent, err := decompressed(path, f)
	if err != nil {
		return err
	}
	defer closeContent()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
	}()
	w := bufio.NewWriterSize(out, 1<<20)
	if err := fn(bufio.NewReaderSize(content, 1<<20), w); err != nil {
		return err
	}
	return w.Flush()
}

// writeNormalized copies the file's decompressed content to dst with every \r\n made \n.
func writeNormalized(path, dst string) error {
	return rewrite(path, dst, func(br *bufio.Reader, w *bufio.Writer) error {
		pendingCR := false
		for {
			b, err := br.ReadByte()
			if err == io.EOF {
				break
			}
			if err != nil {
				return err
			}
			if pendingCR && b != '\n' {
				w.WriteByte('\r')
			}
			pendingCR = b == '\r'
			if !pendingCR {
				w.WriteByte(b)
			}
		}
		if pendingCR {
			w.WriteByte('\r')
		}
		return nil
	})
}
