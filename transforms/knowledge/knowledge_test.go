package knowledge

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"
	"gonum.org/v1/gonum/stat/distuv"
)

func near(t *testing.T, what string, got, want, tol float64) {
	t.Helper()
	if math.Abs(got-want) > tol || math.IsNaN(got) != math.IsNaN(want) {
		t.Errorf("%s = %.6f, want %.6f (±%g)", what, got, want, tol)
	}
}

func TestDefaultAHPWeights(t *testing.T) {
	w, cr, err := Params{}.WithDefaults().DimensionWeights.Resolve(Dimensions)
	if err != nil {
		t.Fatal(err)
	}
	// DESIGN.md: KV:W = 2, KV:AC = 3, W:AC = 2 → 0.540, 0.297, 0.163, CR ≈ 0.008.
	near(t, "w_kv", w[0], 0.540, 0.0005)
	near(t, "w_w", w[1], 0.297, 0.0005)
	near(t, "w_ac", w[2], 0.163, 0.0005)
	// By hand: λmax = 3.00920, CI = 0.00460, RI(3) = 0.58.
	near(t, "CR", cr, 0.0079, 0.0002)
}

func TestAHPConsistentMatrixRecoversWeights(t *testing.T) {
	// A perfectly consistent matrix a_ij = w_i/w_j has CR 0 and the weights themselves.
	want := []float64{0.5, 0.2, 0.2, 0.1}
	m := make([][]float64, 4)
	for i := range m {
		m[i] = make([]float64, 4)
		for j := range m[i] {
			m[i][j] = want[i] / want[j]
		}
	}
	w, cr := AHP(m)
	for i := range want {
		near(t, "w", w[i], want[i], 1e-9)
	}
	near(t, "CR", cr, 0, 1e-9)
}

func TestInconsistentMatrixFailsValidation(t *testing.T) {
	p := Params{DimensionWeights: Weights{AHP: map[string]map[string]float64{"kv": {"w": 9, "ac": 1.0 / 9}, "w": {"ac": 9}}}}.WithDefaults()
	problems := p.Validate()
	msg := problems["dimension_weights.ahp"]
	if !strings.Contains(msg, "consistency ratio") {
		t.Fatalf("want a consistency problem, got %v", problems)
	}
	_, cr, _ := p.DimensionWeights.Resolve(Dimensions)
	if cr < MaxConsistencyRatio || !strings.Contains(msg, fmt.Sprintf("%.3f", cr)) {
		t.Errorf("CR %g: message %q should carry it", cr, msg)
	}
	missing := Params{DimensionWeights: Weights{AHP: map[string]map[string]float64{"kv": {"w": 2}}}}.Validate()
	if !strings.Contains(missing["dimension_weights"], "not compared") {
		t.Errorf("an incomplete matrix should be named: %v", missing)
	}
}

// A deadline of ack_days × 24 hours is compared in microseconds: a huge ack_days would wrap.
func TestAckDaysAreBounded(t *testing.T) {
	for days, ok := range map[int]bool{7: true, 36_500: true, 36_501: false, 200_000_000: false, -1: false} {
		msg, bad := Params{AckDays: days}.WithDefaults().Validate()["ack_days"]
		if bad == ok {
			t.Errorf("ack_days %d: problem %q", days, msg)
		}
	}
}

func TestEntropyWeightsFavourTheDiscriminatingColumn(t *testing.T) {
	rows := [][]float64{{0.1, 0.5, 0.5}, {0.9, 0.5, 0.5}, {0.5, 0.5, 0.5}}
	w := EntropyWeights(rows, 3)
	near(t, "varying column", w[0], 1, 1e-12)
	near(t, "constant column", w[1], 0, 1e-12)
}

func TestMidRankPercentiles(t *testing.T) {
	got := MidRankPercentiles([]float64{3, 1, 2, 2, math.NaN()})
	// Four values: 1 → 0.5/4, both 2s → (1 + 1)/4, 3 → (3 + 0.5)/4.
	want := []float64{0.875, 0.125, 0.5, 0.5, math.NaN()}
	for i := range want {
		near(t, "pct", got[i], want[i], 1e-12)
	}
}

