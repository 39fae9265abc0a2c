package clv

import (
	"math"
	"strconv"
)

// HoldoutGroup compares predicted and actual repeat purchases in a holdout period for the
// customers with one calibration frequency (0..6, "7+"), or for everyone ("all").
type HoldoutGroup struct {
	Group        string
	Customers    int
	Expected     float64 // mean predicted purchases in the holdout period
	Actual       float64 // mean actual purchase days in the holdout period
	MeanAbsError float64 // mean over the group's customers of |predicted − actual|
}

// Holdout predicts each customer's purchases over the next t units and compares them with
// actual[i], grouped by calibration frequency, with a last group for all customers.
func Holdout(cs []Customer, actual []float64, bg BGNBD, t float64) []HoldoutGroup {
	const top = 7
	groups := make([]HoldoutGroup, top+2)
	for i := range groups {
		groups[i].Group = strconv.Itoa(i)
	}
	groups[top].Group, groups[top+1].Group = "7+", "all"
	for i, c := range cs {
		e := bg.ExpectedPurchases(c, t)
		for _, g := range []int{min(int(c.X), top), top + 1} {
			groups[g].Customers++
			groups[g].Expected += e
			groups[g].Actual += actual[i]
			groups[g].MeanAbsError += math.Abs(e - actual[i])
		}
	}
	out := groups[:0]
	for _, g := range groups {
		if g.Customers == 0 {
			continue
		}
		n := float64(g.Customers)
		g.Expected /= n
		g.Actual /= n
		g.MeanAbsError /= n
		out = append(out, g)
	}
	return out
}
