// Package rfm scores recency, frequency and monetary value 1–5 per customer and names
// the customer's segment, from per-customer aggregates in Arrow record batches.
package rfm

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/ckm-dev/ckm/transforms/arrowutil"
)

// Params configure the segment names.
type Params struct {
	// Segments are matched in order against the two-character R,F score string; the first match wins.
	Segments []Segment `yaml:"segments"`
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
// dimension: score = ceil(5 × cume_dist), ties sharing a score, recency ranked descending so
// the most recent customers score 5.
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
	negRec := make([]int64, len(rec))
	for i, v := range rec {
		negRec[i] = -v // descending recency: the smallest recency ranks last, i.e. highest
	}
	r, f, m := Quintiles(negRec), Quintiles(freq), Quintiles(mon)

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

// Quintiles scores each value ceil(5 × cume_dist) in ascending order, where cume_dist counts
// the values less than or equal to it, so ties share a score. It is computed as the integer
// ceil(5k/n), with no floating-point division.
func Quintiles[T int64 | float64](v []T) []int8 {
	n := len(v)
	idx := make([]int32, n)
	for i := range idx {
		idx[i] = int32(i)
	}
	slices.SortFunc(idx, func(a, b int32) int {
		switch {
		case v[a] < v[b]:
			return -1
		case v[a] > v[b]:
			return 1
		}
		return 0
	})
	out := make([]int8, n)
	for start := 0; start < n; {
		end := start + 1
		for end < n && v[idx[end]] == v[idx[start]] {
			end++
		}
		score := int8((5*end + n - 1) / n) // ceil(5 × end / n): end values are <= this one
		for _, i := range idx[start:end] {
			out[i] = score
		}
		start = end
	}
	return out
}
