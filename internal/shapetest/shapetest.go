// Package shapetest helps a connector's tests check that a relation it writes by hand (a batch
// of no records, for `ckm validate --connect` or a replay) has the shape of the Arrow batches it
// hands over.
package shapetest

import (
	"context"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/ckm-dev/ckm/warehouse"
)

// Columns returns, as a scratch DuckDB reads them, the columns of a batch of schema exposed as
// an Arrow view, and those of relation.
func Columns(t testing.TB, schema *arrow.Schema, relation string) (batch, rel []warehouse.Column) {
	ctx := context.Background()
	w, err := warehouse.OpenScratch(ctx)
	require.NoError(t, err)
	defer w.Close()
	conn, err := w.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	rec := b.NewRecordBatch()
	defer rec.Release()
	require.NoError(t, conn.WithArrowView(rec, func(view string) error {
		batch, err = warehouse.Describe(ctx, conn, "SELECT * FROM "+view)
		return err
	}))
	rel, err = warehouse.Describe(ctx, conn, "SELECT * FROM "+relation)
	require.NoError(t, err)
	return batch, rel
}
