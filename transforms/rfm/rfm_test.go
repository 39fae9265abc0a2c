package rfm

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"
)

func TestRankScoresByHand(t *testing.T) {
	// Ten distinct values: rank k, score 1 + floor(5(k−1)/10) = plain quintiles, two per score.
	require.Equal(t, []int8{1, 1, 2, 2, 3, 3, 4, 4, 5, 5}, RankScores([]int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}))
	// Ties share the lowest rank and sit at the bottom of the range they span: three 1s have
	// rank 1 → score 1; 2 has rank 4 → 1 + floor(15/5) = 4; 3 has rank 5 → 1 + floor(20/5) = 5.
	require.Equal(t, []int8{1, 1, 1, 4, 5}, RankScores([]int64{1, 1, 1, 2, 3}))
	// Float ties the same way: 0.7 has rank 4 → 1 + floor(15/5) = 4.
	require.Equal(t, []int8{1, 1, 1, 4, 4}, RankScores([]float64{0.1, 0.1, 0.1, 0.7, 0.7}))
	// Seven customers: 1 + floor(5(k−1)/7) for k = 1..7 = 1,1,2,3,3,4,5; input order does not matter.
	require.Equal(t, []int8{5, 1, 3, 1, 4, 3, 2}, RankScores([]float64{70, 10, 40, 20, 60, 50, 30}))
	// 97 one-time buyers among 100: every one of them F = 1, the repeat buyers F = 5
	// (ranks 98..100 → 1 + floor(5·97/100) = 5).
	freq := make([]int64, 100)
	for i := range freq {
		freq[i] = 1
	}
	freq[10], freq[50], freq[99] = 2, 3, 2
	scores := RankScores(freq)
	for i, s := range scores {
		if freq[i] == 1 {
			require.EqualValues(t, 1, s, "one-time buyer %d", i)
		} else {
			require.EqualValues(t, 5, s, "repeat buyer %d", i)
		}
	}
	require.Empty(t, RankScores([]int64{}))
}

// Without ties the rank rule is the plain quintile: 1,000 distinct values in random order put
// exactly 200 in each score, each score's values all above the previous score's.
func TestRankScoresWithoutTiesArePlainQuintiles(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	v := make([]float64, 1000)
	for i := range v {
		v[i] = float64(i) + rng.Float64()*0.5
	}
	rng.Shuffle(len(v), func(i, j int) { v[i], v[j] = v[j], v[i] })
	scores := RankScores(v)
	count := map[int8]int{}
	lo, hi := map[int8]float64{}, map[int8]float64{}
	for i, s := range scores {
		count[s]++
		if c := count[s]; c == 1 || v[i] < lo[s] {
			lo[s] = v[i]
		}
		if v[i] > hi[s] {
			hi[s] = v[i]
		}
	}
	for s := int8(1); s <= 5; s++ {
		require.Equal(t, 200, count[s], "score %d", s)
		require.InDelta(t, float64(200*int(s-1)), lo[s], 0.5, "score %d starts at the %d-th value", s, 200*int(s-1))
		if s > 1 {
			require.Greater(t, lo[s], hi[s-1])
		}
	}
}

func TestBinScores(t *testing.T) {
	// frequency: [1, 2, 3, 5] are the inclusive upper bounds of scores 1–4.
	require.Equal(t, []int8{1, 2, 3, 4, 4, 5, 5}, BinScores([]int64{1, 2, 3, 4, 5, 6, 40}, []float64{1, 2, 3, 5}, false))
	// recency in days: [30, 90, 180, 270] bound scores 5–2; fewer days are better.
	require.Equal(t, []int8{5, 5, 4, 3, 2, 1}, BinScores([]int64{0, 30, 31, 180, 270, 271}, []float64{30, 90, 180, 270}, true))
	require.Equal(t, []int8{1, 2, 5}, BinScores([]float64{-5, 10.5, 1e9}, []float64{10, 100, 1000, 10000}, false))

	require.Empty(t, Bins{Frequency: []float64{1, 2, 3, 5}, Recency: []float64{30, 90, 180, 270}}.Validate())
	problems := Bins{Frequency: []float64{1, 2, 3}, Monetary: []float64{10, 5, 20, 30}, Recency: []float64{1, 2, 3, math.Inf(1)}}.Validate()
	require.Contains(t, problems["frequency"], "has 3 bounds; want 4")
	require.Contains(t, problems["monetary"], "bounds must ascend: 5 follows 10")
	require.Contains(t, problems["recency"], "bound 4 is +Inf")
}

