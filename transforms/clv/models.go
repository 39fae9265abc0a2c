// Package clv fits the BG/NBD purchase model and the Gamma-Gamma spend model by maximum
// likelihood and scores customers with them, following the conventions of the lifetimes
// library (Fader, Hardie & Lee 2005). It is pure: summaries and parameters in, numbers out.
package clv

import (
	"math"

	"gonum.org/v1/gonum/mathext"
)

// Customer is one customer's calibration summary: x repeat purchase periods, the time of the
// last purchase t_x and the customer's age T, both counted from the first purchase in the
// configured time unit, and zbar, the mean amount of the repeat purchase days.
type Customer struct {
	X, Tx, T, Zbar float64
}

// BGNBD are the BG/NBD parameters: purchase rates λ ~ Gamma(R, rate Alpha), dropout p ~ Beta(A, B).
type BGNBD struct{ R, Alpha, A, B float64 }

// GammaGamma are the spend parameters: z ~ Gamma(P, rate ν), ν ~ Gamma(Q, rate Gamma).
type GammaGamma struct{ P, Q, Gamma float64 }

func lgamma(x float64) float64 {
	v, _ := math.Lgamma(x)
	return v
}

// logAddExp is log(exp(a) + exp(b)) without overflow.
func logAddExp(a, b float64) float64 {
	if a < b {
		a, b = b, a
	}
	if math.IsInf(b, -1) {
		return a
	}
	return a + math.Log1p(math.Exp(b-a))
}

// LogLikelihood is one customer's BG/NBD log-likelihood (FHL 2005, eq. 6), summed in log space.
func (m BGNBD) LogLikelihood(c Customer) float64 {
	r, alpha, a, b := m.R, m.Alpha, m.A, m.B
	a1 := lgamma(r+c.X) - lgamma(r) + r*math.Log(alpha)
	a2 := lgamma(a+b) + lgamma(b+c.X) - lgamma(b) - lgamma(a+b+c.X)
	a3 := -(r + c.X) * math.Log(alpha+c.T)
	if c.X == 0 {
		return a1 + a2 + a3
	}
	a4 := math.Log(a) - math.Log(b+c.X-1) - (r+c.X)*math.Log(alpha+c.Tx)
	return a1 + a2 + logAddExp(a3, a4)
}

// LogLikelihood is one repeat customer's Gamma-Gamma log-likelihood of spending zbar on
// average over x transactions (the form lifetimes and the published fit use).
func (m GammaGamma) LogLikelihood(c Customer) float64 {
	p, q, v := m.P, m.Q, m.Gamma
	px := p * c.X
	return lgamma(px+q) - lgamma(px) - lgamma(q) + q*math.Log(v) + (px-1)*math.Log(c.Zbar) +
		px*math.Log(c.X) - (px+q)*math.Log(c.X*c.Zbar+v)
}

// PAlive is the probability the customer has not dropped out at T.
func (m BGNBD) PAlive(c Customer) float64 {
	if c.X == 0 {
		return 1
	}
	logOdds := math.Log(m.A/(m.B+c.X-1)) + (m.R+c.X)*math.Log((m.Alpha+c.T)/(m.Alpha+c.Tx))
	return 1 / (1 + math.Exp(logOdds))
}

// ExpectedPurchases is the expected number of purchases in (T, T+t] given the customer's history.
func (m BGNBD) ExpectedPurchases(c Customer, t float64) float64 {
	if t <= 0 {
		return 0
	}
	first, denom := m.historyTerms(c)
	return first * m.horizonTerm(c.X, c.T, t) / denom
}

// horizonTerm is the factor of ExpectedPurchases that depends on the history only through x
// and T: its hypergeometric function is nearly all the prediction's cost, and customers who
// share x and T (far fewer pairs than histories) share it.
func (m BGNBD) horizonTerm(x, T, t float64) float64 {
	hyp := mathext.Hypergeo(m.R+x, m.B+x, m.A+m.B+x-1, t/(m.Alpha+T+t))
	return 1 - hyp*math.Pow((m.Alpha+T)/(m.Alpha+T+t), m.R+x)
}

// historyTerms are the factors of ExpectedPurchases that do not depend on the horizon t.
func (m BGNBD) historyTerms(c Customer) (first, denom float64) {
	a, b := m.A, m.B
	first = (a + b + c.X - 1) / (a - 1)
	denom = 1.0
	if c.X > 0 {
		denom += a / (b + c.X - 1) * math.Pow((m.Alpha+c.T)/(m.Alpha+c.Tx), m.R+c.X)
	}
	return first, denom
}

// ProbNoPurchases is P(X(t) = 0) for a customer just acquired.
func (m BGNBD) ProbNoPurchases(t float64) float64 {
	return math.Pow(m.Alpha/(m.Alpha+t), m.R)
}

// ExpectedAverageValue is the expected spend per transaction given the customer's history:
// a weighted mean of the population mean and the customer's own zbar.
func (m GammaGamma) ExpectedAverageValue(c Customer) float64 {
	popMean := m.Gamma * m.P / (m.Q - 1)
	w := m.P * c.X / (m.P*c.X + m.Q - 1)
	return (1-w)*popMean + w*c.Zbar
}
