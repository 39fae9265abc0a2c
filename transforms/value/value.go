// Package value places customers in the current × potential value matrix (tiers I–IV) and
// in a lifecycle stage (exploration, formation, stability, decline).
package value

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/ckm-dev/ckm/transforms/arrowutil"
)

// Params configure tiers and stages.
type Params struct {
	Split       string  `yaml:"split"`        // median (default) or pareto
	ParetoShare float64 `yaml:"pareto_share"` // pareto: high = the top customers holding this share of the total; default 0.8
	Current     string  `yaml:"current"`      // amount (default) or margin: what current value sums

	ExplorationDays      int     `yaml:"exploration_days"`      // tenure below this is exploration; default 180
	ExplorationPurchases int     `yaml:"exploration_purchases"` // this many purchase days or fewer is exploration; default 2
	DeclinePAlive        float64 `yaml:"decline_p_alive"`       // below this is decline; default 0.5
	DeclineTrend         float64 `yaml:"decline_trend"`         // trend below this is decline; default 0.7
	FormationTrend       float64 `yaml:"formation_trend"`       // trend at or above this is formation; default 1.2
	TrendDays            int     `yaml:"trend_days"`            // trend compares the last this-many days with the ones before; default 180
}

// WithDefaults fills unset parameters with DESIGN.md's values.
func (p Params) WithDefaults() Params {
	p.Split = cmp.Or(p.Split, "median")
	p.Current = cmp.Or(p.Current, "amount")
	p.ExplorationDays = cmp.Or(p.ExplorationDays, 180)
	p.ExplorationPurchases = cmp.Or(p.ExplorationPurchases, 2)
	p.TrendDays = cmp.Or(p.TrendDays, 180)
	p.ParetoShare = cmp.Or(p.ParetoShare, 0.8)
	p.DeclinePAlive = cmp.Or(p.DeclinePAlive, 0.5)
	p.DeclineTrend = cmp.Or(p.DeclineTrend, 0.7)
	p.FormationTrend = cmp.Or(p.FormationTrend, 1.2)
	return p
}

// Validate checks the choices.
func (p Params) Validate() error {
	if p.Split != "" && p.Split != "median" && p.Split != "pareto" {
		return fmt.Errorf("split %q: want median or pareto", p.Split)
	}
	if p.Current != "" && p.Current != "amount" && p.Current != "margin" {
		return fmt.Errorf("current %q: want amount or margin", p.Current)
	}
	if p.ParetoShare < 0 || p.ParetoShare > 1 {
		return fmt.Errorf("pareto_share %g: want a share between 0 and 1", p.ParetoShare)
	}
	return nil
}

// Customer is what tiers and stages are decided from.
type Customer struct {
	Current, Potential float64 // value in the lookback window; CLV over the horizon
	Active             bool    // purchased in the lookback window: the population thresholds come from
	PAlive             float64
	TenureDays         int     // as_of − first purchase day
	PurchaseDays       int     // distinct purchase days up to as_of
	Recent, Before     float64 // amount in the last TrendDays, and in the TrendDays before those
}

// Trend is (amount recently + 1) / (amount in the period before + 1).
func Trend(c Customer) float64 { return (c.Recent + 1) / (c.Before + 1) }

// Stage is the customer's lifecycle stage: the first rule that matches.
func Stage(c Customer, p Params) string {
	switch t := Trend(c); {
	case c.TenureDays < p.ExplorationDays || c.PurchaseDays <= p.ExplorationPurchases:
		return "exploration"
	case c.PAlive < p.DeclinePAlive || t < p.DeclineTrend:
		return "decline"
	case t >= p.FormationTrend:
		return "formation"
	}
	return "stability"
}

// Tier is IV for high current and high potential value, III high current only, II high
// potential only, I neither.
func Tier(highCurrent, highPotential bool) string {
	switch {
	case highCurrent && highPotential:
		return "IV"
	case highCurrent:
		return "III"
	case highPotential:
		return "II"
	}
	return "I"
}

