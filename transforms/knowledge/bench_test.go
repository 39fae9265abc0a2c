package knowledge

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// BenchmarkScore scores a million customers with mixed evidence, most with none (as in a shop).
func BenchmarkScore(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	rows := make([]testRow, 1_000_000)
	for i := range rows {
		events := int64(0)
		if rng.Float64() < 0.3 {
			events = int64(rng.IntN(8))
		}
		rows[i] = testRow{id: string(rune('A'+i%26)) + string(rune('a'+i/26%26)) + string(rune('0'+i%10)), clv: math.Round(rng.ExpFloat64()*1000) / 10,
			events: events, inbound: events + int64(rng.IntN(2)), tenure: int64(1 + rng.IntN(365)), leadN: int64(rng.IntN(10)),
			invited: int64(rng.IntN(4)), ratedN: int64(rng.IntN(3)), consent: int64(rng.IntN(3)) - 1, chan_: min(events, 3),
			acked: events / 2, converted: events / 3, implemented: events / 4, departments: min(events, 2),
			innovation: float64(events) * rng.Float64()}
		rows[i].accepted = rows[i].invited / 2
		rows[i].leadSum = float64(rows[i].leadN) * rng.Float64()
		rows[i].ratedSum = float64(rows[i].ratedN) * rng.Float64()
		rows[i].nonNeg = rows[i].inbound / 2
	}
	rec := batch(rows)
	defer rec.Release()
	b.ResetTimer()
	for b.Loop() {
		in, err := ReadInputs([]arrow.RecordBatch{rec})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := Score(in, Params{}, memory.DefaultAllocator, 1<<20, func(out arrow.RecordBatch) error { out.Release(); return nil }); err != nil {
			b.Fatal(err)
		}
	}
}
