package clv

import (
	"cmp"
	"fmt"
	"math"
	"slices"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/ckm-dev/ckm/transforms/arrowutil"
)

// Params configure CLV.
type Params struct {
	TimeUnit           string  `yaml:"time_unit"`            // week (default) or day
	HorizonMonths      int     `yaml:"horizon_months"`       // default 12
	MonthlyDiscount    float64 `yaml:"monthly_discount"`     // default 0.01
	MarginRate         float64 `yaml:"margin_rate"`          // share of revenue that is profit; default 1 (revenue CLV)
	HoldoutEnd         string  `yaml:"holdout_end"`          // YYYY-MM-DD: also compare predictions with (as_of, holdout_end]
	MinRepeatCustomers int     `yaml:"min_repeat_customers"` // fewer repeat buyers than this cannot be fitted; default 20
}

// WithDefaults fills unset parameters.
func (p Params) WithDefaults() Params {
	p.TimeUnit = cmp.Or(p.TimeUnit, "week")
	p.HorizonMonths = cmp.Or(p.HorizonMonths, 12)
	p.MonthlyDiscount = cmp.Or(p.MonthlyDiscount, 0.01)
	p.MarginRate = cmp.Or(p.MarginRate, 1)
	p.MinRepeatCustomers = cmp.Or(p.MinRepeatCustomers, 20)
	return p
}

// UnitDays is the length of the time unit in days.
func (p Params) UnitDays() (float64, error) {
	switch p.TimeUnit {
	case "week", "":
		return 7, nil
	case "day":
		return 1, nil
	}
	return 0, fmt.Errorf("time_unit %q: want week or day", p.TimeUnit)
}

// ReadTuples collects weighted tuples from batches with a `weight` column and any of x, t_x,
// t_cal, zbar (a missing one reads as 0).
func ReadTuples(batches []arrow.RecordBatch) ([]Tuple, error) {
	var names []string
	for _, name := range []string{"x", "t_x", "t_cal", "zbar", "weight"} {
		if len(batches) == 0 || len(batches[0].Schema().FieldIndices(name)) > 0 {
			names = append(names, name)
		}
	}
	cols, err := arrowutil.Float64Columns(batches, names...)
	if err != nil {
		return nil, err
	}
	if names[len(names)-1] != "weight" {
		return nil, fmt.Errorf("tuples without a weight column (have %s)", batches[0].Schema())
	}
	weight := cols[len(cols)-1]
	col := func(name string) []float64 { // a missing column reads as 0
		if i := slices.Index(names, name); i >= 0 {
			return cols[i]
		}
		return make([]float64, len(weight))
	}
	x, tx, t, zbar := col("x"), col("t_x"), col("t_cal"), col("zbar")
	out := make([]Tuple, len(weight))
	for i := range out {
		out[i] = Tuple{Customer: Customer{X: x[i], Tx: tx[i], T: t[i], Zbar: zbar[i]}, Weight: weight[i]}
	}
	return out, nil
}

// OutputSchema is the schema of Score's result (customer_clv without as_of and run_id).
var OutputSchema = arrow.NewSchema([]arrow.Field{
	{Name: "customer_id", Type: arrow.BinaryTypes.String},
	{Name: "x", Type: arrow.PrimitiveTypes.Float64},
	{Name: "t_x", Type: arrow.PrimitiveTypes.Float64},
	{Name: "t_cal", Type: arrow.PrimitiveTypes.Float64},
	{Name: "avg_value", Type: arrow.PrimitiveTypes.Float64},
	{Name: "p_alive", Type: arrow.PrimitiveTypes.Float64},
	{Name: "expected_purchases", Type: arrow.PrimitiveTypes.Float64},
	{Name: "expected_avg_value", Type: arrow.PrimitiveTypes.Float64},
	{Name: "clv", Type: arrow.PrimitiveTypes.Float64},
}, nil)

// purchases is what BG/NBD predicts from a purchase history (x, t_x, T) alone. A customer's CLV
// is the discounted purchases × expected average value × margin rate: the sum over months
// m = 1..H of the purchases expected in month m × value × margin / (1 + d)^m, a month being
// 30 days (lifetimes' customer_lifetime_value).
type purchases struct {
	pAlive, expected float64
	discounted       float64 // Σ months m of the purchases expected in month m / (1 + d)^m
}

