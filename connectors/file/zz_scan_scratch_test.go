package file

import (
	"testing"
	"time"
)

func TestScratchScan(t *testing.T) {
	for i := 0; i < 2; i++ {
		start := time.Now()
		sc, err := scanFile("/tmp/bench1m/data/orders.csv", true, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("scan %v lines lf=%d longest=%d", time.Since(start), sc.lf, sc.longest)
	}
}
