package knowledge

import (
	"cmp"
	"fmt"
	"maps"
	"math"
	"runtime"
	"slices"
	"sync"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/ckm-dev/ckm/transforms/arrowutil"
)

// Classes of customers as knowledge sources.
const (
	KeySource              = "key_source"                // KV, W and AC high
	KeySourceCapabilityGap = "key_source_capability_gap" // KV and W high, AC low: the firm fails to absorb
	Incentivise            = "incentivise"               // KV high, W low
	Nurture                = "nurture"                   // KV low, W high
	NotASource             = "not_a_source"
	InsufficientEvidence   = "insufficient_evidence" // too few knowledge events to judge
)

// Classes lists the classes in report order.
var Classes = []string{KeySource, KeySourceCapabilityGap, Incentivise, Nurture, NotASource, InsufficientEvidence}

// Class places a customer by its dimension scores.
func Class(kv, w, ac float64, events int64, p Params) string {
	if events < int64(p.MinEvents) || math.IsNaN(kv) || math.IsNaN(w) || math.IsNaN(ac) {
		return InsufficientEvidence
	}
	hkv, hw, hac := kv >= p.High, w >= p.High, ac >= p.High
	switch {
	case hkv && hw && hac:
		return KeySource
	case hkv && hw:
		return KeySourceCapabilityGap
	case hkv:
		return Incentivise
	case hw:
		return Nurture
	}
	return NotASource
}

// Composite is kksi = Π max(S_d, floor)^w_d: a weighted geometric mean, so a dimension near
// zero cannot be made up for by the others. NaN when a dimension is missing.
func Composite(scores, weights []float64, floor float64) float64 {
	logSum := 0.0
	for d, s := range scores {
		if math.IsNaN(s) {
			return math.NaN()
		}
		logSum += weights[d] * math.Log(math.Max(s, floor))
	}
	return math.Exp(logSum)
}

// MidRankPercentiles normalises values to (count below + half the count equal) / n over the
// non-NaN values; NaN stays NaN. Ties share one percentile.
func MidRankPercentiles(values []float64) []float64 {
	if out, ok := fewDistinctPercentiles(values); ok {
		return out
	}
	type entry struct {
		v float64
		i int32
	}
	// Sorting (value, index) pairs keeps each comparison in cache, unlike sorting indices.
	sorted := make([]entry, 0, len(values))
	out := make([]float64, len(values))
	for i, v := range values {
		if math.IsNaN(v) {
			out[i] = math.NaN()
		} else {
			sorted = append(sorted, entry{v, int32(i)})
		}
	}
	slices.SortFunc(sorted, func(a, b entry) int {
		switch {
		case a.v < b.v:
			return -1
		case a.v > b.v:
			return 1
		}
		return 0
	})
	n := float64(len(sorted))
	for lo := 0; lo < len(sorted); {
		hi := lo + 1
		for hi < len(sorted) && sorted[hi].v == sorted[lo].v {
			hi++
		}
		pct := (float64(lo) + 0.5*float64(hi-lo)) / n
		for _, e := range sorted[lo:hi] {
			out[e.i] = pct
		}
		lo = hi
	}
	return out
}

// fewDistinctPercentiles is MidRankPercentiles by counting, for the many indicators with few
// distinct values (smoothed rates of small counts, shares of a handful): much cheaper than
// sorting every customer. It gives up when values are mostly distinct.
func fewDistinctPercentiles(values []float64) ([]float64, bool) {
	counts := map[float64]int{}
	n := 0
	for _, v := range values {
		if math.IsNaN(v) {
			continue
		}
		counts[v]++
		n++
		if len(counts) > len(values)/16+16 {
			return nil, false
		}
	}
	pct := make(map[float64]float64, len(counts))
	below := 0
	for _, v := range slices.Sorted(maps.Keys(counts)) {
		pct[v] = (float64(below) + 0.5*float64(counts[v])) / float64(n)
		below += counts[v]
	}
	out := make([]float64, len(values))
	for i, v := range values {
		if math.IsNaN(v) {
			out[i] = v
		} else {
			out[i] = pct[v]
		}
	}
	return out, true
}