// predictPurchases predicts c from the horizonTerm of its x and T at the end of each month of
// the horizon and the discount factor (1 + d)^m of each month.
func predictPurchases(c Customer, bg BGNBD, horizons, discounts []float64) purchases {
	out := purchases{pAlive: bg.PAlive(c)}
	first, denom := bg.historyTerms(c)
	prev := 0.0
	for m, horizon := range horizons {
		cum := first * horizon / denom
		out.discounted += (cum - prev) / discounts[m]
		prev = cum
	}
	out.expected = prev
	return out
}

// Scorer predicts customers a batch at a time, so that scoring holds one batch, never every
// customer. What is costly to predict depends on a customer's x and T alone: it is computed
// once per distinct (x, T) pair of the fitted histories.
type Scorer struct {
	bg        BGNBD
	gg        GammaGamma
	p         Params
	pairOf    map[xT]int32 // (x, T) → its horizon terms
	horizons  []float64    // per pair, the horizonTerm at the end of each month of the horizon
	discounts []float64    // (1 + d)^m of each month of the horizon
}

// xT is a customer's (x, T) pair.
type xT struct{ x, t float64 }

// NewScorer computes, on all cores, the hypergeometric terms of every (x, T) pair of histories,
// a dozen per pair, shared by the customers whose histories differ only in t_x (the bench's 1M
// customers have 871k histories but 67k pairs). Every customer scored must have a pair among
// histories.
func NewScorer(histories []Customer, bg BGNBD, gg GammaGamma, p Params) (*Scorer, error) {
	p = p.WithDefaults()
	unit, err := p.UnitDays()
	if err != nil {
		return nil, err
	}
	months, month := max(p.HorizonMonths, 0), 30/unit
	keys := make([]xT, len(histories))
	for i, h := range histories {
		keys[i] = xT{h.X, h.T}
	}
	pairs, _, pairOf := index(keys)
	horizons := make([]float64, len(pairs)*months)
	parallelSum(len(pairs), 0, func(lo, hi int, _ []float64) {
		for j := lo; j < hi; j++ {
			for m := 1; m <= months; m++ {
				horizons[j*months+m-1] = bg.horizonTerm(pairs[j].x, pairs[j].t, float64(m)*month)
			}
		}
	})
	discounts := make([]float64, months)
	for m := range discounts {
		discounts[m] = math.Pow(1+p.MonthlyDiscount, float64(m+1))
	}
	return &Scorer{bg: bg, gg: gg, p: p, pairOf: pairOf, horizons: horizons, discounts: discounts}, nil
}

// Score predicts the customers of rec, whose columns are customer_id, x, t_x, t_cal and zbar.
// The result shares rec's customer_id column.
func (s *Scorer) Score(rec arrow.RecordBatch, mem memory.Allocator) (arrow.RecordBatch, error) {
	ids, err := arrowutil.StringArray(rec, "customer_id", mem)
	if err != nil {
		return nil, err
	}
	defer ids.Release()
	n := int(rec.NumRows())
	var cols [4][]float64
	for i, name := range []string{"x", "t_x", "t_cal", "zbar"} {
		if cols[i], err = arrowutil.Float64s(make([]float64, 0, n), rec, name); err != nil {
			return nil, err
		}
	}
	built := make([]*array.Float64Builder, len(OutputSchema.Fields())-1)
	for i := range built {
		built[i] = array.NewFloat64Builder(mem)
		defer built[i].Release()
		built[i].Reserve(n)
	}
	for i := range n {
		c := Customer{X: cols[0][i], Tx: cols[1][i], T: cols[2][i], Zbar: cols[3][i]}
		j, ok := s.pairOf[xT{c.X, c.T}]
		if !ok {
			return nil, fmt.Errorf("customer %s: (x %g, T %g) is not among the fitted histories", ids.ValueStr(i), c.X, c.T)
		}
		months := len(s.discounts)
		pp := predictPurchases(c, s.bg, s.horizons[int(j)*months:int(j+1)*months], s.discounts)
		value := s.gg.ExpectedAverageValue(c)
		built[0].Append(c.X)
		built[1].Append(c.Tx)
		built[2].Append(c.T)
		built[3].Append(c.Zbar)
		built[4].Append(pp.pAlive)
		built[5].Append(pp.expected)
		built[6].Append(value)
		built[7].Append(pp.discounted * value * s.p.MarginRate)
	}
	builders := make([]array.Builder, len(built))
	for i, b := range built {
		builders[i] = b
	}
	return arrowutil.NewBatch(OutputSchema, ids, builders), nil
}
