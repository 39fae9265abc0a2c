package clv

import (
	"errors"
	"fmt"
	"math"
	"sort"

	"gonum.org/v1/gonum/diff/fd"
	"gonum.org/v1/gonum/mat"
	"gonum.org/v1/gonum/optimize"
)

// Tuple is a distinct customer summary and how many customers share it.
type Tuple struct {
	Customer
	Weight float64
}

// Compress merges identical summaries into weighted tuples, so fitting costs grow with the
// number of distinct histories, not with customers or orders.
func Compress(cs []Customer) []Tuple {
	idx := make(map[Customer]int, len(cs)/4)
	var out []Tuple
	for _, c := range cs {
		if i, ok := idx[c]; ok {
			out[i].Weight++
			continue
		}
		idx[c] = len(out)
		out = append(out, Tuple{Customer: c, Weight: 1})
	}
	sort.Slice(out, func(i, j int) bool { // a stable order makes sums, and so fits, reproducible
		a, b := out[i].Customer, out[j].Customer
		if a.X != b.X {
			return a.X < b.X
		}
		if a.Tx != b.Tx {
			return a.Tx < b.Tx
		}
		if a.T != b.T {
			return a.T < b.T
		}
		return a.Zbar < b.Zbar
	})
	return out
}

// Estimate is one fitted parameter.
type Estimate struct {
	Name     string
	Value    float64
	StdError float64 // from the inverse Hessian of the negative log-likelihood; NaN if it is not positive definite
}

// Fit is the outcome of a maximum-likelihood fit.
type Fit struct {
	Model         string // "bgnbd" or "gamma_gamma"
	Params        []Estimate
	LogLikelihood float64
	Customers     int
	Converged     bool
	Iterations    int
	Message       string // why a fit did not converge, or is not trustworthy
}

// Param returns the named estimate's value.
func (f Fit) Param(name string) float64 {
	for _, p := range f.Params {
		if p.Name == name {
			return p.Value
		}
	}
	return math.NaN()
}

// BGNBD returns the fitted BG/NBD parameters.
func (f Fit) BGNBD() BGNBD {
	return BGNBD{R: f.Param("r"), Alpha: f.Param("alpha"), A: f.Param("a"), B: f.Param("b")}
}

// GammaGamma returns the fitted Gamma-Gamma parameters.
func (f Fit) GammaGamma() GammaGamma {
	return GammaGamma{P: f.Param("p"), Q: f.Param("q"), Gamma: f.Param("gamma")}
}

// ErrDegenerate says the data cannot identify the model.
var ErrDegenerate = errors.New("degenerate input")

// FitBGNBD fits r, α, a, b to all customers.
func FitBGNBD(tuples []Tuple, minRepeat int) (Fit, error) {
	n, repeat := 0.0, 0.0
	meanT := 0.0
	for _, t := range tuples {
		n += t.Weight
		meanT += t.Weight * t.T
		if t.X > 0 {
			repeat += t.Weight
		}
	}
	fit := Fit{Model: "bgnbd", Customers: int(n)}
	if int(repeat) < minRepeat {
		return fit, fmt.Errorf("%w: %d customers with repeat purchases, at least %d needed to fit BG/NBD", ErrDegenerate, int(repeat), minRepeat)
	}
	meanT /= n
	// Optimised in log space so every parameter stays positive.
	natural := func(theta []float64) BGNBD {
		return BGNBD{R: math.Exp(theta[0]), Alpha: math.Exp(theta[1]), A: math.Exp(theta[2]), B: math.Exp(theta[3])}
	}
	negLL := func(m BGNBD) float64 {
		s := 0.0
		for _, t := range tuples {
			s += t.Weight * m.LogLikelihood(t.Customer)
		}
		return -s
	}
	start := []float64{0, math.Log(math.Max(meanT, 1e-3)), 0, 0}
	theta, res, err := minimize(func(th []float64) float64 { return negLL(natural(th)) / n }, start)
	fit.Iterations = res.MajorIterations
	if err != nil {
		fit.Message = err.Error()
	}
	m := natural(theta)
	fit.LogLikelihood = -negLL(m)
	fit.Converged = err == nil && !math.IsNaN(fit.LogLikelihood)
	se := standardErrors(func(p []float64) float64 {
		if p[0] <= 0 || p[1] <= 0 || p[2] <= 0 || p[3] <= 0 {
			return math.Inf(1)
		}
		return negLL(BGNBD{R: p[0], Alpha: p[1], A: p[2], B: p[3]})
	}, []float64{m.R, m.Alpha, m.A, m.B})
	fit.Params = []Estimate{{"r", m.R, se[0]}, {"alpha", m.Alpha, se[1]}, {"a", m.A, se[2]}, {"b", m.B, se[3]}}
	return fit, nil
}

