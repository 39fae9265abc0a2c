package file

import (
	"bufio"
	"errors"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/text/encoding"
	"golang.org/x/text/encoding/charmap"
	"golang.org/x/text/encoding/unicode"
	"golang.org/x/text/transform"
)

// csvDecoders are the encodings csv.encoding names, other than UTF-8, which DuckDB reads itself.
// DuckDB's own latin-1 reader would turn Windows-1252's €, smart quotes and dashes (0x80–0x9F)
// into control characters, so every one is decoded here, into a UTF-8 copy.
var csvDecoders = map[string]encoding.Encoding{
	"windows-1252": charmap.Windows1252,
	"latin-1":      charmap.ISO8859_1,
	"iso-8859-15":  charmap.ISO8859_15,
	"utf-16":       utf16,
}

// utf16 decodes UTF-16 of either byte order, told by the byte order mark (which it drops).
var utf16 = unicode.UTF16(unicode.LittleEndian, unicode.UseBOM)

// csvDecoder is the encoding a CSV file is decoded from into a UTF-8 copy before DuckDB reads it
// (nil: none, DuckDB reads the file): csv.encoding's, or else UTF-16 when the file starts with
// its byte order mark, which declares it (sc is the file's scan; a zero scan before there is one).
func (s *Source) csvDecoder(format string, sc scan) encoding.Encoding {
	if format != "csv" {
		return nil
	}
	if dec, ok := csvDecoders[s.cfg.CSV.Encoding]; ok {
		return dec
	}
	if sc.utf16 && s.cfg.CSV.Encoding == "" {
		return utf16
	}
	return nil
}

// inUTF8 decodes the file at path (decompressed) into a UTF-8 copy in dir and returns it with
// its scan: the copy's lines, the file's own size and checksum. A compressed file that turns out
// truncated or corrupt is damage, as scanFile tells it.
func inUTF8(path, dir string, dec encoding.Encoding, raw scan, maxLine int64) (string, scan, error) {
	copyPath := filepath.Join(dir, "utf8.csv")
	if err := decodeFile(path, copyPath, dec); err != nil {
		var readErr *os.PathError
		if errors.As(err, &readErr) {
			return "", raw, err
		}
		raw.damage = err.Error()
		return path, raw, nil
	}
	sc, err := scanFile(copyPath, true, maxLine)
	if err != nil {
		return "", raw, err
	}
	sc.size, sc.checksum, sc.modifiedNS = raw.size, raw.checksum, raw.modifiedNS
	return copyPath, sc, nil
}

func decodeFile(path, dst string, dec encoding.Encoding) error {
	return rewrite(path, dst, func(content *bufio.Reader, w *bufio.Writer) error {
		_, err := io.Copy(w, transform.NewReader(content, dec.NewDecoder()))
		return err
	})
}
