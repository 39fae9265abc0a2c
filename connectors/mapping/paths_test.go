package mapping

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// The keys a field's path reads, and the object each is read from: what the check for keys
// named twice looks at (worked by hand).
func TestJSONStepsNameEachKeyAndItsObject(t *testing.T) {
	for _, tc := range []struct {
		field string
		want  []jsonStep
	}{
		{"id", []jsonStep{{"$", "id"}}},
		{"customer.id", []jsonStep{{"$", "customer"}, {`$."customer"`, "id"}}},
		{`$.items[0].sku`, []jsonStep{{"$", "items"}, {"$.items[0]", "sku"}}},
		{`$."a.b"."c\"d"`, []jsonStep{{"$", "a.b"}, {`$."a.b"`, `c"d`}}},
		{`$.items[*].sku`, []jsonStep{{"$", "items"}}}, // a wildcard reads no one key
		{`$.*`, nil},
		{`$[0].id`, []jsonStep{{"$[0]", "id"}}},
		{`$."open`, nil},
	} {
		require.Equal(t, tc.want, jsonSteps(jsonPath(tc.field)), tc.field)
	}
}
