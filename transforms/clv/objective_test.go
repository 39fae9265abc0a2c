package clv

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"
	"gonum.org/v1/gonum/diff/fd"
)

// The fast objectives must equal the per-customer likelihoods, and their analytic gradients
// the finite-difference ones.
func TestObjectivesMatchLikelihoodsAndGradients(t *testing.T) {
	tuples := Compress(cdnowSummary(t))
	n := 2357.0
	bgTheta := []float64{math.Log(0.3), math.Log(5), math.Log(0.7), math.Log(2.1)}
	bg := BGNBD{R: 0.3, Alpha: 5, A: 0.7, B: 2.1}
	want := 0.0
	for _, tp := range tuples {
		want -= tp.Weight * bg.LogLikelihood(tp.Customer)
	}
	obj := bgnbdObjective(tuples)
	require.InDelta(t, want/n, obj(bgTheta, nil), 1e-10)
	requireGradient(t, obj, bgTheta)

	var rep []Tuple
	m := 0.0
	for _, tp := range tuples {
		if tp.X > 0 && tp.Zbar > 0 {
			rep = append(rep, tp)
			m += tp.Weight
		}
	}
	gg := GammaGamma{P: 5, Q: 3, Gamma: 12}
	ggTheta := []float64{math.Log(5), math.Log(2), math.Log(12)}
	want = 0
	for _, tp := range rep {
		want -= tp.Weight * gg.LogLikelihood(tp.Customer)
	}
	ggObj := gammaGammaObjective(rep)
	require.InDelta(t, want/m, ggObj(ggTheta, nil), 1e-10)
	requireGradient(t, ggObj, ggTheta)
}

func requireGradient(t *testing.T, obj objective, theta []float64) {
	t.Helper()
	analytic := make([]float64, len(theta))
	obj(theta, analytic)
	numeric := fd.Gradient(nil, func(x []float64) float64 { return obj(x, nil) }, theta, &fd.Settings{Formula: fd.Central, Step: 1e-6})
	for i := range theta {
		require.InDelta(t, numeric[i], analytic[i], 1e-6*math.Max(1, math.Abs(numeric[i])), "gradient component %d", i)
	}
}