// Model is what the run used to score: the weights (written to model_fits every run) and the
// population priors of the smoothed rates.
type Model struct {
	DimensionWeights []float64 // final, by Dimensions
	AHPWeights       []float64 // from the pairwise matrix (or fixed)
	ConsistencyRatio float64
	EntropyWeights   []float64 // nil unless entropy_blend > 0
	IndicatorWeights []float64 // within their dimension, by Indicators
	Priors           map[string]Prior
	Customers        int
}

// Inputs are every eligible customer's counts, which the pipeline aggregates in DuckDB, held
// apart from the batches they were read from.
type Inputs struct {
	ids                                                         []string
	hasCLV, knowledgeEvents, inboundEvents, tenureDays, leadN   []int64
	invited, accepted, ratedN, consent, nonNegative, channels   []int64
	acked, converted, implemented, departments, kac, kforc, kfc []int64
	clv, innovation, leadSum, ratedSum                          []float64
}

// InputColumns are the columns ReadInputs reads, all per eligible customer.
var InputColumns = []string{"customer_id", "has_clv", "clv", "knowledge_events", "innovation", "inbound_events", "tenure_days",
	"lead_sum", "lead_n", "invited", "accepted", "rated_n", "rated_sum", "consent", "non_negative", "channels",
	"acknowledged", "converted", "implemented", "departments", "kac_events", "kforc_events", "kfc_events"}

// ReadInputs copies the InputColumns of batches: the caller may release them afterwards.
func ReadInputs(batches []arrow.RecordBatch) (*Inputs, error) {
	in := &Inputs{}
	var err error
	if in.ids, err = arrowutil.StringColumn(batches, "customer_id"); err != nil {
		return nil, err
	}
	ints, err := arrowutil.Int64Columns(batches, "has_clv", "knowledge_events", "inbound_events", "tenure_days", "lead_n",
		"invited", "accepted", "rated_n", "consent", "non_negative", "channels", "acknowledged", "converted", "implemented",
		"departments", "kac_events", "kforc_events", "kfc_events")
	if err != nil {
		return nil, err
	}
	in.hasCLV, in.knowledgeEvents, in.inboundEvents, in.tenureDays, in.leadN = ints[0], ints[1], ints[2], ints[3], ints[4]
	in.invited, in.accepted, in.ratedN, in.consent, in.nonNegative, in.channels = ints[5], ints[6], ints[7], ints[8], ints[9], ints[10]
	in.acked, in.converted, in.implemented, in.departments = ints[11], ints[12], ints[13], ints[14]
	in.kac, in.kforc, in.kfc = ints[15], ints[16], ints[17]
	floats, err := arrowutil.Float64Columns(batches, "clv", "innovation", "lead_sum", "rated_sum")
	if err != nil {
		return nil, err
	}
	in.clv, in.innovation, in.leadSum, in.ratedSum = floats[0], floats[1], floats[2], floats[3]
	return in, nil
}