func TestComposite(t *testing.T) {
	// 0.81^0.5 · 0.16^0.25 · max(0.0001, 0.01)^0.25 = 0.9 · 0.632456 · 0.316228 = 0.18.
	near(t, "kksi", Composite([]float64{0.81, 0.16, 0.0001}, []float64{0.5, 0.25, 0.25}, 0.01), 0.18, 1e-12)
	if !math.IsNaN(Composite([]float64{0.5, math.NaN(), 0.5}, []float64{0.5, 0.25, 0.25}, 0.01)) {
		t.Error("a missing dimension must leave kksi NULL")
	}
}

func TestClassBoundaries(t *testing.T) {
	p := Params{}.WithDefaults()
	cases := []struct {
		kv, w, ac float64
		events    int64
		want      string
	}{
		{0.6, 0.6, 0.6, 3, KeySource},
		{0.6, 0.6, 0.5999, 3, KeySourceCapabilityGap},
		{0.6, 0.5999, 0.9, 3, Incentivise},
		{0.5999, 0.6, 0.9, 3, Nurture},
		{0.5999, 0.5999, 0.9, 3, NotASource},
		{0.9, 0.9, 0.9, 2, InsufficientEvidence},
		{0.9, math.NaN(), 0.9, 10, InsufficientEvidence},
	}
	for _, c := range cases {
		if got := Class(c.kv, c.w, c.ac, c.events, p); got != c.want {
			t.Errorf("Class(%g, %g, %g, %d) = %s, want %s", c.kv, c.w, c.ac, c.events, got, c.want)
		}
	}
}

func TestPriorByHand(t *testing.T) {
	// Rates 1/2 and 3/4 (the customer without trials does not count): mean 0.625; strength 2.
	pr := EstimatePrior([]float64{1, 0, 3}, []float64{2, 0, 4}, 2)
	near(t, "alpha", pr.Alpha, 1.25, 1e-12)
	near(t, "beta", pr.Beta, 0.75, 1e-12)
	near(t, "smoothed 1/2", pr.Smooth(1, 2), 2.25/4, 1e-12)
	near(t, "imputed", pr.Mean(), 0.625, 1e-12)
}

func TestPriorRecoversBetaBinomial(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	beta := distuv.Beta{Alpha: 2, Beta: 6, Src: rng}
	s, n := make([]float64, 40000), make([]float64, 40000)
	for i := range s {
		n[i] = float64(1 + rng.IntN(20))
		q := beta.Rand()
		for range int(n[i]) {
			if rng.Float64() < q {
				s[i]++
			}
		}
	}
	pr := EstimatePrior(s, n, 0)
	near(t, "prior mean", pr.Mean(), 0.25, 0.01)
	near(t, "prior strength", pr.Alpha+pr.Beta, 8, 0.8)
}

// testRow is one customer's aggregated inputs.
type testRow struct {
	id                                                string
	clv                                               float64 // NaN: no CLV
	events, inbound, tenure, leadN                    int64
	invited, accepted, ratedN, consent, nonNeg, chan_ int64
	acked, converted, implemented, departments        int64
	innovation, leadSum, ratedSum                     float64
}

func batch(rows []testRow) arrow.RecordBatch {
	fields := []arrow.Field{{Name: "customer_id", Type: arrow.BinaryTypes.String}}
	for _, c := range InputColumns[1:] {
		typ := arrow.DataType(arrow.PrimitiveTypes.Int64)
		if c == "clv" || c == "innovation" || c == "lead_sum" || c == "rated_sum" {
			typ = arrow.PrimitiveTypes.Float64
		}
		fields = append(fields, arrow.Field{Name: c, Type: typ})
	}
	b := array.NewRecordBuilder(memory.DefaultAllocator, arrow.NewSchema(fields, nil))
	defer b.Release()
	for _, r := range rows {
		hasCLV, clv := int64(1), r.clv
		if math.IsNaN(clv) {
			hasCLV, clv = 0, 0
		}
		vals := map[string]any{"customer_id": r.id, "has_clv": hasCLV, "clv": clv, "knowledge_events": r.events,
			"innovation": r.innovation, "inbound_events": r.inbound, "tenure_days": r.tenure, "lead_sum": r.leadSum,
			"lead_n": r.leadN, "invited": r.invited, "accepted": r.accepted, "rated_n": r.ratedN, "rated_sum": r.ratedSum,
			"consent": r.consent, "non_negative": r.nonNeg, "channels": r.chan_, "acknowledged": r.acked,
			"converted": r.converted, "implemented": r.implemented, "departments": r.departments,
			"kac_events": int64(0), "kforc_events": int64(0), "kfc_events": r.events}
		for i, c := range InputColumns {
			switch v := vals[c].(type) {
			case string:
				b.Field(i).(*array.StringBuilder).Append(v)
			case int64:
				b.Field(i).(*array.Int64Builder).Append(v)
			case float64:
				b.Field(i).(*array.Float64Builder).Append(v)
			}
		}
	}
	return b.NewRecordBatch()
}

