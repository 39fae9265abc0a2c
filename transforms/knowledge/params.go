// Package knowledge scores customers as sources of innovation knowledge: knowledge value (KV),
// exchange willingness (W) and the firm's absorptive capacity (AC) for each customer, combined
// into the key-customer-knowledge-source index (kksi) with AHP weights, then classed.
package knowledge

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"sort"
)

// Dimensions are the three dimensions, in the order weights and scores are reported.
var Dimensions = []string{"kv", "w", "ac"}

// Indicator is one sub-indicator of a dimension.
type Indicator struct {
	Name      string // as configured: indicator_weights.<dimension>.<name>
	Dimension string
	Phrase    string // what a high value says, in words a CRM user understands (top_factors)
	// LowerIsBetter indicators are normalised as 1 − percentile.
	LowerIsBetter bool
	// Imputable indicators are rates that may lack a denominator; they then take the
	// population's prior mean and an imputed flag (column <column>_imputed).
	Imputable bool
}

// Column is the output column holding the indicator's normalised score.
func (in Indicator) Column() string { return in.Dimension + "_" + in.Name }

// Indicators are the sub-indicators of DESIGN.md, grouped by dimension.
var Indicators = []Indicator{
	{Name: "clv", Dimension: "kv", Phrase: "high lifetime value"},
	{Name: "innovation", Dimension: "kv", Phrase: "shares many product ideas"},
	{Name: "lead_user", Dimension: "kv", Phrase: "buys new products early", Imputable: true},
	{Name: "active_contact", Dimension: "w", Phrase: "contacts us often"},
	{Name: "acceptance", Dimension: "w", Phrase: "accepts our invitations", Imputable: true},
	{Name: "benefit", Dimension: "w", Phrase: "rates us highly", Imputable: true},
	{Name: "trust", Dimension: "w", Phrase: "trusts us", Imputable: true},
	{Name: "acquire", Dimension: "ac", Phrase: "reaches us through many channels", Imputable: true},
	{Name: "assimilate", Dimension: "ac", Phrase: "ideas acknowledged quickly", Imputable: true},
	{Name: "transform", Dimension: "ac", Phrase: "ideas become requirements", Imputable: true},
	{Name: "exploit", Dimension: "ac", Phrase: "ideas get implemented", Imputable: true},
}

// indicatorsOf lists a dimension's indicator names in order.
func indicatorsOf(dim string) []string {
	var out []string
	for _, in := range Indicators {
		if in.Dimension == dim {
			out = append(out, in.Name)
		}
	}
	return out
}

// Weights are given either as fixed weights (normalised to sum 1) or as an AHP pairwise
// comparison matrix: ahp[a][b] = how many times more important a is than b (1–9 scale);
// each pair once, reciprocals implied. Neither means equal weights.
type Weights struct {
	Fixed map[string]float64            `yaml:"fixed"`
	AHP   map[string]map[string]float64 `yaml:"ahp"`
}

// Params configure the knowledge index. Zero values take DESIGN.md's defaults.
type Params struct {
	High             float64            `yaml:"high"`               // a dimension at or above this is high; default 0.6
	MinEvents        int                `yaml:"min_events"`         // fewer knowledge events in the lookback: insufficient_evidence; default 3
	HalfLifeDays     float64            `yaml:"half_life_days"`     // decay of innovation-relevant events; default 180
	LeadUserDays     int                `yaml:"lead_user_days"`     // a purchase this soon after launch signals a lead user; default 90
	AckDays          int                `yaml:"ack_days"`           // acknowledgement SLA in days of 24 hours; default 7
	MinWeightPresent float64            `yaml:"min_weight_present"` // a dimension with less of its weight observed is NULL; default 0.5
	Floor            float64            `yaml:"floor"`              // dimensions enter kksi as max(S, floor); default 0.01
	KindWeights      map[string]float64 `yaml:"kind_weights"`       // innovation weight of inbound kinds; default co_design 3, suggestion 2, feature_request 2, complaint 1, review 0.5
	Channels         int                `yaml:"channels"`           // channels a customer can reach the firm through; default 8 (the canonical vocabulary)
	Departments      int                `yaml:"departments"`        // departments that can take up knowledge; default 4
	PriorStrength    float64            `yaml:"prior_strength"`     // pseudo-observations of the Beta priors; 0 estimates them from the population
	EntropyBlend     float64            `yaml:"entropy_blend"`      // share of entropy weights blended into the AHP dimension weights; default 0

	DimensionWeights Weights            `yaml:"dimension_weights"` // default AHP kv:w 2, kv:ac 3, w:ac 2
	IndicatorWeights map[string]Weights `yaml:"indicator_weights"` // per dimension; default equal
}