// Score computes every eligible customer's knowledge scores from in (consent is 1, 0, or −1
// for unknown), hands customer_knowledge's rows (without as_of and run_id), in the inputs'
// order, to emit in batches of at most chunkRows rows (emit takes each over), and returns the
// model used. Ranking needs the whole population at once; what it holds per customer are
// plain numbers, and at most one batch of rows is built at a time.
func Score(in *Inputs, p Params, mem memory.Allocator, chunkRows int, emit func(arrow.RecordBatch) error) (Model, error) {
	p = p.WithDefaults()
	if problems := p.Validate(); len(problems) > 0 {
		keys := slices.Sorted(maps.Keys(problems))
		return Model{}, fmt.Errorf("knowledge parameters: %s: %s", keys[0], problems[keys[0]])
	}
	model, err := resolveWeights(p)
	if err != nil {
		return Model{}, err
	}
	model.Customers = len(in.ids)
	raw, imputed, priors := rawIndicators(in, p)
	model.Priors = priors

	// Percentiles sort each indicator independently: spread them over the cores.
	scores := make([][]float64, len(Indicators))
	var wg sync.WaitGroup
	for k := range Indicators {
		wg.Go(func() {
			scores[k], raw[k] = MidRankPercentiles(raw[k]), nil
			if Indicators[k].LowerIsBetter {
				for i, v := range scores[k] {
					scores[k][i] = 1 - v
				}
			}
		})
	}
	wg.Wait()

	n := len(in.ids)
	dims := make([][]float64, len(Dimensions))
	for d := range Dimensions {
		dims[d] = make([]float64, n)
	}
	inParallel(n, func(lo, hi int) {
		for d, dim := range Dimensions {
			for i := lo; i < hi; i++ {
				dims[d][i] = dimensionScore(dim, i, scores, imputed, model.IndicatorWeights, p.MinWeightPresent)
			}
		}
	})
	if p.EntropyBlend > 0 {
		var rows [][]float64
		for i := range n {
			if !math.IsNaN(dims[0][i]) && !math.IsNaN(dims[1][i]) && !math.IsNaN(dims[2][i]) {
				rows = append(rows, []float64{dims[0][i], dims[1][i], dims[2][i]})
			}
		}
		model.EntropyWeights = EntropyWeights(rows, len(Dimensions))
		for d := range model.DimensionWeights {
			model.DimensionWeights[d] = (1-p.EntropyBlend)*model.AHPWeights[d] + p.EntropyBlend*model.EntropyWeights[d]
		}
	}

	kksi := make([]float64, n)
	class := make([]string, n)
	factors := make([]string, n)
	namer := newFactorNamer(model)
	inParallel(n, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			s := []float64{dims[0][i], dims[1][i], dims[2][i]}
			kksi[i] = Composite(s, model.DimensionWeights, p.Floor)
			class[i] = Class(s[0], s[1], s[2], in.knowledgeEvents[i], p)
			factors[i] = namer.name(i, scores, imputed)
		}
	})
	if chunkRows <= 0 {
		chunkRows = max(n, 1)
	}
	out := scored{in: in, scores: scores, imputed: imputed, dims: dims, kksi: kksi, class: class, rank: ranks(kksi, class), factors: factors}
	for lo := 0; lo < n; lo += chunkRows {
		if err := emit(out.build(mem, lo, min(n, lo+chunkRows))); err != nil {
			return Model{}, err
		}
	}
	return model, nil
}

// inParallel runs fn over [0, n) in one contiguous chunk per core.
func inParallel(n int, fn func(lo, hi int)) {
	chunks := runtime.GOMAXPROCS(0)
	var wg sync.WaitGroup
	for c := range chunks {
		wg.Go(func() { fn(c*n/chunks, (c+1)*n/chunks) })
	}
	wg.Wait()
}

// resolveWeights turns the configured weights into numbers; indicator weights are normalised
// within each dimension.
func resolveWeights(p Params) (Model, error) {
	var m Model
	w, cr, err := p.DimensionWeights.Resolve(Dimensions)
	if err != nil {
		return m, fmt.Errorf("dimension_weights: %w", err)
	}
	m.AHPWeights, m.ConsistencyRatio, m.DimensionWeights = w, cr, slices.Clone(w)
	m.IndicatorWeights = make([]float64, len(Indicators))
	for _, dim := range Dimensions {
		names := indicatorsOf(dim)
		w, _, err := p.IndicatorWeights[dim].Resolve(names)
		if err != nil {
			return m, fmt.Errorf("indicator_weights.%s: %w", dim, err)
		}
		for j, name := range names {
			m.IndicatorWeights[indicatorIndex(dim, name)] = w[j]
		}
	}
	return m, nil
}

