package publish

import (
	"bytes"
	"cmp"
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
	"github.com/ckm-dev/ckm/transforms/knowledge"
	"github.com/ckm-dev/ckm/transforms/rfm"
	"github.com/ckm-dev/ckm/warehouse"
)

//go:embed report.html.tmpl
var reportTemplate string

var reportPage = template.Must(template.New("report").Funcs(template.FuncMap{
	"pct":    func(part, whole float64) string { return fmt.Sprintf("%.1f%%", 100*part/math.Max(whole, 1e-12)) },
	"num":    func(v float64) string { return groupThousands(fmt.Sprintf("%.0f", v)) },
	"fixed":  func(v float64, digits int) string { return fmt.Sprintf("%.*f", digits, v) },
	"mul100": func(v float64) float64 { return 100 * v },
	"at":     func(v []float64, i int) float64 { return v[i] },
	"shade":  shade,
}).Parse(reportTemplate))

// reportData is everything the report shows, read from the run's as_of partition. A section
// is shown only when its transform ran; NotRun names the others.
type reportData struct {
	Run          Run
	AsOf         string
	Customers    float64
	NotRun       []string
	RFMCustomers float64 // customers with an RFM score (buyers in the lookback)
	Segments     []segmentRow
	SegmentMap   template.HTML
	EmptyCells   string // why cells of the map are empty, when some are
	Tiers        []tierCell
	TierTotal    struct{ Customers, Current, Potential float64 }
	Stages       template.HTML
	Holdout      template.HTML
	Fits         []fitRow
	Knowledge    *knowledgeSection
	Changes      *changesSection // nil for a pipeline's first as_of
}

// knowledgeSection is the key-knowledge-source index's part of the report.
type knowledgeSection struct {
	Customers, Ranked, KeySources float64
	Classes                       []classRow
	TierNames                     []string
	Sources                       []sourceRow
	SourceKind                    string  // "key knowledge sources", or "highest ranked customers" when none is a key source
	AxisFrom                      float64 // the dimension bars start here: near the smallest value shown, so differences show
}

// classRow counts one class's customers by value tier ("" when the customer has no tier).
type classRow struct {
	Class   string
	ByTier  []float64
	Total   float64
	Ranked  bool // the class of ranked customers (all but insufficient_evidence)
	Summary bool // the totals row
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
	Bars                          []float64 // KV, W, AC as shares of the chart's axis, from AxisFrom to 1
}