// DefaultKindWeights are DESIGN.md's innovation weights of inbound feedback kinds.
func DefaultKindWeights() map[string]float64 {
	return map[string]float64{"co_design": 3, "suggestion": 2, "feature_request": 2, "complaint": 1, "review": 0.5}
}

// WithDefaults fills unset parameters with DESIGN.md's values.
func (p Params) WithDefaults() Params {
	p.High = cmp.Or(p.High, 0.6)
	p.HalfLifeDays = cmp.Or(p.HalfLifeDays, 180)
	p.MinWeightPresent = cmp.Or(p.MinWeightPresent, 0.5)
	p.Floor = cmp.Or(p.Floor, 0.01)
	p.MinEvents = cmp.Or(p.MinEvents, 3)
	p.LeadUserDays = cmp.Or(p.LeadUserDays, 90)
	p.AckDays = cmp.Or(p.AckDays, 7)
	p.Channels = cmp.Or(p.Channels, 8)
	p.Departments = cmp.Or(p.Departments, 4)
	if len(p.KindWeights) == 0 {
		p.KindWeights = DefaultKindWeights()
	}
	if len(p.DimensionWeights.Fixed) == 0 && len(p.DimensionWeights.AHP) == 0 {
		p.DimensionWeights.AHP = map[string]map[string]float64{"kv": {"w": 2, "ac": 3}, "w": {"ac": 2}}
	}
	return p
}

// maxAckDays bounds ack_days (a century): ack_days × 86,400,000,000 µs must fit an int64.
const maxAckDays = 36_500

// Validate checks every parameter and returns one message per problem, keyed by the
// parameter's path below scoring.knowledge.
func (p Params) Validate() map[string]string {
	out := map[string]string{}
	unit := func(key string, v float64) {
		if v < 0 || v > 1 {
			out[key] = fmt.Sprintf("%g is not between 0 and 1", v)
		}
	}
	unit("high", p.High)
	unit("min_weight_present", p.MinWeightPresent)
	unit("entropy_blend", p.EntropyBlend)
	if p.Floor <= 0 || p.Floor >= 1 {
		out["floor"] = fmt.Sprintf("%g: want a small positive number below 1, e.g. 0.01", p.Floor)
	}
	for key, v := range map[string]float64{"half_life_days": p.HalfLifeDays, "lead_user_days": float64(p.LeadUserDays),
		"ack_days": float64(p.AckDays), "channels": float64(p.Channels), "departments": float64(p.Departments), "min_events": float64(p.MinEvents)} {
		if v <= 0 {
			out[key] = "must be positive"
		}
	}
	if p.AckDays > maxAckDays {
		out["ack_days"] = fmt.Sprintf("%d: at most %d (the deadline is computed in microseconds)", p.AckDays, maxAckDays)
	}
	if p.PriorStrength < 0 {
		out["prior_strength"] = "must be 0 (estimate) or positive"
	}
	for kind, w := range p.KindWeights {
		if w < 0 {
			out["kind_weights."+kind] = "a weight cannot be negative"
		}
	}
	if _, cr, err := p.DimensionWeights.Resolve(Dimensions); err != nil {
		out["dimension_weights"] = err.Error()
	} else if cr >= MaxConsistencyRatio {
		out["dimension_weights.ahp"] = consistencyProblem(cr)
	}
	for _, dim := range slices.Sorted(maps.Keys(p.IndicatorWeights)) {
		names := indicatorsOf(dim)
		if names == nil {
			out["indicator_weights."+dim] = "unknown dimension " + dim + " (want kv, w or ac)"
			continue
		}
		if _, cr, err := p.IndicatorWeights[dim].Resolve(names); err != nil {
			out["indicator_weights."+dim] = err.Error()
		} else if cr >= MaxConsistencyRatio {
			out["indicator_weights."+dim+".ahp"] = consistencyProblem(cr)
		}
	}
	return out
}

