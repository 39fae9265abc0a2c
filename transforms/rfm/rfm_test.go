package rfm

import (
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"
)

func TestQuintilesByHand(t *testing.T) {
	// Ten distinct values: cume_dist = k/10, score = ceil(5k/10) = ceil(k/2).
	require.Equal(t, []int8{1, 1, 2, 2, 3, 3, 4, 4, 5, 5}, Quintiles([]int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}))
	// Ties share the score of the last of them: three 1s have cume_dist 3/5 → ceil(3) = 3.
	require.Equal(t, []int8{3, 3, 3, 4, 5}, Quintiles([]int64{1, 1, 1, 2, 3}))
	// Float ties work the same way: cume_dist 3/5 → 3, 5/5 → 5.
	require.Equal(t, []int8{3, 3, 3, 5, 5}, Quintiles([]float64{0.1, 0.1, 0.1, 0.7, 0.7}))
	// Seven customers: scores ceil(5k/7) for k = 1..7 = 1,2,3,3,4,5,5; input order does not matter.
	require.Equal(t, []int8{5, 1, 3, 2, 5, 4, 3}, Quintiles([]float64{70, 10, 40, 20, 60, 50, 30}))
	require.Empty(t, Quintiles([]int64{}))
}

func TestScoreAndSegments(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.DefaultAllocator)
	defer mem.AssertSize(t, 0)
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "customer_id", Type: arrow.BinaryTypes.String},
		{Name: "recency_days", Type: arrow.PrimitiveTypes.Int32},
		{Name: "frequency", Type: arrow.PrimitiveTypes.Int64},
		{Name: "monetary", Type: arrow.PrimitiveTypes.Float64},
	}, nil)
	b := array.NewRecordBuilder(mem, schema)
	defer b.Release()
	// Five customers, one per quintile in every dimension; a is the most recent, frequent and valuable.
	b.Field(0).(*array.StringBuilder).AppendValues([]string{"a", "b", "c", "d", "e"}, nil)
	b.Field(1).(*array.Int32Builder).AppendValues([]int32{1, 10, 100, 200, 300}, nil)
	b.Field(2).(*array.Int64Builder).AppendValues([]int64{9, 1, 5, 2, 1}, nil)
	b.Field(3).(*array.Float64Builder).AppendValues([]float64{500, 400, 300, 200, 100}, nil)
	in := b.NewRecordBatch()
	defer in.Release()

	out, err := Score([]arrow.RecordBatch{in}, Params{Segments: DefaultSegments()}, mem)
	require.NoError(t, err)
	defer out.Release()
	cells := out.Column(7).(*array.String)
	segs := out.Column(8).(*array.String)
	got := map[string]string{}
	for i := 0; i < int(out.NumRows()); i++ {
		got[out.Column(0).(*array.String).Value(i)] = cells.Value(i) + " " + segs.Value(i)
	}
	// frequency 1 is shared by b and e: cume_dist 2/5 → F score 2.
	require.Equal(t, map[string]string{
		"a": "555 Champions",
		"b": "424 Potential Loyalists",
		"c": "343 Loyal Customers",
		"d": "232 At Risk",
		"e": "121 Hibernating",
	}, got)
}

func TestSegmentsFirstMatchWinsAndUnmatched(t *testing.T) {
	rules, err := compile([]Segment{{"5.", "Top"}, {"55", "Never reached"}})
	require.NoError(t, err)
	require.Equal(t, "Top", segmentOf(rules, "55"))
	require.Equal(t, Unmatched, segmentOf(rules, "11"))
	require.Error(t, ValidateSegments([]Segment{{"[", "Broken"}}))
	require.Error(t, ValidateSegments([]Segment{{"55", ""}}))
}

func TestDefaultSegmentsCoverEveryCell(t *testing.T) {
	rules, err := compile(DefaultSegments())
	require.NoError(t, err)
	for r := '1'; r <= '5'; r++ {
		for f := '1'; f <= '5'; f++ {
			require.NotEqual(t, Unmatched, segmentOf(rules, string([]rune{r, f})), "RF %c%c", r, f)
		}
	}
}
