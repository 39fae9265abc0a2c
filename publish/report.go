package publish

import (
	"bytes"
	"context"
	"database/sql"
	_ "embed"
	"fmt"
	"html/template"
	"maps"
	"math"
	"slices"
	"strings"

	"github.com/ckm-dev/ckm/transforms/clv"
	"github.com/ckm-dev/ckm/transforms/rfm"
)

//go:embed report.html.tmpl
var reportTemplate string

var reportPage = template.Must(template.New("report").Funcs(template.FuncMap{
	"pct":    func(part, whole float64) string { return fmt.Sprintf("%.1f%%", 100*part/math.Max(whole, 1e-12)) },
	"num":    func(v float64) string { return groupThousands(fmt.Sprintf("%.0f", v)) },
	"fixed":  func(v float64, digits int) string { return fmt.Sprintf("%.*f", digits, v) },
	"mul100": func(v float64) float64 { return 100 * v },
}).Parse(reportTemplate))

// reportData is everything the report shows, read from the run's as_of partition.
type reportData struct {
	Run          Run
	AsOf         string
	Customers    float64
	RFMCustomers float64 // customers with an RFM score (buyers in the lookback)
	Segments     []segmentRow
	SegmentMap   template.HTML
	Tiers        []tierCell
	TierTotal    struct{ Customers, Current, Potential float64 }
	Stages       template.HTML
	Holdout      template.HTML
	Fits         []fitRow
	Sources      []sourceRow
	SourceKind   string // "key sources" or "highest ranked customers" when none is a key source
}

type segmentRow struct {
	Name     string
	Color    string
	Count    float64
	Monetary float64
}

type tierCell struct {
	Tier, Label                   string
	Customers, Current, Potential float64
}

type fitRow struct {
	Model, Parameter   string
	Estimate, StdError sql.NullFloat64
	Converged          bool
}

type sourceRow struct {
	CustomerID, Class, TopFactors string
	Rank                          int64
	KKSI, KV, W, AC               float64
}

// report renders the run's HTML report: static, self-contained, no network needed to view it.
func (p *publisher) report(ctx context.Context) ([]byte, error) {
	d := reportData{Run: p.run, AsOf: p.asOf, Customers: float64(p.manifest.Rows["customer_scores"])}
	steps := []struct {
		name string
		fn   func(context.Context, *reportData) error
	}{
		{"RFM segment map", p.segmentMap}, {"value tiers", p.tiers}, {"lifecycle stages", p.stages},
		{"model fits", p.fits}, {"key knowledge sources", p.keySources},
	}
	for _, s := range steps {
		if err := s.fn(ctx, &d); err != nil {
			return nil, fmt.Errorf("report: %s: %w", s.name, err)
		}
	}
	d.Holdout = holdoutChart(p.run.Holdout)
	var buf bytes.Buffer
	if err := reportPage.Execute(&buf, d); err != nil {
		return nil, fmt.Errorf("report: render: %w", err)
	}
	return buf.Bytes(), nil
}