func indicatorIndex(dim, name string) int {
	return slices.IndexFunc(Indicators, func(in Indicator) bool { return in.Dimension == dim && in.Name == name })
}

// rawIndicators computes each indicator's raw value per customer (NaN = missing) and which
// values were imputed; rates are smoothed towards their population prior. The population is the
// eligible customers, those with at least MinEvents knowledge events: the priors, means and (by
// their NaN raw values elsewhere) the percentiles are theirs alone, so that customers who never
// spoke cannot lift those who did.
func rawIndicators(in *Inputs, p Params) ([][]float64, [][]bool, map[string]Prior) {
	n := len(in.ids)
	raw := make([][]float64, len(Indicators))
	imputed := make([][]bool, len(Indicators))
	for k := range Indicators {
		raw[k] = make([]float64, n)
		imputed[k] = make([]bool, n)
	}
	eligible := make([]bool, n)
	for i := range n {
		eligible[i] = in.knowledgeEvents[i] >= int64(p.MinEvents)
	}
	// f reads counts as floats; counts of customers outside the population read as 0 trials,
	// which the prior estimates pass over.
	f := func(v []int64) []float64 {
		out := make([]float64, len(v))
		for i, x := range v {
			if eligible[i] {
				out[i] = float64(x)
			}
		}
		return out
	}
	events, inbound := f(in.knowledgeEvents), f(in.inboundEvents)
	priors := map[string]Prior{
		"lead_user":  EstimatePrior(in.leadSum, f(in.leadN), p.PriorStrength),
		"acceptance": EstimatePrior(f(in.accepted), f(in.invited), p.PriorStrength),
		"benefit":    EstimatePrior(in.ratedSum, f(in.ratedN), p.PriorStrength),
		"trust":      EstimatePrior(f(in.nonNegative), inbound, p.PriorStrength),
		"assimilate": EstimatePrior(f(in.acked), events, p.PriorStrength),
		"transform":  EstimatePrior(f(in.converted), events, p.PriorStrength),
		"exploit":    EstimatePrior(f(in.implemented), events, p.PriorStrength),
	}
	// The population's share of consent, for customers whose consent is unknown.
	var consentSum float64
	var consentKnown int
	for i := range n {
		if eligible[i] && in.consent[i] >= 0 {
			consentSum += float64(in.consent[i])
			consentKnown++
		}
	}
	consentMean := 0.0
	if consentKnown > 0 {
		consentMean = consentSum / float64(consentKnown)
	}
	rate := func(k int, name string, s, trials float64, i int) {
		pr := priors[name]
		raw[k][i] = pr.Smooth(s, trials)
		imputed[k][i] = trials == 0
	}
	idx := func(name string) int {
		return slices.IndexFunc(Indicators, func(in Indicator) bool { return in.Name == name })
	}
	kCLV, kInnovation, kLead, kContact := idx("clv"), idx("innovation"), idx("lead_user"), idx("active_contact")
	kAccept, kBenefit, kTrust, kAcquire := idx("acceptance"), idx("benefit"), idx("trust"), idx("acquire")
	kAssimilate, kTransform, kExploit := idx("assimilate"), idx("transform"), idx("exploit")
	for i := range n {
		if !eligible[i] {
			for k := range Indicators {
				raw[k][i] = math.NaN() // not ranked: insufficient evidence
			}
			continue
		}
		raw[kCLV][i] = math.NaN()
		if in.hasCLV[i] == 1 {
			raw[kCLV][i] = in.clv[i]
		}
		raw[kInnovation][i] = in.innovation[i]
		rate(kLead, "lead_user", in.leadSum[i], float64(in.leadN[i]), i)
		raw[kContact][i] = inbound[i] / math.Max(1, float64(in.tenureDays[i])/30)
		rate(kAccept, "acceptance", float64(in.accepted[i]), float64(in.invited[i]), i)
		rate(kBenefit, "benefit", in.ratedSum[i], float64(in.ratedN[i]), i)
		rate(kTrust, "trust", float64(in.nonNegative[i]), inbound[i], i)
		consent := consentMean
		if in.consent[i] >= 0 {
			consent = float64(in.consent[i])
		}
		raw[kTrust][i] = 0.5*consent + 0.5*raw[kTrust][i]
		rate(kAssimilate, "assimilate", float64(in.acked[i]), events[i], i)
		rate(kExploit, "exploit", float64(in.implemented[i]), events[i], i)
		rate(kTransform, "transform", float64(in.converted[i]), events[i], i)
		// An eligible customer has knowledge events, so channels and departments are observed.
		raw[kAcquire][i] = float64(in.channels[i]) / float64(p.Channels)
		raw[kTransform][i] = 0.5*raw[kTransform][i] + 0.5*float64(in.departments[i])/float64(p.Departments)
	}
	return raw, imputed, priors
}

