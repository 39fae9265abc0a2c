package clv

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

// noisyBowl is a quadratic bowl around centre as the optimiser sees a mean over a million
// histories: values rounded to 1e-12 and each gradient component off by ±noise, which stops the
// line search before the gradient threshold is reached.
func noisyBowl(centre []float64, noise float64) objective {
	return func(x, grad []float64) float64 {
		f := 0.0
		for i := range x {
			d := x[i] - centre[i]
			f += d * d
			if grad != nil {
				grad[i] = 2*d + noise*rounding(x[i])
			}
		}
		return 40 + math.Round(f*1e12)/1e12
	}
}

// rounding is ±1 by x's bits: as erratic in x as the sum of many rounding errors is.
func rounding(x float64) float64 {
	h := math.Float64bits(x) * 0x9E3779B97F4A7C15
	return float64(h>>63)*2 - 1
}

var bowlCentre = []float64{0.75, 1.97, -1.08, 1.67}

// At 871k distinct histories the BG/NBD gradient was only accurate to about 3e-7, more with
// more histories: the line search gave up there, and the fit failed at the optimum.
func TestALineSearchStoppedByRoundingAtTheOptimumConverges(t *testing.T) {
	x, res, err := minimize(noisyBowl(bowlCentre, 1e-6), []float64{0, 2, 0, 0})
	require.NoError(t, err, "status %s after %d iterations", res.Status, res.MajorIterations)
	require.InDeltaSlice(t, bowlCentre, x, 1e-5)
}

func TestALineSearchThatFailsAwayFromTheOptimumIsAnError(t *testing.T) {
	_, _, err := minimize(noisyBowl(bowlCentre, 1e-2), []float64{0, 2, 0, 0})
	require.ErrorContains(t, err, "linesearch")
}

// One pass over the histories gives both the value and the gradient: the optimiser asks for
// them in two calls, and a fit over a million histories must not pay for each point twice.
func TestEachPointTheOptimiserVisitsCostsOnePass(t *testing.T) {
	bowl := noisyBowl(bowlCentre, 0)
	passes, points := 0, map[[4]float64]bool{}
	counted := func(x, grad []float64) float64 {
		passes++
		points[[4]float64(x)] = true
		return bowl(x, grad)
	}
	x, _, err := minimize(counted, []float64{0, 2, 0, 0})
	require.NoError(t, err)
	require.InDeltaSlice(t, bowlCentre, x, 1e-6)
	require.Greater(t, passes, 2)
	require.Equal(t, len(points), passes, "every pass is at a point not evaluated before")
}
