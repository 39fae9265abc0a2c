package clv

import (
	"encoding/csv"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

// cdnowSummary reads the published CDNOW calibration summary (x, t_x, T in weeks, zbar).
func cdnowSummary(t *testing.T) []Customer {
	_, file, _, _ := runtime.Caller(0)
	path := filepath.Join(filepath.Dir(file), "..", "..", "examples", "cdnow", "cdnow_customers_summary_with_transactions.csv")
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	require.NoError(t, err)
	var out []Customer
	for _, r := range rows[1:] {
		v := make([]float64, 4)
		for i := range v {
			v[i], err = strconv.ParseFloat(r[i+1], 64)
			require.NoError(t, err)
		}
		out = append(out, Customer{X: v[0], Tx: v[1], T: v[2], Zbar: v[3]})
	}
	require.Len(t, out, 2357)
	return out
}

func within(t *testing.T, want, got, rel float64, name string) {
	t.Helper()
	require.InDelta(t, want, got, rel*math.Abs(want), "%s: want %g, got %g", name, want, got)
}

func TestBGNBDReproducesPublishedCDNOWFit(t *testing.T) {
	fit, err := FitBGNBD(Compress(cdnowSummary(t)), 10)
	require.NoError(t, err)
	require.True(t, fit.Converged, fit.Message)
	// Fader, Hardie & Lee (2005); also R CLVTools and lifetimes.
	within(t, 0.2425945, fit.Param("r"), 0.005, "r")
	within(t, 4.4136019, fit.Param("alpha"), 0.005, "alpha")
	within(t, 0.7929199, fit.Param("a"), 0.005, "a")
	within(t, 2.4258881, fit.Param("b"), 0.005, "b")
	require.InDelta(t, -9582.429, fit.LogLikelihood, 0.05)
	require.Equal(t, 2357, fit.Customers)
	// Standard errors published with the fit (Fader, Hardie & Lee 2005, table 1).
	for name, se := range map[string]float64{"r": 0.0125, "alpha": 0.3781, "a": 0.1857, "b": 0.7052} {
		for _, p := range fit.Params {
			if p.Name == name {
				within(t, se, p.StdError, 0.01, name+" standard error")
			}
		}
	}
	for _, p := range fit.Params {
		require.Greater(t, p.StdError, 0.0, p.Name)
		require.Less(t, p.StdError, p.Value, "%s: a standard error larger than the estimate would mean the fit is not identified", p.Name)
	}
}

func TestGammaGammaReproducesPublishedCDNOWFit(t *testing.T) {
	fit, err := FitGammaGamma(Compress(cdnowSummary(t)), 10)
	require.NoError(t, err)
	require.True(t, fit.Converged, fit.Message)
	within(t, 6.2496, fit.Param("p"), 0.005, "p")
	within(t, 3.7442, fit.Param("q"), 0.005, "q")
	within(t, 15.4435, fit.Param("gamma"), 0.005, "gamma")
	require.InDelta(t, -4055.918, fit.LogLikelihood, 0.05)
	require.Equal(t, 946, fit.Customers)
}

// Per-customer values published alongside the data (examples/cdnow/README.md).
func TestPublishedPerCustomerValues(t *testing.T) {
	published := BGNBD{R: 0.243, Alpha: 4.414, A: 0.793, B: 2.426}
	require.InDelta(t, 0.5737864, published.ProbNoPurchases(39), 1e-6)

	fitted := BGNBD{R: 0.2425945, Alpha: 4.4136019, A: 0.7929199, B: 2.4258881}
	require.InDelta(t, 1.226, fitted.ExpectedPurchases(Customer{X: 2, Tx: 30.43, T: 38.86}, 39), 0.0005)

	// "at the fitted parameters": the full-precision fit, not its 4-digit rounding.
	fit, err := FitGammaGamma(Compress(cdnowSummary(t)), 10)
	require.NoError(t, err)
	gg := fit.GammaGamma()
	// Customer 1's zbar is (29.73 + 14.96) / 2 = 22.345; the summary file rounds it to 22.35.
	require.InDelta(t, 24.65, gg.ExpectedAverageValue(Customer{X: 2, Zbar: 22.345}), 0.005)
	require.InDelta(t, 18.91, gg.ExpectedAverageValue(Customer{X: 1, Zbar: 11.77}), 0.005)
	require.InDelta(t, 35.17, gg.ExpectedAverageValue(Customer{X: 0}), 0.005)
	require.InDelta(t, 71.46, gg.ExpectedAverageValue(Customer{X: 7, Zbar: 73.74}), 0.005)
}

func TestPAliveByHand(t *testing.T) {
	m := BGNBD{R: 0.25, Alpha: 4, A: 0.8, B: 2.5}
	require.Equal(t, 1.0, m.PAlive(Customer{X: 0, T: 30}), "no repeat purchase: cannot have dropped out")
	// 1 / (1 + a/(b+x−1) · ((α+T)/(α+t_x))^(r+x)) with x=2, t_x=10, T=30.
	want := 1 / (1 + 0.8/(2.5+1)*math.Pow(34.0/14.0, 2.25))
	require.InDelta(t, want, m.PAlive(Customer{X: 2, Tx: 10, T: 30}), 1e-12)
	// A purchase at the very end of the calibration: odds a/(b+x−1).
	require.InDelta(t, 1/(1+0.8/3.5), m.PAlive(Customer{X: 2, Tx: 30, T: 30}), 1e-12)
}

func TestCompressKeepsTotalsAndIsOrdered(t *testing.T) {
	cs := []Customer{{X: 1, Tx: 2, T: 3}, {X: 0, T: 5}, {X: 1, Tx: 2, T: 3}, {X: 0, T: 5}, {X: 0, T: 4}}
	tuples := Compress(cs)
	require.Equal(t, []Tuple{{Customer{X: 0, T: 4}, 1}, {Customer{X: 0, T: 5}, 2}, {Customer{X: 1, Tx: 2, T: 3}, 2}}, tuples)
}

func TestDegenerateInputsAreReported(t *testing.T) {
	_, err := FitBGNBD(Compress([]Customer{{X: 0, T: 3}, {X: 0, T: 5}, {X: 1, Tx: 1, T: 5, Zbar: 3}}), 10)
	require.ErrorIs(t, err, ErrDegenerate)
	require.ErrorContains(t, err, "1 customers with repeat purchases, at least 10")
	_, err = FitGammaGamma(Compress([]Customer{{X: 2, Tx: 1, T: 5, Zbar: 0}, {X: 3, Tx: 2, T: 5, Zbar: 0}}), 1)
	require.ErrorContains(t, err, "0 repeat customers with positive spend")
}