// dimensionScore is the weighted mean of the dimension's available indicator scores, or NaN
// when less than minPresent of its weight was observed (imputed values fill in but do not count).
func dimensionScore(dim string, i int, scores [][]float64, imputed [][]bool, weights []float64, minPresent float64) float64 {
	var sum, total, present float64
	for k, in := range Indicators {
		if in.Dimension != dim || math.IsNaN(scores[k][i]) {
			continue
		}
		sum += weights[k] * scores[k][i]
		total += weights[k]
		if !imputed[k][i] {
			present += weights[k]
		}
	}
	if total == 0 || present < minPresent-1e-12 {
		return math.NaN()
	}
	return sum / total
}

// ranks numbers customers with enough evidence by kksi, highest first; ties share a rank
// and rank 0 means unranked.
func ranks(kksi []float64, class []string) []int64 {
	var order []int32
	for i := range kksi {
		if class[i] != InsufficientEvidence && !math.IsNaN(kksi[i]) {
			order = append(order, int32(i))
		}
	}
	slices.SortStableFunc(order, func(a, b int32) int { return cmp.Compare(kksi[b], kksi[a]) })
	out := make([]int64, len(kksi))
	for pos, i := range order {
		if pos > 0 && kksi[i] == kksi[order[pos-1]] {
			out[i] = out[order[pos-1]]
		} else {
			out[i] = int64(pos + 1)
		}
	}
	return out
}

// factorNamer names a customer's top factors: the two observed indicators that add most to the
// index, an indicator adding its dimension's weight × its weight within the dimension × its
// score. The phrases of every pair are joined once, not per customer.
type factorNamer struct {
	weight []float64  // global weight of each indicator
	pairs  [][]string // pairs[first][second]; pairs[k][k] is k's phrase alone
}

func newFactorNamer(m Model) factorNamer {
	f := factorNamer{weight: make([]float64, len(Indicators)), pairs: make([][]string, len(Indicators))}
	for k, in := range Indicators {
		f.weight[k] = m.DimensionWeights[slices.Index(Dimensions, in.Dimension)] * m.IndicatorWeights[k]
		f.pairs[k] = make([]string, len(Indicators))
		for j, other := range Indicators {
			f.pairs[k][j] = in.Phrase + "; " + other.Phrase
		}
		f.pairs[k][k] = in.Phrase
	}
	return f
}

// name returns customer i's top factors, "" when nothing about the customer was observed.
func (f factorNamer) name(i int, scores [][]float64, imputed [][]bool) string {
	first, second := -1, -1
	var g1, g2 float64
	for k := range Indicators {
		if math.IsNaN(scores[k][i]) || imputed[k][i] {
			continue
		}
		switch g := f.weight[k] * scores[k][i]; {
		case first < 0 || g > g1:
			first, g1, second, g2 = k, g, first, g1
		case second < 0 || g > g2:
			second, g2 = k, g
		}
	}
	switch {
	case first < 0:
		return ""
	case second < 0:
		return f.pairs[first][first]
	}
	return f.pairs[first][second]
}

