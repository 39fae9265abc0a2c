package clv

import (
	"math"
	"runtime"
	"sync"

	"gonum.org/v1/gonum/mathext"
)

// The objectives below are the models' mean negative log-likelihoods with analytic gradients
// in log-parameters. Terms that depend only on a customer's x (log-gamma and digamma values)
// are computed once per distinct x; the per-tuple sum is split across cores in fixed chunks
// and added in a fixed order, so results are reproducible.

// objective is a mean negative log-likelihood over weighted tuples and its gradient.
type objective func(theta, grad []float64) float64

// xIndex maps each tuple to its position in the distinct x values.
func xIndex(tuples []Tuple) (xs []float64, idx []int32) {
	x := make([]float64, len(tuples))
	for i, t := range tuples {
		x[i] = t.X
	}
	xs, idx, _ = index(x)
	return xs, idx
}

// parallelSum adds fn's k-vector contributions over [0, n) using all cores (k = 0: work only).
func parallelSum(n, k int, fn func(lo, hi int, acc []float64)) []float64 {
	chunks := runtime.GOMAXPROCS(0)
	if n < 4096 {
		chunks = 1
	}
	parts := make([][]float64, chunks)
	var wg sync.WaitGroup
	for c := 0; c < chunks; c++ {
		parts[c] = make([]float64, k)
		lo, hi := c*n/chunks, (c+1)*n/chunks
		wg.Add(1)
		go func(acc []float64) {
			defer wg.Done()
			fn(lo, hi, acc)
		}(parts[c])
	}
	wg.Wait()
	total := make([]float64, k)
	for _, p := range parts {
		for i, v := range p {
			total[i] += v
		}
	}
	return total
}

// index assigns each distinct value a position, so that what depends on the value alone is
// computed once per value (t_x and T are counts of days over a unit: they take few values). It
// returns the distinct values, each value's position, and the position of each distinct value.
func index[T comparable](values []T) (distinct []T, idx []int32, pos map[T]int32) {
	pos = map[T]int32{}
	idx = make([]int32, len(values))
	for i, v := range values {
		j, ok := pos[v]
		if !ok {
			j = int32(len(distinct))
			pos[v] = j
			distinct = append(distinct, v)
		}
		idx[i] = j
	}
	return distinct, idx, pos
}

