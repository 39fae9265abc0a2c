package publish_test

import (
	"context"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ckm-dev/ckm/internal/testutil"
)

// chromium finds a headless-capable Chromium: $CKM_CHROMIUM, else the usual names on PATH.
// Without one the test is skipped, saying how to get one, unless CKM_REQUIRE_CHROMIUM is set
// (CI sets it, and installs Chromium): then it fails.
func chromium(t *testing.T) string {
	if p := os.Getenv("CKM_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	const how = "no Chromium found, so the report was not rendered: install one (Debian: apt-get install chromium) or set CKM_CHROMIUM"
	if os.Getenv("CKM_REQUIRE_CHROMIUM") != "" {
		t.Fatal(how)
	}
	t.Skip(how)
	return ""
}

// headless runs Chromium on a file without network or profile, as the machine's probe does.
func headless(t *testing.T, chromium string, args ...string) []byte {
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + t.TempDir(), "--window-size=1200,2600"}
	out, err := exec.CommandContext(ctx, chromium, append(base, args...)...).Output()
	require.NoError(t, err, "chromium %v", args)
	return out
}

// renderedReport is what headless Chromium made of a report.
type renderedReport struct {
	html, dom string
	charts    int
}

// render runs a config's pipeline (for each earlier as_of, then asOf) and renders asOf's report
// in headless Chromium: every chart is laid out with a real size, nothing sticks out to the
// side, and the page is not blank.
func render(t *testing.T, config, pipeline, asOf string, earlier ...string) renderedReport {
	path := chromium(t)
	env := testutil.Open(t, config)
	for _, d := range append(earlier, asOf) {
		env.Run(t, pipeline, d)
	}
	report := filepath.Join(env.Config.Publish.Dir, "reports", asOf+".html")
	html, err := os.ReadFile(report)
	require.NoError(t, err)
	require.NotContains(t, string(html), "http://", "the report must not need the network")
	require.NotContains(t, string(html), "https://")

	dom := string(headless(t, path, "--dump-dom", "file://"+report))
	m := regexp.MustCompile(`data-charts="(\d+) charts, (\d+) laid out"`).FindStringSubmatch(dom)
	require.NotNil(t, m, "the page's script did not run")
	require.Equal(t, m[1], m[2], "every chart laid out with a real size")
	require.Contains(t, dom, `data-overflow="fits"`, "nothing wider than the window")
	charts, _ := strconv.Atoi(m[1])

	shot := filepath.Join(t.TempDir(), "report.png")
	headless(t, path, "--screenshot="+shot, "file://"+report)
	f, err := os.Open(shot)
	require.NoError(t, err)
	defer f.Close()
	img, err := png.Decode(f)
	require.NoError(t, err)
	b := img.Bounds()
	var colored, total int
	for y := b.Min.Y; y < b.Max.Y; y += 4 {
		for x := b.Min.X; x < b.Max.X; x += 4 {
			r, g, bl, _ := img.At(x, y).RGBA()
			total++
			if max(r, g, bl)-min(r, g, bl) > 0x2000 { // saturated: chart colours, not text or background
				colored++
			}
		}
	}
	require.Greater(t, float64(colored)/float64(total), 0.005, "screenshot shows no charts")
	t.Logf("rendered %s: %s, %.1f%% coloured pixels", filepath.Base(report), strings.TrimSpace(m[0]), 100*float64(colored)/float64(total))
	return renderedReport{html: string(html), dom: dom, charts: charts}
}

// headings lists the report's section headings.
func headings(html string) []string {
	var out []string
	for _, m := range regexp.MustCompile(`<h2>([^<]*)</h2>`).FindAllStringSubmatch(html, -1) {
		out = append(out, m[1])
	}
	return out
}

// The CDNOW report (with its holdout period, without the knowledge transform) renders from the
// file alone, with a point per calibration-frequency group for both series, and no heading
// over a section this pipeline has no data for.
func TestReportRendersInChromiumOnCDNOW(t *testing.T) {
	r := render(t, testutil.Example(t, "cdnow/config.yaml"), "cdnow", "1997-09-30")
	require.Equal(t, 3, r.charts, "segment map, lifecycle stages, holdout calibration")
	require.Len(t, regexp.MustCompile(`<circle [^>]*><title>actual,`).FindAllString(r.html, -1), 8, "groups 0..6 and 7+")
	require.Len(t, regexp.MustCompile(`<circle [^>]*><title>model \(BG/NBD\),`).FindAllString(r.html, -1), 8)
	require.Equal(t, []string{"RFM segment map", "Value tiers: current × potential value", "Lifecycle stages",
		"CLV model: BG/NBD holdout calibration and fits"}, headings(r.html))
	require.Contains(t, r.html, "Not in this run (the pipeline does not run its transform): key knowledge sources.")
	require.Contains(t, r.html, "Empty cells: no customer has frequency score 2.")
}

// On Olist almost everybody bought once: the RFM map says why its middle rows are empty, and
// the few ranked customers are shown with the class mix.
func TestReportRendersInChromiumOnOlist(t *testing.T) {
	r := render(t, testutil.Example(t, "olist/config.yaml"), "olist", "2018-08-31")
	require.Contains(t, r.html, "Empty cells: no customer has frequency score 2, 3, 4.")
	require.Contains(t, headings(r.html), "Knowledge sources by class and value tier")
	require.Regexp(t, `<tr class="total" data-class="all customers"><td>all customers</td>`, r.html)
}

// The sample's key sources all score high: their bars start near the smallest value shown, so
// the differences between them show, and the class mix has its totals. After a month's earlier
// run, the report also shows who moved since, its matrices within the window.
func TestReportRendersInChromiumOnTheSample(t *testing.T) {
	r := render(t, filepath.Join(testutil.RepoRoot(), "config.yaml"), "nightly", "2026-06-30", "2026-05-31")
	m := regexp.MustCompile(`their bars run from ([0-9.]+) to 1`).FindStringSubmatch(r.html)
	require.NotNil(t, m)
	from, err := strconv.ParseFloat(m[1], 64)
	require.NoError(t, err)
	require.Greater(t, from, 0.3, "the axis starts near the top sources' smallest dimension")
	require.Contains(t, r.html, `data-class="key_source"`)
	require.Contains(t, r.html, `data-class="insufficient_evidence"`)
	require.Equal(t, 6, len(headings(r.html))-1, "every section of a full pipeline")
	require.Contains(t, headings(r.html), "Who moved since 2026-05-31")
	require.Len(t, regexp.MustCompile(`<table id="transitions-`).FindAllString(r.html, -1), 3, "segments, tiers, stages")
}
