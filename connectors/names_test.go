package connectors_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ckm-dev/ckm/connectors"
)

func TestDistinctNamesNameAlikeFieldsByPosition(t *testing.T) {
	for _, tc := range []struct{ names, want []string }{
		{[]string{"id", "cust", "amt"}, []string{"id", "cust", "amt"}},
		{[]string{"id", "cust", "ts", "amt", "Cust", "cust_1"}, []string{"id", "cust (column 2)", "ts", "amt", "Cust (column 5)", "cust_1"}},
		{[]string{"a", "A", "a"}, []string{"a (column 1)", "A (column 2)", "a (column 3)"}},
		// A header naming a field the way a field by position is named: it is named by position too.
		{[]string{"id", "cust", "cust", "cust (column 2)", "CUST (COLUMN 3)"},
			[]string{"id", "cust (column 2)", "cust (column 3)", "cust (column 2) (column 4)", "CUST (COLUMN 3) (column 5)"}},
		{[]string{"x (column 12)", "x", "x"}, []string{"x (column 12)", "x (column 2)", "x (column 3)"}},
	} {
		got := connectors.DistinctNames(tc.names)
		require.Equal(t, tc.want, got, "%q", tc.names)
		seen := map[string]bool{}
		for _, n := range got {
			require.False(t, seen[strings.ToLower(n)], "%q named twice in %q", n, got)
			seen[strings.ToLower(n)] = true
		}
	}
	require.True(t, connectors.NamedAtColumn("Cust (column 5)", "cust"))
	require.False(t, connectors.NamedAtColumn("cust_1", "cust"))
}

func TestPrintableQuotesWhatATerminalWouldObey(t *testing.T) {
	for in, want := range map[string]string{
		"C0001":         "C0001",
		"Café Müller":   "Café Müller",
		"a b":           "a b",
		"a\nb":          `"a\nb"`,
		"\x1b[2J":       `"\x1b[2J"`,
		"tab\there":     `"tab\there"`,
		"no\u00a0break": `"no\u00a0break"`,
	} {
		require.Equal(t, want, connectors.Printable(in), "%q", in)
	}
	require.Equal(t, `id, "a\nb"`, connectors.NameList([]string{"id", "a\nb"}))
}
