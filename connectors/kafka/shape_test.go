package kafka

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ckm-dev/ckm/internal/shapetest"
)

// The shape `ckm validate --connect` binds a Kafka mapping over, and the records a replay maps,
// are the shape of the batches a fetch hands over: the same columns, the same DuckDB types.
func TestDocumentShapeIsTheShapeOfFetchedBatches(t *testing.T) {
	fetched, shape := shapetest.Columns(t, schema, (&Source{}).DocumentShape().Relation)
	require.Len(t, fetched, len(schema.Fields()))
	require.Equal(t, fetched, shape)
}