// FitGammaGamma fits p, q, γ to the repeat customers with positive average spend, keeping q > 1
// so the expected spend exists.
func FitGammaGamma(tuples []Tuple, minRepeat int) (Fit, error) {
	var rep []Tuple
	n := 0.0
	for _, t := range tuples {
		if t.X > 0 && t.Zbar > 0 {
			rep = append(rep, t)
			n += t.Weight
		}
	}
	fit := Fit{Model: "gamma_gamma", Customers: int(n)}
	if int(n) < minRepeat {
		return fit, fmt.Errorf("%w: %d repeat customers with positive spend, at least %d needed to fit Gamma-Gamma", ErrDegenerate, int(n), minRepeat)
	}
	natural := func(theta []float64) GammaGamma {
		return GammaGamma{P: math.Exp(theta[0]), Q: 1 + math.Exp(theta[1]), Gamma: math.Exp(theta[2])}
	}
	negLL := func(m GammaGamma) float64 {
		s := 0.0
		for _, t := range rep {
			s += t.Weight * m.LogLikelihood(t.Customer)
		}
		return -s
	}
	meanZ := 0.0
	for _, t := range rep {
		meanZ += t.Weight * t.Zbar
	}
	meanZ /= n
	// Start where the population mean spend p·γ/(q−1) equals the observed mean.
	start := []float64{0, 0, math.Log(meanZ)}
	theta, res, err := minimize(func(th []float64) float64 { return negLL(natural(th)) / n }, start)
	fit.Iterations = res.MajorIterations
	if err != nil {
		fit.Message = err.Error()
	}
	m := natural(theta)
	fit.LogLikelihood = -negLL(m)
	fit.Converged = err == nil && !math.IsNaN(fit.LogLikelihood)
	se := standardErrors(func(p []float64) float64 {
		if p[0] <= 0 || p[1] <= 1 || p[2] <= 0 {
			return math.Inf(1)
		}
		return negLL(GammaGamma{P: p[0], Q: p[1], Gamma: p[2]})
	}, []float64{m.P, m.Q, m.Gamma})
	fit.Params = []Estimate{{"p", m.P, se[0]}, {"q", m.Q, se[1]}, {"gamma", m.Gamma, se[2]}}
	return fit, nil
}

// minimize runs BFGS with central-difference gradients; the objective is a per-customer mean,
// so its scale, and the convergence threshold, do not depend on the population size.
func minimize(f func([]float64) float64, start []float64) ([]float64, *optimize.Result, error) {
	p := optimize.Problem{
		Func: f,
		Grad: func(grad, x []float64) {
			fd.Gradient(grad, f, x, &fd.Settings{Formula: fd.Central, Step: 1e-6})
		},
	}
	settings := &optimize.Settings{GradientThreshold: 1e-7, MajorIterations: 500}
	res, err := optimize.Minimize(p, start, settings, &optimize.BFGS{})
	if res == nil {
		return start, &optimize.Result{}, fmt.Errorf("optimiser failed: %w", err)
	}
	if err != nil {
		return res.X, res, fmt.Errorf("optimiser stopped (%s): %w", res.Status, err)
	}
	switch res.Status {
	case optimize.GradientThreshold, optimize.FunctionConvergence, optimize.StepConvergence:
		return res.X, res, nil
	}
	return res.X, res, fmt.Errorf("optimiser stopped without converging: %s after %d iterations", res.Status, res.MajorIterations)
}

// standardErrors are the square roots of the diagonal of the inverse Hessian of negLL at the
// optimum, in natural parameters.
func standardErrors(negLL func([]float64) float64, at []float64) []float64 {
	k := len(at)
	out := make([]float64, k)
	h := mat.NewSymDense(k, nil)
	steps := make([]float64, k)
	for i, v := range at {
		steps[i] = 1e-4 * math.Max(math.Abs(v), 1e-3)
	}
	// Scale each coordinate so one finite-difference step size suits parameters of any magnitude.
	scaled := func(u []float64) float64 {
		p := make([]float64, k)
		for i := range u {
			p[i] = at[i] + u[i]*steps[i]
		}
		return negLL(p)
	}
	fd.Hessian(h, scaled, make([]float64, k), &fd.Settings{Formula: fd.Central, Step: 1})
	var chol mat.Cholesky
	if !chol.Factorize(h) {
		for i := range out {
			out[i] = math.NaN()
		}
		return out
	}
	var inv mat.SymDense
	if err := chol.InverseTo(&inv); err != nil {
		for i := range out {
			out[i] = math.NaN()
		}
		return out
	}
	for i := range out {
		out[i] = math.Sqrt(inv.At(i, i)) * steps[i]
	}
	return out
}
