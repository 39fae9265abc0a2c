package file

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ckm-dev/ckm/internal/shapetest"
	"github.com/ckm-dev/ckm/warehouse"
)

// The shape `ckm validate --connect` binds a JSON mapping over is the shape of the batches
// readJSONLines hands over: the same columns, the same DuckDB types.
func TestDocumentShapeIsTheShapeOfJSONLinesBatches(t *testing.T) {
	batches, shape := shapetest.Columns(t, jsonlSchema, (&Source{}).DocumentShape().Relation)
	require.Equal(t, []warehouse.Column{{Name: "payload", Type: "VARCHAR"}, {Name: "line", Type: "BIGINT"}}, batches)
	require.Equal(t, batches, shape)
}
