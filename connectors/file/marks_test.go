package file

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestMarkSkippedLinesTracksQuotesEscapesAndLongLines(t *testing.T) {
	long := "#" + strings.Repeat("x", 3<<20) // a comment longer than the copy's buffer
	for _, tc := range []struct {
		name, in, want  string
		d               dialect
		skip            int64
		marked, leading int64
	}{
		{name: "blank lines, not the one inside quotes",
			in:   "a,b\n1,\"x\n\ny\"\n\n2,3\n\n",
			want: "a,b\n1,\"x\n\ny\"\nM,\n2,3\nM,\n",
			d:    dialect{delim: ",", quote: `"`, escape: `"`}, marked: 2},
		{name: "doubled quotes stay inside the value",
			in:   "a,b\n1,\"say \"\"hi\"\"\n\nthere\"\n\n",
			want: "a,b\n1,\"say \"\"hi\"\"\n\nthere\"\nM,\n",
			d:    dialect{delim: ",", quote: `"`, escape: `"`}, marked: 1},
		{name: "an escaped quote does not close the value",
			in:   "a;b\n1;'it\\'s\n\nfine'\n\n",
			want: "a;b\n1;'it\\'s\n\nfine'\nM;\n",
			d:    dialect{delim: ";", quote: "'", escape: `\`}, marked: 1},
		{name: "comments before the header stay, the others become markers",
			in:   "# one\r\n# two\r\na,b\r\n" + long + "\r\n1,2\r\n# three\n",
			want: "# one\r\n# two\r\na,b\r\nM,\r\n1,2\r\nM,\n",
			d:    dialect{delim: ",", comment: "#"}, marked: 2, leading: 2},
		{name: "skipped lines are the reader's",
			in:   "title\n\na,b\n\n1,2\n",
			want: "title\n\na,b\nM,\n1,2\n",
			d:    dialect{delim: ","}, skip: 2, marked: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			src, dst := filepath.Join(dir, "in.csv"), filepath.Join(dir, "out.csv")
			require.NoError(t, os.WriteFile(src, []byte(tc.in), 0o600))
			marked, leading, err := markSkippedLines(src, dst, tc.d, tc.skip, "M", 2)
			require.NoError(t, err)
			got, err := os.ReadFile(dst)
			require.NoError(t, err)
			require.Equal(t, tc.want, string(got))
			require.Equal(t, []int64{tc.marked, tc.leading}, []int64{marked, leading})
		})
	}
}

func TestLineMarkersAvoidTheDialectsCharacters(t *testing.T) {
	d := dialect{delim: "a", quote: "b", escape: "c", comment: "k"}
	for range 20 {
		m := lineMarker(d)
		require.Len(t, m, 32)
		require.False(t, strings.ContainsAny(m, "abck"), m)
	}
}
