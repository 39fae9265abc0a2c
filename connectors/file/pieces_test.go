package file

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Pieces are cut only where a line ends outside quotes, hold whole lines, and say which line of
// the file each starts at; put back together they are the file.
func TestPiecesEndOnlyWhereARecordEnds(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		d        dialect
		leading  int64
		size     int
		starts   []int64 // the line each piece starts at
		marked   []int64
	}{
		{name: "a piece per line once each is big enough",
			in: "a,b\n1,2\n3,4\n5,6\n", d: dialect{delim: ",", quote: `"`, escape: `"`, header: true},
			size: 1, starts: []int64{1, 3, 4}},
		{name: "a quoted value over lines is never cut, doubled quotes inside",
			in: "a,b\n1,\"x\n\"\"y\"\"\nz\"\n2,3\r\n4,\"\r\n\"\r\n", d: dialect{delim: ",", quote: `"`, escape: `"`, header: true},
			size: 1, starts: []int64{1, 5, 6}},
		{name: "an escaped quote does not close the value",
			in: "1;'it\\'s\nfine'\n2;x\n", d: dialect{delim: ";", quote: "'", escape: `\`},
			size: 1, starts: []int64{1, 3}},
		{name: "skipped lines open no quotes, the first piece holds the header and a record",
			in: "title \"q1\n# a \"note\na,b\n1,2\n3,4\n", d: dialect{delim: ",", quote: `"`, escape: `"`, header: true, skip: 1, comment: "#"}, leading: 1,
			size: 1, starts: []int64{1, 5}},
		{name: "marker rows are counted per piece",
			in: "a,b\nM,\n1,2\nM,\nM,\n3,4", d: dialect{delim: ",", header: true},
			size: 10, starts: []int64{1, 4}, marked: []int64{1, 2}},
		{name: "pieces grow to the size asked for",
			in: "a,b\n11,22\n33,44\n55,66\n77,88\n", d: dialect{delim: ",", header: true},
			size: 12, starts: []int64{1, 4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			src := filepath.Join(dir, "in.csv")
			require.NoError(t, os.WriteFile(src, []byte(tc.in), 0o600))
			r := csvRead{target: src, d: tc.d, leading: tc.leading, headerLines: tc.d.skip + tc.leading}
			if tc.d.header {
				r.headerLines++
			}
			if tc.marked != nil {
				r.marker = "M"
			}
			pieces, err := openPieces(r, dir, tc.size)
			require.NoError(t, err)
			defer pieces.Close()
			var starts, marked []int64
			var whole strings.Builder
			for {
				pc, err := pieces.next()
				require.NoError(t, err)
				body, err := os.ReadFile(pc.path)
				require.NoError(t, err)
				require.NotEmpty(t, body)
				whole.Write(body)
				starts, marked = append(starts, pc.firstLine), append(marked, pc.marked)
				require.Equal(t, int64(strings.Count(whole.String()[:whole.Len()-len(body)], "\n")+1), pc.firstLine, "piece %d starts after the lines before it", len(starts))
				if pc.last {
					break
				}
			}
			require.Equal(t, tc.in, whole.String())
			require.Equal(t, tc.starts, starts)
			if tc.marked != nil {
				require.Equal(t, tc.marked, marked)
			}
		})
	}
}