// Three customers worked by hand with prior strength 2.
var handRows = []testRow{
	// a: 4 knowledge events over 2 channels and 2 departments, 3 acknowledged in time, 2 converted,
	// 1 implemented; 6 inbound events over 90 days; 2 of 4 invites accepted; ratings summing
	// (r−1)/4 to 1.5 over 2; consent; 5 of 6 inbound non-negative; 2 launch purchases worth 1.2.
	{id: "a", clv: 300, events: 4, inbound: 6, tenure: 90, leadN: 2, leadSum: 1.2, invited: 4, accepted: 2, ratedN: 2, ratedSum: 1.5,
		consent: 1, nonNeg: 5, chan_: 2, acked: 3, converted: 2, implemented: 1, departments: 2, innovation: 5.5},
	// b: one inbound question (no knowledge event), never invited, no consent, a 10-day customer.
	{id: "b", clv: 100, inbound: 1, tenure: 10, consent: 0, nonNeg: 1},
	// c: no purchases (no CLV); 2 knowledge events, consent unknown.
	{id: "c", clv: math.NaN(), events: 2, inbound: 2, tenure: 365, consent: -1, nonNeg: 1, chan_: 1, acked: 0, converted: 0,
		departments: 1, innovation: 1, invited: 1, accepted: 1, ratedN: 1, ratedSum: 0.25},
}

func TestRawIndicatorsByHand(t *testing.T) {
	rec := batch(handRows)
	defer rec.Release()
	in, err := ReadInputs([]arrow.RecordBatch{rec})
	if err != nil {
		t.Fatal(err)
	}
	// With min_events 2, a (4 knowledge events) and c (2) are the population; b (none) is not.
	p := Params{PriorStrength: 2, MinEvents: 2}.WithDefaults()
	raw, imputed, priors := rawIndicators(in, p)
	get := func(name string, i int) (float64, bool) {
		k := indicatorIndex(dimOf(name), name)
		return raw[k][i], imputed[k][i]
	}
	check := func(name string, i int, want float64, wantImputed bool) {
		t.Helper()
		got, imp := get(name, i)
		near(t, name+"("+handRows[i].id+")", got, want, 1e-12)
		if imp != wantImputed {
			t.Errorf("%s(%s) imputed = %v, want %v", name, handRows[i].id, imp, wantImputed)
		}
	}
	// b is not ranked: no indicator at all, nothing imputed.
	for _, ind := range Indicators {
		check(ind.Name, 1, math.NaN(), false)
	}
	// Priors (strength 2): acceptance rates 2/4 and 1/1 → mean 0.75 → Beta(1.5, 0.5).
	near(t, "acceptance prior mean", priors["acceptance"].Mean(), 0.75, 1e-12)
	check("clv", 0, 300, false)
	check("clv", 2, math.NaN(), false)
	check("innovation", 0, 5.5, false)
	// lead user: only a has launch purchases, rate 0.6 → Beta(1.2, 0.8); a = (1.2+1.2)/(2+2); c has none: the prior mean.
	check("lead_user", 0, 2.4/4, false)
	check("lead_user", 2, 0.6, true)
	// active contact: inbound per 30-day month of tenure, at least one month.
	check("active_contact", 0, 6/3.0, false)
	check("active_contact", 2, 2/(365/30.0), false)
	check("acceptance", 0, (2+1.5)/(4+2), false)
	check("acceptance", 2, (1+1.5)/(1+2), false)
	// benefit: rates 0.75 and 0.25 → mean 0.5 → Beta(1, 1).
	check("benefit", 0, (1.5+1)/(2+2), false)
	check("benefit", 2, (0.25+1)/(1+2), false)
	// trust: non-negative shares 5/6 and 1/2 → mean 2/3 → Beta(4/3, 2/3); consent a 1, c unknown →
	// the population's known consent, a's: 1 (b's 0 does not count: b is not in the population).
	m := (5.0/6 + 0.5) / 2
	check("trust", 0, 0.5*1+0.5*(5+2*m)/(6+2), false)
	check("trust", 2, 0.5*1+0.5*(1+2*m)/(2+2), false)
	// acquire: distinct channels / 8.
	check("acquire", 0, 2.0/8, false)
	check("acquire", 2, 1.0/8, false)
	// assimilate: acknowledged within SLA 3/4 and 0/2 → mean 0.375 → Beta(0.75, 1.25).
	check("assimilate", 0, (3+0.75)/(4+2), false)
	check("assimilate", 2, (0+0.75)/(2+2), false)
	// transform: ½ converted (2/4, 0/2 → mean 0.25 → Beta(0.5, 1.5)) + ½ departments / 4.
	check("transform", 0, 0.5*(2+0.5)/(4+2)+0.5*2.0/4, false)
	check("transform", 2, 0.5*(0+0.5)/(2+2)+0.5*1.0/4, false)
	// exploit: implemented 1/4 and 0/2 → mean 0.125 → Beta(0.25, 1.75).
	check("exploit", 0, (1+0.25)/(4+2), false)
	check("exploit", 2, (0+0.25)/(2+2), false)
}

