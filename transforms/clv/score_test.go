package clv

import (
	"fmt"
	"math"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"
)

// The scorer shares each (x, T) pair's hypergeometric terms between histories; every
// prediction must still equal, to the last bit, the month-by-month sum of ExpectedPurchases
// computed for the customer alone.
func TestScoresEqualEachCustomerPredictedAlone(t *testing.T) {
	bg := BGNBD{R: 0.2425945, Alpha: 4.4136019, A: 0.7929199, B: 2.4258881}
	gg := GammaGamma{P: 6.2496, Q: 3.7442, Gamma: 15.4435}
	for _, unit := range []string{"week", "day"} {
		p := Params{TimeUnit: unit, HorizonMonths: 12, MonthlyDiscount: 0.01, MarginRate: 0.3}.WithDefaults()
		histories := Compress(cdnowSummary(t))
		byHistory := make([]Customer, len(histories))
		pairs := map[[2]float64]bool{}
		for i, h := range histories {
			byHistory[i] = h.Customer
			pairs[[2]float64{h.X, h.T}] = true
		}
		require.Less(t, len(pairs), len(byHistory)/2, "the CDNOW histories share (x, T) pairs, or this test would not exercise sharing")
		scorer, err := NewScorer(byHistory, bg, gg, p)
		require.NoError(t, err)

		mem := memory.NewCheckedAllocator(memory.DefaultAllocator)
		b := array.NewRecordBuilder(mem, arrow.NewSchema([]arrow.Field{
			{Name: "customer_id", Type: arrow.BinaryTypes.String}, {Name: "x", Type: arrow.PrimitiveTypes.Float64},
			{Name: "t_x", Type: arrow.PrimitiveTypes.Float64}, {Name: "t_cal", Type: arrow.PrimitiveTypes.Float64},
			{Name: "zbar", Type: arrow.PrimitiveTypes.Float64},
		}, nil))
		for i, c := range byHistory {
			b.Field(0).(*array.StringBuilder).Append(fmt.Sprint("C", i))
			for j, v := range []float64{c.X, c.Tx, c.T, c.Zbar} {
				b.Field(j + 1).(*array.Float64Builder).Append(v)
			}
		}
		rec := b.NewRecordBatch()
		b.Release()
		out, err := scorer.Score(rec, mem)
		require.NoError(t, err)
		col := func(name string) []float64 {
			return out.Column(out.Schema().FieldIndices(name)[0]).(*array.Float64).Float64Values()
		}
		pAlive, expected, clv := col("p_alive"), col("expected_purchases"), col("clv")

		unitDays, _ := p.UnitDays()
		month := 30 / unitDays
		for i, c := range byHistory {
			var discounted, prev float64
			for m := 1; m <= p.HorizonMonths; m++ {
				cum := bg.ExpectedPurchases(c, float64(m)*month)
				discounted += (cum - prev) / math.Pow(1+p.MonthlyDiscount, float64(m))
				prev = cum
			}
			require.Equal(t, bg.PAlive(c), pAlive[i], "%s: p_alive of %+v", unit, c)
			require.Equal(t, prev, expected[i], "%s: expected purchases of %+v", unit, c)
			require.Equal(t, discounted*gg.ExpectedAverageValue(c)*p.MarginRate, clv[i], "%s: clv of %+v", unit, c)
		}
		out.Release()
		rec.Release()
		mem.AssertSize(t, 0)
	}
}

// A customer is predicted from the terms of its (x, T) pair, computed for the fitted histories:
// one whose pair is not among them is refused by name, not scored with another's terms.
func TestScoreRefusesACustomerOutsideTheFittedHistories(t *testing.T) {
	bg := BGNBD{R: 0.2425945, Alpha: 4.4136019, A: 0.7929199, B: 2.4258881}
	gg := GammaGamma{P: 6.2496, Q: 3.7442, Gamma: 15.4435}
	scorer, err := NewScorer([]Customer{{X: 2, Tx: 10, T: 30}}, bg, gg, Params{})
	require.NoError(t, err)
	mem := memory.NewCheckedAllocator(memory.DefaultAllocator)
	defer mem.AssertSize(t, 0)
	b := array.NewRecordBuilder(mem, arrow.NewSchema([]arrow.Field{
		{Name: "customer_id", Type: arrow.BinaryTypes.String}, {Name: "x", Type: arrow.PrimitiveTypes.Float64},
		{Name: "t_x", Type: arrow.PrimitiveTypes.Float64}, {Name: "t_cal", Type: arrow.PrimitiveTypes.Float64},
		{Name: "zbar", Type: arrow.PrimitiveTypes.Float64},
	}, nil))
	defer b.Release()
	for i, c := range []Customer{{X: 2, Tx: 20, T: 30}, {X: 2, Tx: 10, T: 31}} {
		b.Field(0).(*array.StringBuilder).Append(fmt.Sprint("C", i))
		for j, v := range []float64{c.X, c.Tx, c.T, c.Zbar} {
			b.Field(j + 1).(*array.Float64Builder).Append(v)
		}
	}
	rec := b.NewRecordBatch()
	defer rec.Release()
	_, err = scorer.Score(rec, mem)
	require.EqualError(t, err, "customer C1: (x 2, T 31) is not among the fitted histories")
}
