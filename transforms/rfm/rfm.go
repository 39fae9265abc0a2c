// Package rfm scores recency, frequency and monetary value 1–5 per customer and names
// the customer's segment, from per-customer aggregates in Arrow record batches.
package rfm

import (
	"cmp"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/ckm-dev/ckm/transforms/arrowutil"
)

// Params configure the segment names and, per dimension, fixed bins instead of ranks.
type Params struct {
	// Segments are matched in order against the two-character R,F score string; the first match wins.
	Segments []Segment `yaml:"segments"`
	Bins     Bins      `yaml:"bins"`
}

// Bins score a dimension by fixed thresholds instead of by rank, as many teams score frequency
// ("bought once" is always 1). Each list holds four ascending, inclusive upper bounds: of scores
// 1–4 for frequency (purchase days) and monetary, and, since fewer days are better, of scores
// 5–2 for recency (days since the last purchase). An empty list ranks the dimension.
type Bins struct {
	Recency   []float64 `yaml:"recency"`
	Frequency []float64 `yaml:"frequency"`
	Monetary  []float64 `yaml:"monetary"`
}

// Validate checks each configured list, keyed by its dimension.
func (b Bins) Validate() map[string]string {
	out := map[string]string{}
	for name, bounds := range map[string][]float64{"recency": b.Recency, "frequency": b.Frequency, "monetary": b.Monetary} {
		if len(bounds) == 0 {
			continue
		}
		if len(bounds) != 4 {
			out[name] = fmt.Sprintf("has %d bounds; want 4 (the upper bounds of scores %s)", len(bounds), map[bool]string{true: "5–2", false: "1–4"}[name == "recency"])
			continue
		}
		for i, v := range bounds {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				out[name] = fmt.Sprintf("bound %d is %g; want a finite number", i+1, v)
				break
			}
			if i > 0 && v <= bounds[i-1] {
				out[name] = fmt.Sprintf("bounds must ascend: %g follows %g", v, bounds[i-1])
				break
			}
		}
	}
	return out
}

// Segment names the customers whose R,F scores match Pattern (a regular expression over e.g. "54").
type Segment struct {
	Pattern string `yaml:"pattern"`
	Name    string `yaml:"name"`
}

// Unmatched names a customer no segment pattern matches.
const Unmatched = "Other"

// DefaultSegments is the common RFM segment map (DESIGN.md).
func DefaultSegments() []Segment {
	return []Segment{
		{"5[4-5]", "Champions"},
		{"[3-4][4-5]", "Loyal Customers"},
		{"[4-5][2-3]", "Potential Loyalists"},
		{"51", "New Customers"},
		{"41", "Promising"},
		{"33", "Need Attention"},
		{"3[1-2]", "About to Sleep"},
		{"[1-2]5", "Can't Lose"},
		{"[1-2][3-4]", "At Risk"},
		{"[1-2][1-2]", "Hibernating"},
	}
}

// ValidateSegments checks that every pattern compiles and every segment has a name.
func ValidateSegments(segs []Segment) error {
	_, err := compile(segs)
	return err
}

type rule struct {
	re   *regexp.Regexp
	name string
}

func compile(segs []Segment) ([]rule, error) {
	out := make([]rule, len(segs))
	for i, s := range segs {
		re, err := regexp.Compile("^(?:" + s.Pattern + ")$")
		if err != nil {
			return nil, fmt.Errorf("segment %d (%s): bad pattern %q: %v", i+1, s.Name, s.Pattern, err)
		}
		if s.Name == "" {
			return nil, fmt.Errorf("segment %d (pattern %s) has no name", i+1, s.Pattern)
		}
		out[i] = rule{re, s.Name}
	}
	return out, nil
}

// OutputSchema is the schema of Score's result.
var OutputSchema = arrow.NewSchema([]arrow.Field{
	{Name: "customer_id", Type: arrow.BinaryTypes.String},
	{Name: "recency_days", Type: arrow.PrimitiveTypes.Int32},
	{Name: "frequency", Type: arrow.PrimitiveTypes.Int32},
	{Name: "monetary", Type: arrow.PrimitiveTypes.Float64},
	{Name: "r_score", Type: arrow.PrimitiveTypes.Int8},
	{Name: "f_score", Type: arrow.PrimitiveTypes.Int8},
	{Name: "m_score", Type: arrow.PrimitiveTypes.Int8},
	{Name: "rfm_cell", Type: arrow.BinaryTypes.String},
	{Name: "segment", Type: arrow.BinaryTypes.String},
}, nil)

// Scores are customers' R, F and M scores 1–5, by position.
type Scores struct{ R, F, M []int8 }

// ScoreDimensions scores every customer (one with at least one purchase in the window; the three
// slices in one order) by RankScores — recency ranked descending, so the most recent customers
// score 5 — or by the dimension's fixed bins. Ranks need the whole population: the inputs are
// three numbers a customer, never the customers themselves.
func ScoreDimensions(recency, frequency []int64, monetary []float64, bins Bins) Scores {
	return Scores{R: dimensionScores(recency, bins.Recency, true), F: dimensionScores(frequency, bins.Frequency, false),
		M: dimensionScores(monetary, bins.Monetary, false)}
}

// Slice is the scores of positions lo … hi-1.
func (s Scores) Slice(lo, hi int) Scores { return Scores{R: s.R[lo:hi], F: s.F[lo:hi], M: s.M[lo:hi]} }

