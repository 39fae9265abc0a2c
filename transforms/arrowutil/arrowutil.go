// Package arrowutil reads typed columns out of Arrow record batches, whatever physical
// string or integer width DuckDB chose for them.
package arrowutil

import (
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
)

// Column finds a column by name.
func Column(rec arrow.RecordBatch, name string) (arrow.Array, error) {
	idx := rec.Schema().FieldIndices(name)
	if len(idx) == 0 {
		return nil, fmt.Errorf("column %s missing from batch (have %s)", name, rec.Schema())
	}
	return rec.Column(idx[0]), nil
}

// Strings appends a string column's values to dst.
func Strings(dst []string, rec arrow.RecordBatch, name string) ([]string, error) {
	col, err := Column(rec, name)
	if err != nil {
		return nil, err
	}
	type stringer interface{ Value(int) string }
	s, ok := col.(stringer)
	if !ok {
		return nil, fmt.Errorf("column %s is %s, want a string", name, col.DataType())
	}
	for i := 0; i < col.Len(); i++ {
		dst = append(dst, s.Value(i))
	}
	return dst, nil
}

// Int64s appends an integer column's values to dst; NULL reads as 0.
func Int64s(dst []int64, rec arrow.RecordBatch, name string) ([]int64, error) {
	col, err := Column(rec, name)
	if err != nil {
		return nil, err
	}
	switch a := col.(type) {
	case *array.Int64:
		return append(dst, a.Int64Values()...), nil
	case *array.Int32:
		for _, v := range a.Int32Values() {
			dst = append(dst, int64(v))
		}
		return dst, nil
	}
	return nil, fmt.Errorf("column %s is %s, want an integer", name, col.DataType())
}

// Float64s appends a DOUBLE column's values to dst; NULL reads as 0.
func Float64s(dst []float64, rec arrow.RecordBatch, name string) ([]float64, error) {
	col, err := Column(rec, name)
	if err != nil {
		return nil, err
	}
	a, ok := col.(*array.Float64)
	if !ok {
		return nil, fmt.Errorf("column %s is %s, want a double", name, col.DataType())
	}
	return append(dst, a.Float64Values()...), nil
}