func TestScoreAndSegments(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.DefaultAllocator)
	defer mem.AssertSize(t, 0)
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "customer_id", Type: arrow.BinaryTypes.String},
		{Name: "recency_days", Type: arrow.PrimitiveTypes.Int32},
		{Name: "frequency", Type: arrow.PrimitiveTypes.Int64},
		{Name: "monetary", Type: arrow.PrimitiveTypes.Float64},
	}, nil)
	b := array.NewRecordBuilder(mem, schema)
	defer b.Release()
	// Five customers, one per quintile in every dimension; a is the most recent, frequent and valuable.
	b.Field(0).(*array.StringBuilder).AppendValues([]string{"a", "b", "c", "d", "e"}, nil)
	b.Field(1).(*array.Int32Builder).AppendValues([]int32{1, 10, 100, 200, 300}, nil)
	b.Field(2).(*array.Int64Builder).AppendValues([]int64{9, 1, 5, 2, 1}, nil)
	b.Field(3).(*array.Float64Builder).AppendValues([]float64{500, 400, 300, 200, 100}, nil)
	in := b.NewRecordBatch()
	defer in.Release()

	score := func(bins Bins) arrow.RecordBatch {
		sc, err := NewScorer(Params{Segments: DefaultSegments()})
		require.NoError(t, err)
		scores := ScoreDimensions([]int64{1, 10, 100, 200, 300}, []int64{9, 1, 5, 2, 1}, []float64{500, 400, 300, 200, 100}, bins)
		out, err := sc.Score(in, scores, mem)
		require.NoError(t, err)
		return out
	}
	out := score(Bins{})
	defer out.Release()
	cells := out.Column(7).(*array.String)
	segs := out.Column(8).(*array.String)
	got := map[string]string{}
	for i := 0; i < int(out.NumRows()); i++ {
		got[out.Column(0).(*array.String).Value(i)] = cells.Value(i) + " " + segs.Value(i)
	}
	// frequency 1 is shared by b and e: rank 1 → F score 1; d (2) has rank 3 → 1 + floor(10/5) = 3.
	require.Equal(t, map[string]string{
		"a": "555 Champions",
		"b": "414 Promising",
		"c": "343 Loyal Customers",
		"d": "232 At Risk",
		"e": "111 Hibernating",
	}, got)

	// Fixed frequency bins score by thresholds instead: 9 → 5, 5 → 4, 2 → 2, 1 → 1.
	out2 := score(Bins{Frequency: []float64{1, 2, 3, 5}})
	defer out2.Release()
	require.Equal(t, []int8{5, 1, 4, 2, 1}, out2.Column(5).(*array.Int8).Int8Values())
}

func TestSegmentsFirstMatchWinsAndUnmatched(t *testing.T) {
	rules, err := compile([]Segment{{"5.", "Top"}, {"55", "Never reached"}})
	require.NoError(t, err)
	require.Equal(t, "Top", segmentOf(rules, "55"))
	require.Equal(t, Unmatched, segmentOf(rules, "11"))
	require.Error(t, ValidateSegments([]Segment{{"[", "Broken"}}))
	require.Error(t, ValidateSegments([]Segment{{"55", ""}}))
}

func TestDefaultSegmentsCoverEveryCell(t *testing.T) {
	rules, err := compile(DefaultSegments())
	require.NoError(t, err)
	for r := '1'; r <= '5'; r++ {
		for f := '1'; f <= '5'; f++ {
			require.NotEqual(t, Unmatched, segmentOf(rules, string([]rune{r, f})), "RF %c%c", r, f)
		}
	}
}