func dimOf(name string) string {
	for _, in := range Indicators {
		if in.Name == name {
			return in.Dimension
		}
	}
	return ""
}

func TestScoreCoverageRanksAndFactors(t *testing.T) {
	// d: 3 knowledge events, never invited, no ratings.
	d := testRow{id: "d", clv: 200, events: 3, inbound: 3, tenure: 365, consent: 1, nonNeg: 3, chan_: 1, acked: 1,
		departments: 1, innovation: 2}
	rows := append(slices.Clone(handRows), d)
	rec := batch(rows)
	defer rec.Release()
	p := Params{PriorStrength: 2, MinEvents: 2}
	out, model, err := scoreAll(rec, p)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Release()
	col := func(name string) arrow.Array { return out.Column(out.Schema().FieldIndices(name)[0]) }
	// b has no knowledge events: not ranked, no score of any kind.
	for _, name := range append([]string{"kv", "w", "ac", "kksi", "rank", "top_factors"}, indicatorColumns()...) {
		if !col(name).IsNull(1) {
			t.Errorf("%s of b (no knowledge events) should be NULL", name)
		}
	}
	// KV of c: CLV missing, innovation observed, lead user imputed → ⅓ of the dimension's weight
	// observed: below 50%, NULL, so c cannot be classed either.
	if !col("kv").IsNull(2) || col("w").IsNull(2) || col("ac").IsNull(2) {
		t.Error("of c only KV is NULL")
	}
	// d: W has active contact and trust observed (½ of its weight), acceptance and benefit imputed: present.
	if col("w").IsNull(3) || col("kv").IsNull(3) || col("ac").IsNull(3) {
		t.Error("every dimension of d is present")
	}
	classes := col("class").(*array.String)
	if classes.Value(1) != InsufficientEvidence || classes.Value(2) != InsufficientEvidence || classes.Value(3) == InsufficientEvidence {
		t.Errorf("classes %v: b and c have insufficient evidence, d does not", classes)
	}
	if r := col("rank").(*array.Int64); r.IsNull(0) || r.Value(0) != 1 || r.IsNull(3) || r.Value(3) != 2 || !r.IsNull(1) || !r.IsNull(2) {
		t.Errorf("a ranks 1, d 2, b and c are unranked, got %v", r)
	}
	// Percentiles are among the population: a's CLV (300) above d's (200) → (1 + ½)/2; b's 100 does not count.
	near(t, "a's CLV percentile", col("kv_clv").(*array.Float64).Value(0), (1+0.5)/2, 1e-12)
	if f := col("top_factors").(*array.String).Value(0); !strings.Contains(f, "high lifetime value") {
		t.Errorf("a's top factors %q should name its lifetime value", f)
	}
	near(t, "kv weight", model.DimensionWeights[0], 0.540, 0.0005)

	// Customers who never spoke cannot lift those who did: without b every other row is the same.
	without := append(slices.Clone(handRows[:1]), handRows[2], d)
	rec2 := batch(without)
	defer rec2.Release()
	out2, _, err := scoreAll(rec2, p)
	require.NoError(t, err)
	defer out2.Release()
	for c := range out.Schema().Fields() {
		for i, j := range map[int]int{0: 0, 2: 1, 3: 2} {
			require.Equal(t, out.Column(c).ValueStr(i), out2.Column(c).ValueStr(j), "%s of %s", out.Schema().Field(c).Name, rows[i].id)
		}
	}
}

