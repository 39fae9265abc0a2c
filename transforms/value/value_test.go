package value

import (
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"
)

func TestThresholds(t *testing.T) {
	require.Equal(t, 3.0, Threshold([]float64{5, 1, 3}, "median", 0))
	require.Equal(t, 2.5, Threshold([]float64{4, 1, 2, 3}, "median", 0))
	// Pareto: total 100; the top customers 50 + 30 hold 80% → the threshold is 30.
	require.Equal(t, 30.0, Threshold([]float64{10, 50, 5, 30, 5}, "pareto", 0.8))
	// 50 alone is half, not yet 60%: 50 + 30 is needed.
	require.Equal(t, 30.0, Threshold([]float64{10, 50, 5, 30, 5}, "pareto", 0.6))
	require.Equal(t, 50.0, Threshold([]float64{10, 50, 5, 30, 5}, "pareto", 0.5))
	require.Equal(t, 0.0, Threshold(nil, "median", 0))
}

func TestTiers(t *testing.T) {
	require.Equal(t, "IV", Tier(true, true))
	require.Equal(t, "III", Tier(true, false))
	require.Equal(t, "II", Tier(false, true))
	require.Equal(t, "I", Tier(false, false))
}

func TestStageBoundaries(t *testing.T) {
	p := Params{}.WithDefaults()
	steady := Customer{TenureDays: 400, PurchaseDays: 5, PAlive: 0.9, Recent: 99, Before: 99} // trend exactly 1
	require.Equal(t, "stability", Stage(steady, p))

	c := steady
	c.TenureDays = 179
	require.Equal(t, "exploration", Stage(c, p), "tenure below 180 days")
	c.TenureDays = 180
	require.Equal(t, "stability", Stage(c, p), "180 days is no longer exploration")
	c = steady
	c.PurchaseDays = 2
	c.PAlive = 0.1
	require.Equal(t, "exploration", Stage(c, p), "≤ 2 purchase days wins over decline: first match")

	c = steady
	c.PAlive = 0.4999
	require.Equal(t, "decline", Stage(c, p))
	c.PAlive = 0.5
	require.Equal(t, "stability", Stage(c, p))

	c = steady
	c.Recent, c.Before = 69, 99 // (69+1)/(99+1) = 0.7 exactly: not below
	require.Equal(t, "stability", Stage(c, p))
	c.Recent = 68.9
	require.Equal(t, "decline", Stage(c, p))

	c = steady
	c.Recent, c.Before = 119, 99 // trend 1.2 exactly: formation
	require.Equal(t, "formation", Stage(c, p))
	c.Recent = 118.9
	require.Equal(t, "stability", Stage(c, p))
	c.Recent, c.PAlive = 500, 0.3
	require.Equal(t, "decline", Stage(c, p), "decline is checked before formation")
}

func TestScoreUsesActiveCustomersForThresholds(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.DefaultAllocator)
	defer mem.AssertSize(t, 0)
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "customer_id", Type: arrow.BinaryTypes.String},
		{Name: "current_value", Type: arrow.PrimitiveTypes.Float64},
		{Name: "active", Type: arrow.PrimitiveTypes.Int32},
		{Name: "tenure_days", Type: arrow.PrimitiveTypes.Int32},
		{Name: "purchase_days", Type: arrow.PrimitiveTypes.Int64},
		{Name: "recent_amount", Type: arrow.PrimitiveTypes.Float64},
		{Name: "before_amount", Type: arrow.PrimitiveTypes.Float64},
	}, nil)
	b := array.NewRecordBuilder(mem, schema)
	defer b.Release()
	// a, b, c are active (medians: current 20, potential 200); d is inactive with huge values
	// that must not move the thresholds.
	b.Field(0).(*array.StringBuilder).AppendValues([]string{"a", "b", "c", "d"}, nil)
	b.Field(1).(*array.Float64Builder).AppendValues([]float64{10, 20, 30, 0}, nil)
	b.Field(2).(*array.Int32Builder).AppendValues([]int32{1, 1, 1, 0}, nil)
	b.Field(3).(*array.Int32Builder).AppendValues([]int32{400, 400, 100, 900}, nil)
	b.Field(4).(*array.Int64Builder).AppendValues([]int64{5, 5, 5, 9}, nil)
	b.Field(5).(*array.Float64Builder).AppendValues([]float64{100, 10, 50, 0}, nil)
	b.Field(6).(*array.Float64Builder).AppendValues([]float64{10, 100, 50, 500}, nil)
	rec := b.NewRecordBatch()
	defer rec.Release()
	potential := []float64{300, 100, 200, 5000} // a, b, c, d
	pAlive := []float64{0.9, 0.9, 0.9, 0.9}
	// The thresholds come from the active customers a, b and c only.
	th := NewThresholds([]float64{10, 20, 30}, []float64{300, 100, 200}, Params{})
	require.Equal(t, Thresholds{Current: 20, Potential: 200, AnyActive: true}, th)
	out, err := Score(rec, potential, pAlive, th, Params{}, mem)
	require.NoError(t, err)
	defer out.Release()
	got := map[string]string{}
	for i := 0; i < int(out.NumRows()); i++ {
		got[out.Column(0).(*array.String).Value(i)] = out.Column(3).(*array.String).Value(i) + " " + out.Column(4).(*array.String).Value(i)
	}
	require.Equal(t, map[string]string{
		"a": "II formation",   // current 10 < 20, potential 300 ≥ 200; trend 101/11
		"b": "III decline",    // current 20 ≥ 20, potential 100 < 200; trend 11/101
		"c": "IV exploration", // both high; tenure 100 days
		"d": "II decline",     // inactive: compared with the active thresholds; no recent amount
	}, got)
}