func consistencyProblem(cr float64) string {
	return fmt.Sprintf("pairwise comparisons are inconsistent: consistency ratio %.3f ≥ %.2f", cr, MaxConsistencyRatio)
}

// Resolve returns the weights of names (summing to 1) and, for an AHP matrix, its consistency ratio.
func (w Weights) Resolve(names []string) ([]float64, float64, error) {
	switch {
	case len(w.Fixed) > 0 && len(w.AHP) > 0:
		return nil, 0, fmt.Errorf("give either fixed weights or an ahp matrix, not both")
	case len(w.AHP) > 0:
		m, err := pairwiseMatrix(w.AHP, names)
		if err != nil {
			return nil, 0, err
		}
		weights, cr := AHP(m)
		return weights, cr, nil
	case len(w.Fixed) > 0:
		out := make([]float64, len(names))
		total := 0.0
		for key, v := range w.Fixed {
			i := slices.Index(names, key)
			if i < 0 {
				return nil, 0, fmt.Errorf("unknown name %q (want %v)", key, names)
			}
			if v < 0 {
				return nil, 0, fmt.Errorf("weight of %s is negative", key)
			}
			out[i] = v
			total += v
		}
		if total == 0 {
			return nil, 0, fmt.Errorf("fixed weights sum to 0")
		}
		for i := range out {
			out[i] /= total
		}
		return out, 0, nil
	}
	out := make([]float64, len(names))
	for i := range out {
		out[i] = 1 / float64(len(names))
	}
	return out, 0, nil
}

// pairwiseMatrix builds the full reciprocal matrix from one judgement per pair.
func pairwiseMatrix(judgements map[string]map[string]float64, names []string) ([][]float64, error) {
	n := len(names)
	m := make([][]float64, n)
	for i := range m {
		m[i] = make([]float64, n)
		m[i][i] = 1
	}
	for _, a := range slices.Sorted(maps.Keys(judgements)) {
		i := slices.Index(names, a)
		if i < 0 {
			return nil, fmt.Errorf("unknown name %q (want %v)", a, names)
		}
		for _, b := range slices.Sorted(maps.Keys(judgements[a])) {
			j := slices.Index(names, b)
			v := judgements[a][b]
			switch {
			case j < 0:
				return nil, fmt.Errorf("unknown name %q (want %v)", b, names)
			case i == j:
				return nil, fmt.Errorf("%s compared with itself", a)
			case v <= 0:
				return nil, fmt.Errorf("%s:%s = %g: a judgement must be positive (1–9, or its reciprocal)", a, b, v)
			case m[i][j] != 0:
				return nil, fmt.Errorf("%s and %s are compared twice", a, b)
			}
			m[i][j], m[j][i] = v, 1/v
		}
	}
	var missing []string
	for i := range n {
		for j := i + 1; j < n; j++ {
			if m[i][j] == 0 {
				missing = append(missing, names[i]+":"+names[j])
			}
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return nil, fmt.Errorf("pairs not compared: %v", missing)
	}
	return m, nil
}
