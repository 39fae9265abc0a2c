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

// Score takes batches with columns customer_id, recency_days, frequency, monetary (one row per
// customer with at least one purchase in the window) and returns one batch scored 1–5 per
// dimension, by RankScores (recency ranked descending, so the most recent customers score 5) or
// by the dimension's fixed bins.
func Score(batches []arrow.RecordBatch, p Params, mem memory.Allocator) (arrow.RecordBatch, error) {
	rules, err := compile(p.Segments)
	if err != nil {
		return nil, err
	}
	ids, err := arrowutil.StringColumn(batches, "customer_id")
	if err != nil {
		return nil, err
	}
	ints, err := arrowutil.Int64Columns(batches, "recency_days", "frequency")
	if err != nil {
		return nil, err
	}
	floats, err := arrowutil.Float64Columns(batches, "monetary")
	if err != nil {
		return nil, err
	}
	rec, freq, mon := ints[0], ints[1], floats[0]
	r, f, m := dimensionScores(rec, p.Bins.Recency, true), dimensionScores(freq, p.Bins.Frequency, false), dimensionScores(mon, p.Bins.Monetary, false)

	bld := array.NewRecordBuilder(mem, OutputSchema)
	defer bld.Release()
	bld.Reserve(len(ids))
	cols := bld.Fields()
	cellCache := map[[3]int8]string{}
	segCache := map[[2]int8]string{}
	for i := range ids {
		cols[0].(*array.StringBuilder).Append(ids[i])
		cols[1].(*array.Int32Builder).Append(int32(rec[i]))
		cols[2].(*array.Int32Builder).Append(int32(freq[i]))
		cols[3].(*array.Float64Builder).Append(mon[i])
		cols[4].(*array.Int8Builder).Append(r[i])
		cols[5].(*array.Int8Builder).Append(f[i])
		cols[6].(*array.Int8Builder).Append(m[i])
		k := [3]int8{r[i], f[i], m[i]}
		cell, ok := cellCache[k]
		if !ok {
			cell = strconv.Itoa(int(r[i])) + strconv.Itoa(int(f[i])) + strconv.Itoa(int(m[i]))
			cellCache[k] = cell
		}
		cols[7].(*array.StringBuilder).Append(cell)
		sk := [2]int8{r[i], f[i]}
		seg, ok := segCache[sk]
		if !ok {
			seg = segmentOf(rules, cell[:2])
			segCache[sk] = seg
		}
		cols[8].(*array.StringBuilder).Append(seg)
	}
	return bld.NewRecordBatch(), nil
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