// bgnbdObjective is over θ = (ln r, ln α, ln a, ln b).
func bgnbdObjective(tuples []Tuple) objective {
	xs, idx := xIndex(tuples)
	col := func(f func(Tuple) float64) []float64 {
		out := make([]float64, len(tuples))
		for i, t := range tuples {
			out[i] = f(t)
		}
		return out
	}
	ts, tIdx, _ := index(col(func(t Tuple) float64 { return t.T }))
	txs, txIdx, _ := index(col(func(t Tuple) float64 { return t.Tx }))
	n := 0.0
	for _, t := range tuples {
		n += t.Weight
	}
	type perX struct{ base, dr, da, db, lnB float64 }
	logs := func(alpha float64, vals []float64) (lns, invs []float64) {
		lns, invs = make([]float64, len(vals)), make([]float64, len(vals))
		for i, v := range vals {
			lns[i], invs[i] = math.Log(alpha+v), 1/(alpha+v)
		}
		return lns, invs
	}
	return func(theta, grad []float64) float64 {
		r, alpha, a, b := math.Exp(theta[0]), math.Exp(theta[1]), math.Exp(theta[2]), math.Exp(theta[3])
		lnAlpha, lnA := math.Log(alpha), math.Log(a)
		px := make([]perX, len(xs))
		psiR, psiAB, psiB := mathext.Digamma(r), mathext.Digamma(a+b), mathext.Digamma(b)
		lgR, lgAB, lgB := lgamma(r), lgamma(a+b), lgamma(b)
		for i, x := range xs {
			psiABX := mathext.Digamma(a + b + x)
			px[i] = perX{
				base: lgamma(r+x) - lgR + r*lnAlpha + lgAB + lgamma(b+x) - lgB - lgamma(a+b+x),
				dr:   mathext.Digamma(r+x) - psiR + lnAlpha,
				da:   psiAB - psiABX,
				db:   psiAB + mathext.Digamma(b+x) - psiB - psiABX,
			}
			if x > 0 {
				px[i].lnB = math.Log(b + x - 1)
			}
		}
		lnT, invT := logs(alpha, ts)
		lnTx, invTx := logs(alpha, txs)
		sum := parallelSum(len(tuples), 5, func(lo, hi int, acc []float64) {
			// Sums in locals, not through acc: the compiler keeps them in registers.
			var f, gr, galpha, ga, gb float64
			for i := lo; i < hi; i++ {
				t, p := &tuples[i], &px[idx[i]]
				lt, it := lnT[tIdx[i]], invT[tIdx[i]]
				rx := r + t.X
				a3 := -rx * lt
				ll, s4, ltx, itx := a3, 0.0, 0.0, 0.0
				if t.X > 0 {
					ltx, itx = lnTx[txIdx[i]], invTx[txIdx[i]]
					a4 := lnA - p.lnB - rx*ltx
					// log(e^a3 + e^a4) and the weight of a4 (dropped out after the last purchase) from one exp.
					if e := math.Exp(-math.Abs(a4 - a3)); a4 > a3 {
						ll, s4 = a4+math.Log1p(e), 1/(1+e)
					} else {
						ll, s4 = a3+math.Log1p(e), e/(1+e)
					}
				}
				s3 := 1 - s4
				w := t.Weight
				f += w * (p.base + ll)
				gr += w * (p.dr - s3*lt - s4*ltx)
				galpha += w * (r/alpha - rx*(s3*it+s4*itx))
				ga += w * (p.da + s4/a)
				if t.X > 0 {
					gb += w * (p.db - s4/(b+t.X-1))
				} else {
					gb += w * p.db
				}
			}
			acc[0], acc[1], acc[2], acc[3], acc[4] = f, gr, galpha, ga, gb
		})
		if grad != nil {
			for i, v := range []float64{r, alpha, a, b} {
				grad[i] = -v * sum[i+1] / n // chain rule for log-parameters
			}
		}
		return -sum[0] / n
	}
}

// gammaGammaObjective is over θ = (ln p, ln(q−1), ln γ), for repeat customers with positive zbar.
func gammaGammaObjective(tuples []Tuple) objective {
	xs, idx := xIndex(tuples)
	n := 0.0
	lnM := make([]float64, len(tuples))
	for i, t := range tuples {
		n += t.Weight
		lnM[i] = math.Log(t.Zbar)
	}
	return func(theta, grad []float64) float64 {
		p, q, v := math.Exp(theta[0]), 1+math.Exp(theta[1]), math.Exp(theta[2])
		lnV, lgQ, psiQ := math.Log(v), lgamma(q), mathext.Digamma(q)
		type perX struct{ base, psiPXQ, psiPX, lnX float64 }
		pxs := make([]perX, len(xs))
		for i, x := range xs {
			pxs[i] = perX{base: lgamma(p*x+q) - lgamma(p*x) - lgQ + q*lnV,
				psiPXQ: mathext.Digamma(p*x + q), psiPX: mathext.Digamma(p * x), lnX: math.Log(x)}
		}
		sum := parallelSum(len(tuples), 4, func(lo, hi int, acc []float64) {
			var f, gp, gq, gv float64
			for i := lo; i < hi; i++ {
				t, c := &tuples[i], &pxs[idx[i]]
				x, m, w, lm := t.X, t.Zbar, t.Weight, lnM[i]
				lnXMV := math.Log(x*m + v)
				f += w * (c.base + (p*x-1)*lm + p*x*c.lnX - (p*x+q)*lnXMV)
				gp += w * x * (c.psiPXQ - c.psiPX + lm + c.lnX - lnXMV)
				gq += w * (c.psiPXQ - psiQ + lnV - lnXMV)
				gv += w * (q/v - (p*x+q)/(x*m+v))
			}
			acc[0], acc[1], acc[2], acc[3] = f, gp, gq, gv
		})
		if grad != nil {
			grad[0] = -p * sum[1] / n
			grad[1] = -(q - 1) * sum[2] / n
			grad[2] = -v * sum[3] / n
		}
		return -sum[0] / n
	}
}
