package publish_test

import (
	"context"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ckm-dev/ckm/internal/testutil"
)

// chromium finds a headless-capable Chromium: $CKM_CHROMIUM, else the usual names on PATH.
// `make test` installs Debian's chromium when it is missing.
func chromium(t *testing.T) string {
	if p := os.Getenv("CKM_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no Chromium found: install Debian's chromium package (make test does when it can) or set CKM_CHROMIUM")
	return ""
}

// headless runs Chromium on a file without network or profile, as the machine's probe does.
func headless(t *testing.T, args ...string) []byte {
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + t.TempDir(), "--window-size=1200,2600"}
	out, err := exec.CommandContext(ctx, chromium(t), append(base, args...)...).Output()
	require.NoError(t, err, "chromium %v", args)
	return out
}

// The CDNOW report (with its holdout period) renders in headless Chromium from the file alone:
// every chart is laid out with a real size and the page is not blank.
func TestReportRendersInChromium(t *testing.T) {
	env := testutil.Open(t, filepath.Join(testutil.RepoRoot(), "examples", "cdnow", "config.yaml"))
	res := env.Run(t, "cdnow", "1997-09-30")
	require.NotEmpty(t, res.Holdout)
	report := filepath.Join(env.Config.Publish.Dir, "reports", "1997-09-30.html")
	html, err := os.ReadFile(report)
	require.NoError(t, err)
	require.NotContains(t, string(html), "http://", "the report must not need the network")
	require.NotContains(t, string(html), "https://")
	// The calibration chart has a point per calibration-frequency group, for both series.
	groups := len(res.Holdout) - 1 // less the "all" row
	require.Len(t, regexp.MustCompile(`<circle [^>]*><title>actual,`).FindAll(html, -1), groups)
	require.Len(t, regexp.MustCompile(`<circle [^>]*><title>model \(BG/NBD\),`).FindAll(html, -1), groups)

	dom := string(headless(t, "--dump-dom", "file://"+report))
	m := regexp.MustCompile(`data-charts="(\d+) charts, (\d+) laid out"`).FindStringSubmatch(dom)
	require.NotNil(t, m, "the page's script did not run")
	require.Equal(t, "3", m[1], "segment map, lifecycle stages, holdout calibration")
	require.Equal(t, m[1], m[2], "every chart laid out with a real size")

	shot := filepath.Join(t.TempDir(), "report.png")
	headless(t, "--screenshot="+shot, "file://"+report)
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
}
