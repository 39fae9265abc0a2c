package knowledge

import (
	"math"
	"math/cmplx"

	"gonum.org/v1/gonum/mat"
)

// MaxConsistencyRatio is Saaty's limit: a pairwise matrix at or above it is rejected.
const MaxConsistencyRatio = 0.10

// randomIndex is Saaty's mean consistency index of random reciprocal matrices, by size.
var randomIndex = []float64{0, 0, 0, 0.58, 0.90, 1.12, 1.24, 1.32, 1.41, 1.45, 1.49}

// AHP returns the weights of a reciprocal pairwise comparison matrix (its principal
// eigenvector, summing to 1) and the consistency ratio CI/RI, CI = (λmax − n)/(n − 1).
func AHP(m [][]float64) (weights []float64, cr float64) {
	n := len(m)
	if n == 1 {
		return []float64{1}, 0
	}
	a := mat.NewDense(n, n, nil)
	for i := range m {
		for j := range m[i] {
			a.Set(i, j, m[i][j])
		}
	}
	var eig mat.Eigen
	if !eig.Factorize(a, mat.EigenRight) {
		return nil, math.Inf(1)
	}
	values := eig.Values(nil)
	best := 0
	for i, v := range values {
		if real(v) > real(values[best]) {
			best = i
		}
	}
	var vectors mat.CDense
	eig.VectorsTo(&vectors)
	weights = make([]float64, n)
	total := 0.0
	for i := range n {
		weights[i] = cmplx.Abs(vectors.At(i, best)) // Perron vector: one sign, real
		total += weights[i]
	}
	for i := range weights {
		weights[i] /= total
	}
	if n < len(randomIndex) && randomIndex[n] > 0 {
		cr = (real(values[best]) - float64(n)) / float64(n-1) / randomIndex[n]
	}
	return weights, math.Max(cr, 0)
}

// EntropyWeights weights the columns of rows (each row one customer's dimension scores) by
// how much they vary: w_j ∝ 1 − e_j, e_j the normalised Shannon entropy of column j's
// shares. Columns that do not discriminate at all get no weight; all equal when none does.
func EntropyWeights(rows [][]float64, columns int) []float64 {
	out := make([]float64, columns)
	if len(rows) < 2 {
		for j := range out {
			out[j] = 1 / float64(columns)
		}
		return out
	}
	total := 0.0
	for j := range columns {
		sum := 0.0
		for _, r := range rows {
			sum += r[j]
		}
		e := 0.0
		if sum > 0 {
			for _, r := range rows {
				if p := r[j] / sum; p > 0 {
					e -= p * math.Log(p)
				}
			}
			e /= math.Log(float64(len(rows)))
		} else {
			e = 1
		}
		out[j] = 1 - e
		total += out[j]
	}
	for j := range out {
		if total > 0 {
			out[j] /= total
		} else {
			out[j] = 1 / float64(columns)
		}
	}
	return out
}
