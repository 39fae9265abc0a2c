package file

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"io"
	"strings"
)

// DuckDB's CSV reader passes over blank lines and comment lines without a row or a reject, so
// the records after them would be numbered as if those lines were not there: a record on line
// 10 after a blank line would claim line 9. Such a file is read through a copy in which each of
// those lines is a marker row instead (connectors.Batch.LineMarker): numbered like a record,
// then dropped by the writer.

// lineMarker returns a random value for a marker row's first field, of characters the dialect
// gives no meaning to, so that no record of the file holds it.
func lineMarker(d dialect) string {
	special := d.delim + d.quote + d.escape + d.comment
	alphabet := strings.Map(func(r rune) rune {
		if strings.ContainsRune(special, r) {
			return -1
		}
		return r
	}, "abcdefghijklmnopqrstuvwxyz0123456789")
	b := make([]byte, 32)
	rand.Read(b) // never fails (crypto/rand)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// markSkippedLines copies the CSV file src (decompressed) to dst with every line the reader
// would pass over (blank, or starting with the dialect's comment) replaced by a marker row: ncols
// fields, the first one marker. Lines before the header cannot be rows: the first skip lines
// and the comment lines right after them stay, for the reader to pass over; leading counts
// those comment lines. A blank line inside a quoted value is part of the value and stays. It
// returns how many lines it marked.
func markSkippedLines(src, dst string, d dialect, skip int64, marker string, ncols int) (marked, leading int64, err error) {
	err = rewrite(src, dst, func(br *bufio.Reader, w *bufio.Writer) error {
		row := marker + strings.Repeat(d.delim, max(ncols-1, 0))
		quotes := quotingOf(d)
		var lines int64  // lines ended outside quotes so far
		started := false // past the first line that is neither skipped nor blank nor a comment
		lineStart := true
		skipping, last := false, byte(0) // inside a blank or comment line; its last byte so far
		for {
			frag, rerr := br.ReadSlice('\n')
			if rerr != nil && rerr != bufio.ErrBufferFull && rerr != io.EOF {
				return rerr
			}
			ends := len(frag) > 0 && frag[len(frag)-1] == '\n'
			if lineStart && !quotes.inQuotes && lines >= skip {
				blank := ends && (len(frag) == 1 || string(frag) == "\r\n")
				comment := d.comment != "" && bytes.HasPrefix(frag, []byte(d.comment))
				switch {
				case !started && comment:
					leading++
				case !started && blank: // the reader's skip takes these, as sniffed
				case blank || comment:
					skipping, last = true, 0
				default:
					started = true
				}
			}
			switch {
			case skipping && ends:
				ending := "\n"
				if len(frag) >= 2 && frag[len(frag)-2] == '\r' || len(frag) == 1 && last == '\r' {
					ending = "\r\n"
				}
				w.WriteString(row + ending)
				marked++
				skipping = false
			case skipping:
				if len(frag) > 0 {
					last = frag[len(frag)-1]
				}
			default:
				w.Write(frag)
				quotes.feed(frag)
			}
			lineStart = ends && !quotes.inQuotes
			if lineStart {
				lines++
			}
			if rerr == io.EOF {
				break
			}
		}
		return nil
	})
	return marked, leading, err
}

// quoting follows a CSV dialect's quotes through a file's bytes, to tell a line end that ends a
// record from one inside a quoted value.
type quoting struct {
	quote, escape     byte // 0: none
	inQuotes, escaped bool
}

func quotingOf(d dialect) quoting {
	var q quoting
	if len(d.quote) == 1 {
		q.quote = d.quote[0]
	}
	if len(d.escape) == 1 && d.escape != d.quote {
		q.escape = d.escape[0] // an escape equal to the quote is a doubled quote: two toggles
	}
	return q
}

// feed follows the quotes through the next bytes of the file.
func (q *quoting) feed(frag []byte) {
	if q.quote == 0 || !q.inQuotes && bytes.IndexByte(frag, q.quote) < 0 {
		return
	}
	for _, c := range frag {
		switch {
		case !q.inQuotes:
			q.inQuotes = c == q.quote
		case q.escaped:
			q.escaped = false
		case q.escape != 0 && c == q.escape:
			q.escaped = true
		case c == q.quote:
			q.inQuotes = false
		}
	}
}