// query runs q with the as_of bound and calls scan for every row.
func (p *publisher) query(ctx context.Context, q string, scan func(*sql.Rows) error) error {
	rows, err := p.conn.QueryContext(ctx, q, p.run.AsOf)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := scan(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}

// palette runs from the best RFM segments to the worst, in the order of rfm.DefaultSegments,
// so a segment keeps its colour from run to run; custom segments take the colours after.
var palette = []string{"#1a9850", "#66bd63", "#a6d96a", "#3288bd", "#66c2a5", "#fee08b", "#fdae61", "#d73027", "#f46d43", "#878787",
	"#5e4fa2", "#9e0142", "#bababa", "#e6f598", "#abdda4"}

// segmentMap draws the classic RFM map: recency score across, frequency score up, each cell
// coloured by its main segment and labelled with its customers.
func (p *publisher) segmentMap(ctx context.Context, d *reportData) error {
	type cell struct {
		segment string
		n       float64
	}
	cells := map[[2]int][]cell{}
	totals := map[string]*segmentRow{}
	err := p.query(ctx, `SELECT r_score, f_score, segment, count(*), sum(monetary) FROM customer_rfm
		WHERE as_of = ? GROUP BY ALL ORDER BY ALL`, func(rows *sql.Rows) error {
		var r, f int
		var seg string
		var n, m float64
		if err := rows.Scan(&r, &f, &seg, &n, &m); err != nil {
			return err
		}
		cells[[2]int{r, f}] = append(cells[[2]int{r, f}], cell{seg, n})
		if totals[seg] == nil {
			totals[seg] = &segmentRow{Name: seg}
		}
		totals[seg].Count += n
		totals[seg].Monetary += m
		d.RFMCustomers += n
		return nil
	})
	if err != nil {
		return err
	}
	names := slices.Sorted(maps.Keys(totals))
	color := map[string]string{}
	for i, seg := range rfm.DefaultSegments() {
		color[seg.Name] = palette[i]
	}
	next := len(color)
	for _, n := range names {
		if _, ok := color[n]; !ok {
			color[n] = palette[next%len(palette)]
			next++
		}
		totals[n].Color = color[n]
		d.Segments = append(d.Segments, *totals[n])
	}
	slices.SortFunc(d.Segments, func(a, b segmentRow) int { return int(b.Count - a.Count) })
	const size, pad = 64, 34
	var svg strings.Builder
	fmt.Fprintf(&svg, `<svg class="chart" viewBox="0 0 %d %d" width="%d" height="%d" role="img" aria-label="RFM segment map">`,
		pad+5*size+10, 5*size+pad+10, pad+5*size+10, 5*size+pad+10)
	for r := 1; r <= 5; r++ {
		for f := 1; f <= 5; f++ {
			x, y := pad+(r-1)*size, (5-f)*size
			cs := cells[[2]int{r, f}]
			fill, label, total := "#f2f2f2", "", 0.0
			if len(cs) > 0 {
				main := slices.MaxFunc(cs, func(a, b cell) int { return int(a.n - b.n) })
				fill, label = color[main.segment], main.segment
				for _, c := range cs {
					total += c.n
				}
			}
			fmt.Fprintf(&svg, `<rect x="%d" y="%d" width="%d" height="%d" fill="%s" stroke="#fff"><title>R%d F%d: %s, %.0f customers</title></rect>`,
				x, y, size, size, fill, r, f, template.HTMLEscapeString(label), total)
			if total > 0 {
				fmt.Fprintf(&svg, `<text x="%d" y="%d" text-anchor="middle" class="cell">%s</text>`, x+size/2, y+size/2+4, groupThousands(fmt.Sprintf("%.0f", total)))
			}
		}
	}
	for i := 1; i <= 5; i++ {
		fmt.Fprintf(&svg, `<text x="%d" y="%d" text-anchor="middle" class="axis">%d</text>`, pad+(i-1)*size+size/2, 5*size+16, i)
		fmt.Fprintf(&svg, `<text x="%d" y="%d" text-anchor="end" class="axis">%d</text>`, pad-8, (5-i)*size+size/2+4, i)
	}
	fmt.Fprintf(&svg, `<text x="%d" y="%d" text-anchor="middle" class="axis">recency score →</text>`, pad+5*size/2, 5*size+32)
	fmt.Fprintf(&svg, `<text x="10" y="%d" class="axis" transform="rotate(-90 10 %d)" text-anchor="middle">frequency score →</text></svg>`, 5*size/2, 5*size/2)
	d.SegmentMap = template.HTML(svg.String())
	return nil
}

// tiers reads the current × potential value matrix.
func (p *publisher) tiers(ctx context.Context, d *reportData) error {
	byTier := map[string]*tierCell{
		"III": {Tier: "III", Label: "high current, low potential"}, "IV": {Tier: "IV", Label: "high current, high potential"},
		"I": {Tier: "I", Label: "low current, low potential"}, "II": {Tier: "II", Label: "low current, high potential"},
	}
	err := p.query(ctx, `SELECT value_tier, count(*), sum(current_value), sum(potential_value) FROM customer_value
		WHERE as_of = ? GROUP BY ALL`, func(rows *sql.Rows) error {
		var tier string
		var n, cur, pot float64
		if err := rows.Scan(&tier, &n, &cur, &pot); err != nil {
			return err
		}
		if c := byTier[tier]; c != nil {
			c.Customers, c.Current, c.Potential = n, cur, pot
		}
		d.TierTotal.Customers += n
		d.TierTotal.Current += cur
		d.TierTotal.Potential += pot
		return nil
	})
	for _, t := range []string{"III", "IV", "I", "II"} { // the matrix read row by row, high current on top
		d.Tiers = append(d.Tiers, *byTier[t])
	}
	return err
}

var stageOrder = []string{"exploration", "formation", "stability", "decline"}

// stages draws customers per lifecycle stage as bars.
func (p *publisher) stages(ctx context.Context, d *reportData) error {
	counts := map[string]float64{}
	err := p.query(ctx, `SELECT lifecycle_stage, count(*) FROM customer_value WHERE as_of = ? GROUP BY ALL`, func(rows *sql.Rows) error {
		var s string
		var n float64
		if err := rows.Scan(&s, &n); err != nil {
			return err
		}
		counts[s] = n
		return nil
	})
	if err != nil {
		return err
	}
	var bars []bar
	for _, s := range stageOrder {
		bars = append(bars, bar{Label: s, Value: counts[s], Color: "#386cb0"})
	}
	d.Stages = barChart("customers per lifecycle stage", bars)
	return nil
}

func (p *publisher) fits(ctx context.Context, d *reportData) error {
	return p.query(ctx, `SELECT model, parameter, estimate, std_error, converged FROM model_fits
		WHERE as_of = ? AND model IN ('bgnbd', 'gamma_gamma') ORDER BY model, parameter`, func(rows *sql.Rows) error {
		var f fitRow
		if err := rows.Scan(&f.Model, &f.Parameter, &f.Estimate, &f.StdError, &f.Converged); err != nil {
			return err
		}
		d.Fits = append(d.Fits, f)
		return nil
	})
}

// keySources lists the top key knowledge sources with their three factors.
func (p *publisher) keySources(ctx context.Context, d *reportData) error {
	d.SourceKind = "key knowledge sources"
	for _, onlyKey := range []bool{true, false} {
		where := "rank IS NOT NULL"
		if onlyKey {
			where += " AND is_key_source"
		}
		err := p.query(ctx, `SELECT customer_id, rank, kksi, kv, w, ac, class, coalesce(top_factors, '') FROM customer_knowledge
			WHERE as_of = ? AND `+where+` ORDER BY rank LIMIT 15`, func(rows *sql.Rows) error {
			var s sourceRow
			if err := rows.Scan(&s.CustomerID, &s.Rank, &s.KKSI, &s.KV, &s.W, &s.AC, &s.Class, &s.TopFactors); err != nil {
				return err
			}
			d.Sources = append(d.Sources, s)
			return nil
		})
		if err != nil || len(d.Sources) > 0 {
			return err
		}
		d.SourceKind = "highest ranked customers (none is a key source)"
	}
	return nil
}

type bar struct {
	Label string
	Value float64
	Color string
}

// barChart draws horizontal bars with their values.
func barChart(title string, bars []bar) template.HTML {
	const width, rowH, labelW = 520, 30, 120
	top := 0.0
	for _, b := range bars {
		top = math.Max(top, b.Value)
	}
	var svg strings.Builder
	fmt.Fprintf(&svg, `<svg class="chart" viewBox="0 0 %d %d" width="%d" height="%d" role="img" aria-label="%s">`,
		width, len(bars)*rowH+10, width, len(bars)*rowH+10, template.HTMLEscapeString(title))
	for i, b := range bars {
		w := 0.0
		if top > 0 {
			w = (width - labelW - 80) * b.Value / top
		}
		y := i*rowH + 5
		fmt.Fprintf(&svg, `<text x="%d" y="%d" text-anchor="end" class="axis">%s</text>`, labelW-8, y+18, template.HTMLEscapeString(b.Label))
		fmt.Fprintf(&svg, `<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>`, labelW, y+4, w, rowH-10, b.Color)
		fmt.Fprintf(&svg, `<text x="%.1f" y="%d" class="axis">%s</text>`, float64(labelW)+w+6, y+18, groupThousands(fmt.Sprintf("%.0f", b.Value)))
	}
	svg.WriteString(`</svg>`)
	return template.HTML(svg.String())
}

// holdoutChart draws the BG/NBD calibration check: by purchases in the calibration period,
// the mean purchases predicted and seen in the holdout period.
func holdoutChart(groups []clv.HoldoutGroup) template.HTML {
	var gs []clv.HoldoutGroup
	for _, g := range groups {
		if g.Group != "all" {
			gs = append(gs, g)
		}
	}
	if len(gs) == 0 {
		return ""
	}
	const width, height, left, bottom = 560, 300, 50, 40
	top := 0.0
	for _, g := range gs {
		top = math.Max(top, math.Max(g.Expected, g.Actual))
	}
	top = math.Ceil(top*1.1*2) / 2
	x := func(i int) float64 { return left + 20 + float64(i)*float64(width-left-40)/float64(max(len(gs)-1, 1)) }
	y := func(v float64) float64 { return float64(height-bottom) - v/top*float64(height-bottom-10) }
	var svg strings.Builder
	fmt.Fprintf(&svg, `<svg class="chart" viewBox="0 0 %d %d" width="%d" height="%d" role="img" aria-label="BG/NBD holdout calibration">`, width, height+20, width, height+20)
	for i := 0; i <= 4; i++ {
		v := top * float64(i) / 4
		fmt.Fprintf(&svg, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" class="grid"/><text x="%d" y="%.1f" text-anchor="end" class="axis">%.2f</text>`,
			left, width-10, y(v), y(v), left-6, y(v)+4, v)
	}
	for _, series := range []struct {
		name, color string
		value       func(clv.HoldoutGroup) float64
	}{
		{"actual", "#d95f02", func(g clv.HoldoutGroup) float64 { return g.Actual }},
		{"model (BG/NBD)", "#386cb0", func(g clv.HoldoutGroup) float64 { return g.Expected }},
	} {
		var pts []string
		for i, g := range gs {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(i), y(series.value(g))))
			fmt.Fprintf(&svg, `<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"><title>%s, %s purchases in calibration: %.3f (%d customers)</title></circle>`,
				x(i), y(series.value(g)), series.color, series.name, g.Group, series.value(g), g.Customers)
		}
		fmt.Fprintf(&svg, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>`, strings.Join(pts, " "), series.color)
	}
	for i, g := range gs {
		fmt.Fprintf(&svg, `<text x="%.1f" y="%d" text-anchor="middle" class="axis">%s</text>`, x(i), height-bottom+18, g.Group)
	}
	fmt.Fprintf(&svg, `<text x="%d" y="%d" text-anchor="middle" class="axis">purchases in the calibration period</text>`, (width+left)/2, height-bottom+36)
	fmt.Fprintf(&svg, `<rect x="%d" y="8" width="12" height="3" fill="#d95f02"/><text x="%d" y="14" class="axis">actual</text>`, left+10, left+28)
	fmt.Fprintf(&svg, `<rect x="%d" y="24" width="12" height="3" fill="#386cb0"/><text x="%d" y="30" class="axis">model (BG/NBD)</text></svg>`, left+10, left+28)
	return template.HTML(svg.String())
}

// groupThousands puts thin spaces between thousands of an integer string.
func groupThousands(s string) string {
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteString("\u202f")
		}
		b.WriteRune(r)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}
