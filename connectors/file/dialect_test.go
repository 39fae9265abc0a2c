package file

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// Only a first line that is exactly sep= and one character (any case, after a byte order mark)
// names the delimiter.
func TestExcelSeparatorIsOnlyAFirstLineOfItsOwn(t *testing.T) {
	for sample, want := range map[string]string{"sep=;\nid;x\n": ";", "\ufeffSep=\t\r\n": "\t", "sep=€\n": "€", "sep=;": ";",
		"sep=\n": "", "sep=;;\n": "", "sep=\"\n": "", "id,sep=;\n": "", "\nsep=;\n": "", "sep=\xff\n": ""} {
		require.Equal(t, want, excelSeparator([]byte(sample)), "%q", sample)
	}
}