// Scorer turns scores into output batches with their RFM cells and segments.
type Scorer struct {
	rules    []rule
	cells    map[[3]int8]string
	segments map[[2]int8]string
}

// NewScorer compiles p's segment patterns.
func NewScorer(p Params) (*Scorer, error) {
	rules, err := compile(p.Segments)
	if err != nil {
		return nil, err
	}
	return &Scorer{rules: rules, cells: map[[3]int8]string{}, segments: map[[2]int8]string{}}, nil
}

// Score takes a batch with columns customer_id, recency_days, frequency, monetary and its rows'
// scores, and returns the batch scored (sharing rec's customer_id column).
func (sc *Scorer) Score(rec arrow.RecordBatch, s Scores, mem memory.Allocator) (arrow.RecordBatch, error) {
	ids, err := arrowutil.StringArray(rec, "customer_id", mem)
	if err != nil {
		return nil, err
	}
	defer ids.Release()
	recency, err := arrowutil.Int64s(nil, rec, "recency_days")
	if err != nil {
		return nil, err
	}
	freq, err := arrowutil.Int64s(nil, rec, "frequency")
	if err != nil {
		return nil, err
	}
	mon, err := arrowutil.Float64s(nil, rec, "monetary")
	if err != nil {
		return nil, err
	}
	n := ids.Len()
	if len(s.R) != n || len(s.F) != n || len(s.M) != n {
		return nil, fmt.Errorf("%d customers but %d, %d and %d scores", n, len(s.R), len(s.F), len(s.M))
	}
	recencyB, freqB, monB := array.NewInt32Builder(mem), array.NewInt32Builder(mem), array.NewFloat64Builder(mem)
	rB, fB, mB := array.NewInt8Builder(mem), array.NewInt8Builder(mem), array.NewInt8Builder(mem)
	cellB, segB := array.NewStringBuilder(mem), array.NewStringBuilder(mem)
	builders := []array.Builder{recencyB, freqB, monB, rB, fB, mB, cellB, segB} // OutputSchema's order after customer_id
	for _, b := range builders {
		defer b.Release()
		b.Reserve(n)
	}
	for i := range n {
		recencyB.Append(int32(recency[i]))
		freqB.Append(int32(freq[i]))
		monB.Append(mon[i])
		r, f, m := s.R[i], s.F[i], s.M[i]
		rB.Append(r)
		fB.Append(f)
		mB.Append(m)
		cell, ok := sc.cells[[3]int8{r, f, m}]
		if !ok {
			cell = strconv.Itoa(int(r)) + strconv.Itoa(int(f)) + strconv.Itoa(int(m))
			sc.cells[[3]int8{r, f, m}] = cell
		}
		cellB.Append(cell)
		seg, ok := sc.segments[[2]int8{r, f}]
		if !ok {
			seg = segmentOf(sc.rules, cell[:2])
			sc.segments[[2]int8{r, f}] = seg
		}
		segB.Append(seg)
	}
	return arrowutil.NewBatch(OutputSchema, ids, builders), nil
}

func segmentOf(rules []rule, rf string) string {
	for _, r := range rules {
		if r.re.MatchString(rf) {
			return r.name
		}
	}
	return Unmatched
}

// RankScores scores each value 1 + floor(5 × (rank − 1) / n) in ascending order, where rank is
// SQL's rank(): 1 + the number of values below it, so ties share the lowest rank of the range
// they span and sit at the bottom of it. Without ties these are plain quintiles; with heavy ties
// the tie group is not lifted: when 97% bought once, those 97% score F = 1 (a cume_dist rule
// would give each of them 5). Integer arithmetic only.
func RankScores[T int64 | float64](v []T) []int8 {
	n := len(v)
	idx := make([]int32, n)
	for i := range idx {
		idx[i] = int32(i)
	}
	slices.SortFunc(idx, func(a, b int32) int { return cmp.Compare(v[a], v[b]) })
	out := make([]int8, n)
	for start := 0; start < n; {
		end := start + 1
		for end < n && v[idx[end]] == v[idx[start]] {
			end++
		}
		score := int8(1 + 5*start/n) // start = rank − 1: the values below this tie group
		for _, i := range idx[start:end] {
			out[i] = score
		}
		start = end
	}
	return out
}

// dimensionScores scores one dimension by its fixed bins, or else by rank; fewerIsBetter ranks
// descending (recency: the longest ago ranks first, i.e. lowest).
func dimensionScores[T int64 | float64](v []T, bins []float64, fewerIsBetter bool) []int8 {
	switch {
	case len(bins) > 0:
		return BinScores(v, bins, fewerIsBetter)
	case fewerIsBetter:
		neg := make([]T, len(v))
		for i, x := range v {
			neg[i] = -x
		}
		return RankScores(neg)
	}
	return RankScores(v)
}

// BinScores scores each value by four ascending inclusive upper bounds: of scores 1–4, or of
// scores 5–2 when fewerIsBetter (recency in days).
func BinScores[T int64 | float64](v []T, bounds []float64, fewerIsBetter bool) []int8 {
	out := make([]int8, len(v))
	for i, x := range v {
		bin, _ := slices.BinarySearch(bounds, float64(x)) // bounds below x: x falls in bin+1
		if fewerIsBetter {
			out[i] = int8(5 - bin)
		} else {
			out[i] = int8(bin + 1)
		}
	}
	return out
}
