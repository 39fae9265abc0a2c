// Package arrowutil reads typed columns out of Arrow record batches, whatever physical
// string or integer width DuckDB chose for them.
package arrowutil

import (
	"fmt"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// Column finds a column by name.
func Column(rec arrow.RecordBatch, name string) (arrow.Array, error) {
	idx := rec.Schema().FieldIndices(name)
	if len(idx) == 0 {
		return nil, fmt.Errorf("column %s missing from batch (have %s)", name, rec.Schema())
	}
	return rec.Column(idx[0]), nil
}

// StringArray returns a string column as an Arrow string array (utf8) to put in an output
// batch: the column itself, retained, when it is one; otherwise a copy in mem. Release it.
func StringArray(rec arrow.RecordBatch, name string, mem memory.Allocator) (arrow.Array, error) {
	col, err := Column(rec, name)
	if err != nil {
		return nil, err
	}
	if arrow.TypeEqual(col.DataType(), arrow.BinaryTypes.String) {
		col.Retain()
		return col, nil
	}
	values, err := Strings(nil, rec, name)
	if err != nil {
		return nil, err
	}
	b := array.NewStringBuilder(mem)
	defer b.Release()
	b.AppendValues(values, nil)
	return b.NewArray(), nil
}

// NewBatch makes a batch of schema from its first column (the customer ids an output shares
// with its input) and builders for the others, in order.
func NewBatch(schema *arrow.Schema, first arrow.Array, rest []array.Builder) arrow.RecordBatch {
	cols := []arrow.Array{first}
	for _, b := range rest {
		a := b.NewArray()
		defer a.Release()
		cols = append(cols, a)
	}
	return array.NewRecordBatch(schema, cols, int64(first.Len()))
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

// StringColumn reads one string column across batches. The strings are copied into one
// allocation of their own: they outlive the batches, which the caller may release.
func StringColumn(batches []arrow.RecordBatch, name string) ([]string, error) {
	out := make([]string, 0, rows(batches))
	for _, b := range batches {
		var err error
		if out, err = Strings(out, b, name); err != nil {
			return nil, err
		}
	}
	var all strings.Builder
	for _, s := range out {
		all.WriteString(s)
	}
	copied, at := all.String(), 0
	for i, s := range out {
		out[i], at = copied[at:at+len(s)], at+len(s)
	}
	return out, nil
}

// Float64Columns reads the named DOUBLE columns across batches, one slice per name.
func Float64Columns(batches []arrow.RecordBatch, names ...string) ([][]float64, error) {
	return columns(batches, names, Float64s)
}

// Int64Columns reads the named integer columns across batches, one slice per name.
func Int64Columns(batches []arrow.RecordBatch, names ...string) ([][]int64, error) {
	return columns(batches, names, Int64s)
}

func columns[T any](batches []arrow.RecordBatch, names []string, read func([]T, arrow.RecordBatch, string) ([]T, error)) ([][]T, error) {
	out := make([][]T, len(names))
	n := rows(batches)
	for i := range out {
		out[i] = make([]T, 0, n)
	}
	for _, b := range batches {
		for i, name := range names {
			var err error
			if out[i], err = read(out[i], b, name); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// rows counts the rows of batches, so that columns read from them are allocated once: growing a
// slice of a million values step by step cost more than reading them (fresh pages are slow to
// touch on a VM).
func rows(batches []arrow.RecordBatch) int {
	var n int64
	for _, b := range batches {
		n += b.NumRows()
	}
	return int(n)
}