// Threshold is the value at or above which a customer counts as high, from the active customers' values:
// their median, or (pareto) the smallest value among the top customers holding share of the total.
func Threshold(values []float64, split string, share float64) float64 {
	if len(values) == 0 {
		return 0
	}
	v := slices.Clone(values)
	slices.Sort(v)
	if split != "pareto" {
		n := len(v)
		if n%2 == 1 {
			return v[n/2]
		}
		return (v[n/2-1] + v[n/2]) / 2
	}
	total := 0.0
	for _, x := range v {
		total += x
	}
	cum := 0.0
	for i := len(v) - 1; i >= 0; i-- {
		cum += v[i]
		if cum >= share*total {
			return v[i]
		}
	}
	return v[0]
}

// OutputSchema is the schema of Score's result (customer_value without as_of and run_id).
var OutputSchema = arrow.NewSchema([]arrow.Field{
	{Name: "customer_id", Type: arrow.BinaryTypes.String},
	{Name: "current_value", Type: arrow.PrimitiveTypes.Float64},
	{Name: "potential_value", Type: arrow.PrimitiveTypes.Float64},
	{Name: "value_tier", Type: arrow.BinaryTypes.String},
	{Name: "lifecycle_stage", Type: arrow.BinaryTypes.String},
	{Name: "trend", Type: arrow.PrimitiveTypes.Float64},
}, nil)

// Thresholds are the values at or above which a customer's current and potential value count
// as high, from the active customers' values (see Threshold); with no active customer, no one
// is high.
type Thresholds struct {
	Current, Potential float64
	AnyActive          bool
}

// NewThresholds computes the thresholds from every active customer's current and potential value.
func NewThresholds(activeCurrent, activePotential []float64, p Params) Thresholds {
	p = p.WithDefaults()
	return Thresholds{Current: Threshold(activeCurrent, p.Split, p.ParetoShare), Potential: Threshold(activePotential, p.Split, p.ParetoShare),
		AnyActive: len(activeCurrent) > 0}
}

// Score takes a batch with columns customer_id, current_value, active, tenure_days,
// purchase_days, recent_amount, before_amount (from DuckDB) and each row's potential value and
// p_alive (from CLV, in the same row order), and returns tiers and stages by th. The result
// shares rec's customer_id column.
func Score(rec arrow.RecordBatch, potential, pAlive []float64, th Thresholds, p Params, mem memory.Allocator) (arrow.RecordBatch, error) {
	p = p.WithDefaults()
	if err := p.Validate(); err != nil {
		return nil, err
	}
	ids, err := arrowutil.StringArray(rec, "customer_id", mem)
	if err != nil {
		return nil, err
	}
	defer ids.Release()
	var floats [3][]float64
	for i, name := range []string{"current_value", "recent_amount", "before_amount"} {
		if floats[i], err = arrowutil.Float64s(nil, rec, name); err != nil {
			return nil, err
		}
	}
	var ints [3][]int64
	for i, name := range []string{"active", "tenure_days", "purchase_days"} {
		if ints[i], err = arrowutil.Int64s(nil, rec, name); err != nil {
			return nil, err
		}
	}
	current, recent, before := floats[0], floats[1], floats[2]
	active, tenure, days := ints[0], ints[1], ints[2]
	n := ids.Len()
	if len(potential) != n || len(pAlive) != n {
		return nil, fmt.Errorf("%d customers but %d potential values and %d p_alive", n, len(potential), len(pAlive))
	}
	currentB, potentialB, trendB := array.NewFloat64Builder(mem), array.NewFloat64Builder(mem), array.NewFloat64Builder(mem)
	tierB, stageB := array.NewStringBuilder(mem), array.NewStringBuilder(mem)
	builders := []array.Builder{currentB, potentialB, tierB, stageB, trendB} // OutputSchema's order after customer_id
	for _, b := range builders {
		defer b.Release()
		b.Reserve(n)
	}
	for i := range n {
		c := Customer{Current: current[i], Potential: potential[i], Active: active[i] == 1, PAlive: pAlive[i],
			TenureDays: int(tenure[i]), PurchaseDays: int(days[i]), Recent: recent[i], Before: before[i]}
		currentB.Append(c.Current)
		potentialB.Append(c.Potential)
		tierB.Append(Tier(th.AnyActive && c.Current >= th.Current, th.AnyActive && c.Potential >= th.Potential))
		stageB.Append(Stage(c, p))
		trendB.Append(Trend(c))
	}
	return arrowutil.NewBatch(OutputSchema, ids, builders), nil
}