// OutputSchema is customer_knowledge without as_of and run_id.
func OutputSchema() *arrow.Schema {
	f64, i64 := arrow.PrimitiveTypes.Float64, arrow.PrimitiveTypes.Int64
	fields := []arrow.Field{{Name: "customer_id", Type: arrow.BinaryTypes.String}}
	for _, d := range Dimensions {
		fields = append(fields, arrow.Field{Name: d, Type: f64, Nullable: true})
	}
	for _, in := range Indicators {
		fields = append(fields, arrow.Field{Name: in.Column(), Type: f64, Nullable: true})
	}
	for _, in := range Indicators {
		if in.Imputable {
			fields = append(fields, arrow.Field{Name: in.Column() + "_imputed", Type: arrow.FixedWidthTypes.Boolean})
		}
	}
	return arrow.NewSchema(append(fields,
		arrow.Field{Name: "knowledge_events", Type: i64},
		arrow.Field{Name: "kksi", Type: f64, Nullable: true},
		arrow.Field{Name: "class", Type: arrow.BinaryTypes.String},
		arrow.Field{Name: "is_key_source", Type: arrow.FixedWidthTypes.Boolean},
		arrow.Field{Name: "rank", Type: i64, Nullable: true},
		arrow.Field{Name: "top_factors", Type: arrow.BinaryTypes.String, Nullable: true},
		arrow.Field{Name: "kac_events", Type: i64},
		arrow.Field{Name: "kforc_events", Type: i64},
		arrow.Field{Name: "kfc_events", Type: i64},
	), nil)
}

// scored is every eligible customer's scores, in the inputs' order.
type scored struct {
	in           *Inputs
	scores, dims [][]float64
	imputed      [][]bool
	kksi         []float64
	class        []string
	rank         []int64
	factors      []string
}

// build makes the customer_knowledge rows of customers [lo, hi).
func (s scored) build(mem memory.Allocator, lo, hi int) arrow.RecordBatch {
	b := array.NewRecordBuilder(mem, OutputSchema())
	defer b.Release()
	b.Reserve(hi - lo)
	col := 0
	next := func() array.Builder { c := b.Field(col); col++; return c }
	floats := func(v []float64) {
		fb := next().(*array.Float64Builder)
		for _, x := range v[lo:hi] {
			if math.IsNaN(x) {
				fb.AppendNull()
			} else {
				fb.UnsafeAppend(x)
			}
		}
	}
	ints := func(v []int64) { next().(*array.Int64Builder).AppendValues(v[lo:hi], nil) }
	bools := func(v []bool) { next().(*array.BooleanBuilder).AppendValues(v[lo:hi], nil) }
	next().(*array.StringBuilder).AppendValues(s.in.ids[lo:hi], nil)
	for d := range Dimensions {
		floats(s.dims[d])
	}
	for k := range Indicators {
		floats(s.scores[k])
	}
	for k, ind := range Indicators {
		if ind.Imputable {
			bools(s.imputed[k])
		}
	}
	ints(s.in.knowledgeEvents)
	floats(s.kksi)
	next().(*array.StringBuilder).AppendValues(s.class[lo:hi], nil)
	kb := next().(*array.BooleanBuilder)
	for _, c := range s.class[lo:hi] {
		kb.Append(c == KeySource || c == KeySourceCapabilityGap)
	}
	rb := next().(*array.Int64Builder)
	for _, r := range s.rank[lo:hi] {
		if r == 0 {
			rb.AppendNull()
		} else {
			rb.Append(r)
		}
	}
	tb := next().(*array.StringBuilder)
	for _, f := range s.factors[lo:hi] {
		if f != "" {
			tb.Append(f)
		} else {
			tb.AppendNull()
		}
	}
	ints(s.in.kac)
	ints(s.in.kforc)
	ints(s.in.kfc)
	return b.NewRecordBatch()
}
