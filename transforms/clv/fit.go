package clv

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"

	"gonum.org/v1/gonum/mat"
	"gonum.org/v1/gonum/optimize"
)

// Tuple is a distinct customer summary and how many customers share it.
type Tuple struct {
	Customer
	Weight float64
}

// Compress merges identical summaries into weighted tuples, so fitting costs grow with the
// number of distinct histories, not with customers or orders. (The pipeline has DuckDB group
// them instead; this is for summaries already in Go.)
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

// FitBGNBD fits r, α, a, b to all customers, given as weighted (x, t_x, T) tuples (zbar is not read).
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
	obj := bgnbdObjective(tuples)
	theta, res, err := minimize(obj, []float64{0, math.Log(math.Max(meanT, 1e-3)), 0, 0})
	fit.Iterations = res.MajorIterations
	if err != nil {
		fit.Message = err.Error()
	}
	m := BGNBD{R: math.Exp(theta[0]), Alpha: math.Exp(theta[1]), A: math.Exp(theta[2]), B: math.Exp(theta[3])}
	fit.LogLikelihood = -obj(theta, nil) * n
	fit.Converged = err == nil && !math.IsNaN(fit.LogLikelihood)
	se := standardErrors(obj, theta, n, []float64{m.R, m.Alpha, m.A, m.B})
	fit.Params = []Estimate{{"r", m.R, se[0]}, {"alpha", m.Alpha, se[1]}, {"a", m.A, se[2]}, {"b", m.B, se[3]}}
	return fit, nil
}

// FitGammaGamma fits p, q, γ to the repeat customers with positive average spend, given as
// weighted (x, zbar) tuples (others are skipped), keeping q > 1 so the expected spend exists.
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
	meanZ := 0.0
	for _, t := range rep {
		meanZ += t.Weight * t.Zbar
	}
	meanZ /= n
	// Optimised over (ln p, ln(q−1), ln γ): positive, with q > 1 so the expected spend exists.
	// The start puts the population mean spend p·γ/(q−1) at the observed mean.
	obj := gammaGammaObjective(rep)
	theta, res, err := minimize(obj, []float64{0, 0, math.Log(meanZ)})
	fit.Iterations = res.MajorIterations
	if err != nil {
		fit.Message = err.Error()
	}
	m := GammaGamma{P: math.Exp(theta[0]), Q: 1 + math.Exp(theta[1]), Gamma: math.Exp(theta[2])}
	fit.LogLikelihood = -obj(theta, nil) * n
	fit.Converged = err == nil && !math.IsNaN(fit.LogLikelihood)
	se := standardErrors(obj, theta, n, []float64{m.P, m.Q - 1, m.Gamma})
	fit.Params = []Estimate{{"p", m.P, se[0]}, {"q", m.Q, se[1]}, {"gamma", m.Gamma, se[2]}}
	return fit, nil
}

// minimize runs BFGS with the objective's analytic gradient. The objective is a per-customer
// mean, so its scale, and the convergence threshold, do not depend on the population size.
func minimize(obj objective, start []float64) ([]float64, *optimize.Result, error) {
	m := memo{obj: obj}
	p := optimize.Problem{Func: m.value, Grad: m.gradient}
	settings := &optimize.Settings{GradientThreshold: 1e-7, MajorIterations: 500}
	res, err := optimize.Minimize(p, start, settings, &optimize.BFGS{})
	if res == nil {
		return start, &optimize.Result{}, fmt.Errorf("optimiser failed: %w", err)
	}
	if err != nil {
		if res.Status == optimize.Failure && nearOptimum(obj, res.X) {
			return res.X, res, nil
		}
		return res.X, res, fmt.Errorf("optimiser stopped (%s): %w", res.Status, err)
	}
	switch res.Status {
	case optimize.GradientThreshold, optimize.FunctionConvergence, optimize.StepConvergence:
		return res.X, res, nil
	}
	return res.X, res, fmt.Errorf("optimiser stopped without converging: %s after %d iterations", res.Status, res.MajorIterations)
}

// memo keeps the objective's last point: gonum asks for the value and the gradient at a point
// in two calls, and one pass over the histories computes both (the line search asks for both at
// every trial point, so this halves the fit's passes).
type memo struct {
	obj     objective
	x, grad []float64
	f       float64
}

func (m *memo) at(x []float64) {
	if m.x != nil && slices.Equal(m.x, x) {
		return
	}
	m.x, m.grad = append(m.x[:0], x...), make([]float64, len(x))
	m.f = m.obj(x, m.grad)
}

func (m *memo) value(x []float64) float64 { m.at(x); return m.f }

func (m *memo) gradient(grad, x []float64) { m.at(x); copy(grad, m.grad) }

// nearOptimum says whether a point where the line search gave up is an optimum all the same.
// The objective is a mean over up to a million distinct histories; its rounding noise (gradient
// ≈ 3e-7 at 871k histories) can stop the line search short of GradientThreshold. A gradient
// below 1e-5 moves the log-parameters by about that much, far less than their standard errors.
func nearOptimum(obj objective, x []float64) bool {
	grad := make([]float64, len(x))
	obj(x, grad)
	for _, g := range grad {
		if !(math.Abs(g) <= 1e-5) {
			return false
		}
	}
	return true
}

// standardErrors are the square roots of the diagonal of the inverse Hessian of the negative
// log-likelihood at the optimum, in natural parameters. The Hessian is taken in the optimiser's
// log-parameters by central differences of the analytic gradient, then carried over by the delta
// method (exact at the optimum, where the gradient vanishes): se_i = jac_i · √(H⁻¹)_ii with
// jac_i = ∂φ_i/∂θ_i (φ_i itself for φ = e^θ, q − 1 for q = 1 + e^θ). n undoes the objective's mean.
func standardErrors(obj objective, theta []float64, n float64, jac []float64) []float64 {
	k := len(theta)
	out := make([]float64, k)
	for i := range out {
		out[i] = math.NaN()
	}
	const h = 1e-4
	h2 := mat.NewDense(k, k, nil)
	plus, minus := make([]float64, k), make([]float64, k)
	at := make([]float64, k)
	for j := 0; j < k; j++ {
		copy(at, theta)
		at[j] = theta[j] + h
		obj(at, plus)
		at[j] = theta[j] - h
		obj(at, minus)
		for i := 0; i < k; i++ {
			h2.Set(i, j, n*(plus[i]-minus[i])/(2*h))
		}
	}
	sym := mat.NewSymDense(k, nil)
	for i := 0; i < k; i++ {
		for j := i; j < k; j++ {
			sym.SetSym(i, j, (h2.At(i, j)+h2.At(j, i))/2)
		}
	}
	var chol mat.Cholesky
	if !chol.Factorize(sym) {
		return out // not positive definite: the fit is not at a proper maximum
	}
	var inv mat.SymDense
	if err := chol.InverseTo(&inv); err != nil {
		return out
	}
	for i := range out {
		out[i] = jac[i] * math.Sqrt(inv.At(i, i))
	}
	return out
}
