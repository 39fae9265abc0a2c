package file

import (
	"context"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/ckm-dev/ckm/warehouse"
)

// The shape `ckm validate --connect` binds a JSON mapping over is the shape of the batches
// readJSONLines hands over: the same columns, the same DuckDB types.
func TestDocumentShapeIsTheShapeOfJSONLinesBatches(t *testing.T) {
	ctx := context.Background()
	w, err := warehouse.OpenScratch(ctx)
	require.NoError(t, err)
	defer w.Close()
	conn, err := w.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	describe := func(relation string) [][2]string {
		rows, err := conn.QueryContext(ctx, "SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM "+relation+")")
		require.NoError(t, err)
		defer rows.Close()
		var cols [][2]string
		for rows.Next() {
			var c [2]string
			require.NoError(t, rows.Scan(&c[0], &c[1]))
			cols = append(cols, c)
		}
		require.NoError(t, rows.Err())
		return cols
	}
	b := array.NewRecordBuilder(memory.DefaultAllocator, jsonlSchema)
	defer b.Release()
	rec := b.NewRecordBatch()
	defer rec.Release()
	var batches [][2]string
	require.NoError(t, conn.WithArrowView(rec, func(view string) error {
		batches = describe(view)
		return nil
	}))
	require.Equal(t, [][2]string{{"payload", "VARCHAR"}, {"line", "BIGINT"}}, batches)
	require.Equal(t, batches, describe((&Source{}).DocumentShape().Relation))
}