// report renders the run's HTML report: static, self-contained, no network needed to view it.
func (p *publisher) report(ctx context.Context) ([]byte, error) {
	d := reportData{Run: p.run, AsOf: p.asOf, Customers: float64(p.manifest.Rows["customer_scores"])}
	steps := []struct {
		name, table string // the section, and the output its transform writes
		fn          func(context.Context, *reportData) error
	}{
		{"RFM segment map", "customer_rfm", p.segmentMap}, {"value tiers and lifecycle stages", "customer_value", p.tiers},
		{"lifecycle stages", "customer_value", p.stages}, {"CLV model fits", "customer_clv", p.fits},
		{"key knowledge sources", "customer_knowledge", p.keySources},
	}
	for _, s := range steps {
		if p.manifest.Rows[s.table] == 0 {
			if !slices.Contains(d.NotRun, s.name) && s.name != "lifecycle stages" {
				d.NotRun = append(d.NotRun, s.name)
			}
			continue
		}
		if err := s.fn(ctx, &d); err != nil {
			return nil, fmt.Errorf("report: %s: %w", s.name, err)
		}
	}
	if err := p.changes(ctx, &d); err != nil {
		return nil, fmt.Errorf("report: changes: %w", err)
	}
	if p.manifest.Rows["customer_clv"] > 0 {
		groups, err := p.holdout(ctx)
		if err != nil {
			return nil, fmt.Errorf("report: holdout: %w", err)
		}
		d.Holdout = holdoutChart(groups)
	}
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
	d.EmptyCells = emptyCellsNote(cells)
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

// emptyCellsNote says why cells of the RFM map are empty ("" when none is). A score nobody has
// comes from ties: customers with equal values share the score at the bottom of the range they
// span, so when most customers bought once, frequency has few scores.
func emptyCellsNote[C any](cells map[[2]int][]C) string {
	used := [2]map[int]bool{{}, {}}
	for rf := range cells {
		used[0][rf[0]], used[1][rf[1]] = true, true
	}
	var notes []string
	for dim, name := range []string{"recency", "frequency"} {
		var missing []string
		for s := 1; s <= 5; s++ {
			if !used[dim][s] {
				missing = append(missing, fmt.Sprint(s))
			}
		}
		if len(missing) > 0 {
			notes = append(notes, fmt.Sprintf("no customer has %s score %s", name, strings.Join(missing, ", ")))
		}
	}
	switch {
	case len(notes) > 0:
		return "Empty cells: " + strings.Join(notes, "; ") + ". Customers with equal values share one score, the lowest of the range they span " +
			"(1 + ⌊5 × (rank − 1) / n⌋), so a value most customers share, such as one purchase day, leaves the scores above it empty."
	case len(cells) < 25:
		return "Empty cells: no customer has that combination of recency and frequency scores."
	}
	return ""
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

// tierOrder is the value tiers in report order; "" is a customer without a tier.
var tierOrder = []string{"IV", "III", "II", "I", ""}

// keySources reads the class mix by value tier and lists the top key knowledge sources with
// their three dimensions.
func (p *publisher) keySources(ctx context.Context, d *reportData) error {
	k := &knowledgeSection{SourceKind: "key knowledge sources"}
	for _, tier := range tierOrder {
		k.TierNames = append(k.TierNames, cmp.Or(tier, "no tier"))
	}
	d.Knowledge = k
	byClass := map[string]*classRow{}
	err := p.query(ctx, `SELECT k.class, coalesce(v.value_tier, ''), count(*), count(k.rank), count(*) FILTER (k.is_key_source)
		FROM customer_knowledge k LEFT JOIN customer_value v USING (as_of, customer_id)
		WHERE k.as_of = ? GROUP BY ALL`, func(rows *sql.Rows) error {
		var class, tier string
		var n, ranked, key float64
		if err := rows.Scan(&class, &tier, &n, &ranked, &key); err != nil {
			return err
		}
		row := byClass[class]
		if row == nil {
			row = &classRow{Class: class, ByTier: make([]float64, len(tierOrder))}
			byClass[class] = row
		}
		row.ByTier[slices.Index(tierOrder, tier)] += n
		row.Total += n
		row.Ranked = row.Ranked || ranked > 0
		k.Customers += n
		k.Ranked += ranked
		k.KeySources += key
		return nil
	})
	if err != nil {
		return err
	}
	total := classRow{Class: "all customers", ByTier: make([]float64, len(tierOrder)), Summary: true}
	for _, class := range knowledge.Classes {
		if row := byClass[class]; row != nil {
			k.Classes = append(k.Classes, *row)
			for i, n := range row.ByTier {
				total.ByTier[i] += n
			}
			total.Total += row.Total
		}
	}
	k.Classes = append(k.Classes, total)
	for _, onlyKey := range []bool{true, false} {
		where := "rank IS NOT NULL"
		if onlyKey {
			where += " AND is_key_source"
		}
		err := p.query(ctx, `SELECT customer_id, rank, kksi, kv, w, ac, class, coalesce(top_factors, '') FROM customer_knowledge
			WHERE as_of = ? AND `+where+` ORDER BY rank, customer_id LIMIT 15`, func(rows *sql.Rows) error {
			var s sourceRow
			if err := rows.Scan(&s.CustomerID, &s.Rank, &s.KKSI, &s.KV, &s.W, &s.AC, &s.Class, &s.TopFactors); err != nil {
				return err
			}
			k.Sources = append(k.Sources, s)
			return nil
		})
		if err != nil || len(k.Sources) > 0 {
			break
		}
		k.SourceKind = "highest ranked customers (none is a key source)"
	}
	if err != nil {
		return err
	}
	// The bars run from a round value below the smallest shown to 1: top sources all score high,
	// and bars from 0 would hide how they differ.
	low := 1.0
	for _, s := range k.Sources {
		low = min(low, s.KV, s.W, s.AC)
	}
	k.AxisFrom = math.Max(0, math.Floor(low*10-0.5)/10)
	for i, s := range k.Sources {
		for _, v := range []float64{s.KV, s.W, s.AC} {
			k.Sources[i].Bars = append(k.Sources[i].Bars, (v-k.AxisFrom)/(1-k.AxisFrom))
		}
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

// holdout reads the run's BG/NBD holdout check (none when it made none), in clv_holdout's order.
func (p *publisher) holdout(ctx context.Context) ([]clv.HoldoutGroup, error) {
	var out []clv.HoldoutGroup
	err := p.query(ctx, `SELECT frequency, customers, expected_mean, actual_mean, mean_abs_error FROM clv_holdout
		WHERE as_of = ? AND run_id = `+warehouse.Quote(p.run.RunID)+` ORDER BY rowid`, func(rows *sql.Rows) error {
		var g clv.HoldoutGroup
		if err := rows.Scan(&g.Group, &g.Customers, &g.Expected, &g.Actual, &g.MeanAbsError); err != nil {
			return err
		}
		out = append(out, g)
		return nil
	})
	return out, err
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
