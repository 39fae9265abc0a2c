package knowledge

import "math"

// Prior is a Beta(Alpha, Beta) population prior for a rate. A customer's smoothed rate with s
// successes in n trials is (s + Alpha) / (n + Alpha + Beta); with no trials it is the prior mean.
type Prior struct {
	Alpha, Beta float64
	Customers   int // customers with at least one trial, the prior was estimated from
}

// Mean is the prior mean, what a rate without a denominator is imputed as.
func (p Prior) Mean() float64 { return p.Alpha / (p.Alpha + p.Beta) }

// Smooth is the posterior mean rate.
func (p Prior) Smooth(s, n float64) float64 { return (s + p.Alpha) / (n + p.Alpha + p.Beta) }

// Bounds of an estimated prior strength (α + β, in pseudo-trials): at least one trial's worth
// so small counts are always pulled in, at most 100 so a homogeneous population cannot
// swamp customers with real evidence.
const (
	minStrength     = 1
	maxStrength     = 100
	defaultStrength = 2 // when the data cannot tell (nobody has more than one trial)
)

// EstimatePrior fits a Beta prior to per-customer (successes, trials) by the method of moments
// for a beta-binomial with unequal trial counts: the raw rates' variance is
// m(1−m)·(ρ + (1−ρ)·mean(1/n)), ρ = 1/(α+β+1) the share of variance between customers.
// strength > 0 fixes α+β and estimates only the mean.
func EstimatePrior(successes, trials []float64, strength float64) Prior {
	var n int
	var sumRate, sumInv float64
	for i, t := range trials {
		if t > 0 {
			n++
			sumRate += successes[i] / t
			sumInv += 1 / t
		}
	}
	if n == 0 {
		return Prior{Alpha: 1, Beta: 1} // uniform: nothing is known
	}
	m := sumRate / float64(n)
	inv := sumInv / float64(n)
	var v float64
	for i, t := range trials {
		if t > 0 {
			d := successes[i]/t - m
			v += d * d
		}
	}
	v /= float64(n)
	m = math.Min(math.Max(m, 1e-3), 1-1e-3) // a prior mean of exactly 0 or 1 would never move
	if strength <= 0 {
		strength = defaultStrength
		if inv < 1 {
			rho := (v/(m*(1-m)) - inv) / (1 - inv)
			switch {
			case rho <= 1/(maxStrength+1.0):
				strength = maxStrength
			case rho >= 1/(minStrength+1.0):
				strength = minStrength
			default:
				strength = 1/rho - 1
			}
		}
	}
	return Prior{Alpha: m * strength, Beta: (1 - m) * strength, Customers: n}
}