// scoreAll scores rec's customers and returns their rows as one batch.
func scoreAll(rec arrow.RecordBatch, p Params) (arrow.RecordBatch, Model, error) {
	in, err := ReadInputs([]arrow.RecordBatch{rec})
	if err != nil {
		return nil, Model{}, err
	}
	var out arrow.RecordBatch
	model, err := Score(in, p, memory.DefaultAllocator, 0, func(b arrow.RecordBatch) error {
		if out != nil {
			return errors.New("more than one batch")
		}
		out = b
		return nil
	})
	return out, model, err
}

// variedRows are n customers cycling through from, their CLV, innovation, contact and
// acknowledgements varying.
func variedRows(n int, from ...testRow) arrow.RecordBatch {
	rows := make([]testRow, 0, n)
	for i := range n {
		r := from[i%len(from)]
		r.id = fmt.Sprintf("c%02d", i)
		r.clv, r.innovation, r.inbound, r.acked = float64(10*i), float64(i%7), r.inbound+int64(i%5), min(r.events, int64(i%4))
		rows = append(rows, r)
	}
	return batch(rows)
}

// Rows scored in batches of any size are the rows scored at once, in the same order.
func TestScoreInBatchesEqualsScoreAtOnce(t *testing.T) {
	rec := variedRows(40, handRows...)
	defer rec.Release()
	whole, _, err := scoreAll(rec, Params{MinEvents: 2})
	require.NoError(t, err)
	defer whole.Release()
	require.EqualValues(t, 40, whole.NumRows())
	for _, size := range []int{1, 7, 40, 41} {
		in, err := ReadInputs([]arrow.RecordBatch{rec})
		require.NoError(t, err)
		var lo int64
		_, err = Score(in, Params{MinEvents: 2}, memory.DefaultAllocator, size, func(b arrow.RecordBatch) error {
			defer b.Release()
			require.LessOrEqual(t, b.NumRows(), int64(size))
			part := whole.NewSlice(lo, lo+b.NumRows())
			defer part.Release()
			require.True(t, array.RecordEqual(part, b), "rows %d.. in batches of %d", lo, size)
			lo += b.NumRows()
			return nil
		})
		require.NoError(t, err)
		require.EqualValues(t, 40, lo, "every row, in batches of %d", size)
	}
}

func indicatorColumns() []string {
	var out []string
	for _, in := range Indicators {
		out = append(out, in.Column())
	}
	return out
}

func TestEntropyBlend(t *testing.T) {
	rec := variedRows(40, handRows[0])
	defer rec.Release()
	out, m, err := scoreAll(rec, Params{EntropyBlend: 0.5})
	require.NoError(t, err)
	defer out.Release()
	require.Len(t, m.EntropyWeights, 3)
	total := 0.0
	for d := range Dimensions {
		near(t, "blended weight", m.DimensionWeights[d], 0.5*m.AHPWeights[d]+0.5*m.EntropyWeights[d], 1e-12)
		total += m.DimensionWeights[d]
	}
	near(t, "weights sum", total, 1, 1e-12)
	require.NotEqual(t, m.AHPWeights, m.DimensionWeights, "the data moved the weights")
}

// Both ways of computing percentiles (counting few distinct values, sorting many) agree with
// the definition computed naively.
func TestMidRankPercentilesAgainstDefinition(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, distinct := range []int{5, 100_000} {
		values := make([]float64, 3000)
		for i := range values {
			values[i] = float64(rng.IntN(distinct)) / 7
			if i%100 == 0 {
				values[i] = math.NaN()
			}
		}
		_, few := fewDistinctPercentiles(values)
		require.Equal(t, distinct == 5, few, "the path taken for %d distinct values", distinct)
		got := MidRankPercentiles(values)
		n := 0.0
		for _, v := range values {
			if !math.IsNaN(v) {
				n++
			}
		}
		for i, v := range values {
			if math.IsNaN(v) {
				require.True(t, math.IsNaN(got[i]))
				continue
			}
			var below, equal float64
			for _, w := range values {
				if w < v {
					below++
				} else if w == v {
					equal++
				}
			}
			require.InDelta(t, (below+0.5*equal)/n, got[i], 1e-12)
		}
	}
}
