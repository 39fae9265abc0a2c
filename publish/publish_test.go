package publish_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ckm-dev/ckm/internal/testutil"
	"github.com/ckm-dev/ckm/publish"
	"github.com/ckm-dev/ckm/warehouse"
)

// sameRows asserts that query a and query b return the same multiset of rows, both ways.
func sameRows(t *testing.T, db *warehouse.Warehouse, a, b string) {
	t.Helper()
	for _, q := range []string{`SELECT count(*) FROM ((` + a + `) EXCEPT ALL (` + b + `))`, `SELECT count(*) FROM ((` + b + `) EXCEPT ALL (` + a + `))`} {
		var n int64
		require.NoError(t, db.DB().QueryRow(q).Scan(&n), q)
		require.Zero(t, n, q)
	}
}

func count(t *testing.T, db *warehouse.Warehouse, q string, args ...any) int64 {
	t.Helper()
	var n int64
	require.NoError(t, db.DB().QueryRow(q, args...).Scan(&n), q)
	return n
}

// customer_scores is published from each output's rows of the one as_of: the view filters the
// joins' merged as_of after its FULL JOINs, which neither DuckDB nor PostgreSQL pushes down, so
// it joined every as_of the warehouse keeps (at 10M customers, out of memory). The scoped query
// reads each output through a filter on as_of and gives the view's rows of that as_of.
func TestCustomerScoresArePublishedFromOneAsOfsRows(t *testing.T) {
	env := testutil.Open(t, filepath.Join(testutil.RepoRoot(), "config.yaml"))
	env.Run(t, "nightly", "2026-05-31")
	env.Run(t, "nightly", "2026-06-30")
	db := env.Warehouse
	var def string
	require.NoError(t, db.DB().QueryRow(`SELECT sql FROM duckdb_views() WHERE view_name = 'customer_scores'`).Scan(&def))
	body, err := publish.ViewBody(def)
	require.NoError(t, err)
	for _, asOf := range []string{"2026-05-31", "2026-06-30"} {
		scoped, err := publish.ScopedScores(body, "DATE '"+asOf+"'")
		require.NoError(t, err)
		sameRows(t, db, `SELECT * FROM customer_scores WHERE as_of = DATE '`+asOf+`'`, scoped)
		require.Positive(t, count(t, db, `SELECT count(*) FROM (`+scoped+`)`))

		var plan string
		require.NoError(t, db.DB().QueryRow(`EXPLAIN (FORMAT json) `+scoped).Scan(new(string), &plan))
		var nodes []planNode
		require.NoError(t, json.Unmarshal([]byte(plan), &nodes))
		filtered := map[string]string{}
		var walk func([]planNode)
		walk = func(ns []planNode) {
			for _, n := range ns {
				if n.Name == "SEQ_SCAN" {
					filtered[n.Extra.Table] = n.Extra.Filters
				}
				walk(n.Children)
			}
		}
		walk(nodes)
		for _, table := range []string{"customer_clv", "customer_rfm", "customer_knowledge", "customer_value"} {
			require.Contains(t, filtered, "ckm.main."+table, "%s is read", table)
			require.Contains(t, filtered["ckm.main."+table], "as_of='"+asOf+"'::DATE", "%s is read for %s alone", table, asOf)
		}
	}
}

// planNode is one operator of DuckDB's EXPLAIN (FORMAT json).
type planNode struct {
	Name     string     `json:"name"`
	Children []planNode `json:"children"`
	Extra    struct {
		Table   string `json:"Table"`
		Filters string `json:"Filters"`
	} `json:"extra_info"`
}

// Two as_of dates, a rerun of one and a backfill of an older one: every published Parquet
// partition holds exactly the warehouse's rows, latest/ and the snapshot hold the newest as_of
// only, and no temporary file is left behind.
func TestPublishedOutputsEqualTheWarehouse(t *testing.T) {
	env := testutil.Open(t, filepath.Join(testutil.RepoRoot(), "config.yaml"))
	dir := env.Config.Publish.Dir
	env.Run(t, "nightly", "2026-05-31")
	env.Run(t, "nightly", "2026-06-30")
	env.Run(t, "nightly", "2026-06-30") // rerun replaces its partition
	// An older date between the two: latest/ and the snapshot stay at 06-30, whose changes now
	// compare with 06-29 and are published again, in its partition, latest/, snapshot and report.
	env.Run(t, "nightly", "2026-06-29")
	db := env.Warehouse
	require.Contains(t, readReport(t, dir, "2026-06-30"), "Who moved since 2026-06-29")
	require.Contains(t, readReport(t, dir, "2026-06-29"), "Who moved since 2026-05-31")

	// BI tools see customers' names only when configured (publish.customer_columns).
	withheld := func(table string) string {
		if table == "customer_scores" {
			return " REPLACE (NULL::VARCHAR AS name)"
		}
		return ""
	}
	for _, table := range publish.Tables {
		for _, asOf := range []string{"2026-05-31", "2026-06-29", "2026-06-30"} {
			part := filepath.Join(dir, "parquet", table, "as_of="+asOf, "data.parquet")
			require.FileExists(t, part)
			sameRows(t, db, `SELECT * EXCLUDE (as_of)`+withheld(table)+` FROM `+table+` WHERE as_of = DATE '`+asOf+`'`,
				`SELECT * FROM read_parquet(`+warehouse.Quote(part)+`, hive_partitioning = false)`)
		}
		// Read as one hive-partitioned dataset, the way BI tools and DuckDB users do.
		glob := filepath.Join(dir, "parquet", table, "*", "*.parquet")
		require.Equal(t, count(t, db, `SELECT count(*) FROM `+table),
			count(t, db, `SELECT count(*) FROM read_parquet(`+warehouse.Quote(glob)+`, hive_partitioning = true)`), table)
		sameRows(t, db, `SELECT * EXCLUDE (as_of)`+withheld(table)+` FROM `+table+` WHERE as_of = DATE '2026-06-30'`,
			`SELECT * FROM read_parquet(`+warehouse.Quote(filepath.Join(dir, "latest", table+".parquet"))+`)`)
	}
	m, err := publish.ReadManifest(filepath.Join(dir, "latest"))
	require.NoError(t, err)
	require.Equal(t, "2026-06-30", m.AsOf)
	require.Equal(t, count(t, db, `SELECT count(*) FROM customer_rfm WHERE as_of = DATE '2026-06-30'`), m.Rows["customer_rfm"])

	// The snapshot, attached read-only, holds the same rows for the newest as_of only.
	snap := filepath.Join(dir, publish.SnapshotFile)
	_, err = db.DB().Exec(`ATTACH ` + warehouse.Quote(snap) + ` AS snap (READ_ONLY)`)
	require.NoError(t, err)
	for _, table := range publish.Tables {
		sameRows(t, db, `SELECT *`+withheld(table)+` FROM main.`+table+` WHERE as_of = DATE '2026-06-30'`, `SELECT * FROM snap.`+table)
	}
	var info string
	require.NoError(t, db.DB().QueryRow(`SELECT as_of::VARCHAR || ' ' || run_id FROM snap.snapshot_info`).Scan(&info))
	require.Equal(t, "2026-06-30 "+m.RunID, info)
	_, err = db.DB().Exec(`DETACH snap`)
	require.NoError(t, err)

	for _, asOf := range []string{"2026-05-31", "2026-06-29", "2026-06-30"} {
		require.FileExists(t, filepath.Join(dir, "reports", asOf+".html"))
	}
	left, err := os.ReadDir(filepath.Join(dir, ".tmp"))
	require.NoError(t, err)
	require.Empty(t, left, "temporary files left behind")
	// Catalog hygiene: no Arrow view of a run outlives it in the warehouse file.
	require.Zero(t, count(t, db, `SELECT count(*) FROM duckdb_views() WHERE view_name LIKE 'arrow_%'`))
}

// The report's figures are the warehouse's: tier counts and value shares, segment counts,
// lifecycle stages, and the top key sources in rank order.
func TestReportShowsTheRun(t *testing.T) {
	env := testutil.Open(t, filepath.Join(testutil.RepoRoot(), "config.yaml"))
	res := env.Run(t, "nightly", "2026-06-30")
	// Numbers are shown with thin spaces between thousands; compare them without.
	html := strings.ReplaceAll(readReport(t, env.Config.Publish.Dir, "2026-06-30"), "\u202f", "")
	db := env.Warehouse
	require.Contains(t, html, res.RunID)

	total := float64(count(t, db, `SELECT count(*) FROM customer_value WHERE as_of = DATE '2026-06-30'`))
	for _, tier := range []string{"I", "II", "III", "IV"} {
		n := count(t, db, `SELECT count(*) FROM customer_value WHERE as_of = DATE '2026-06-30' AND value_tier = ?`, tier)
		cell := regexp.MustCompile(`data-tier="` + tier + `"><b>` + tier + `</b>[^<]*<br>\s*([0-9]+) customers <span class="share">\(([0-9.]+)%\)`).FindStringSubmatch(html)
		require.NotNil(t, cell, "tier %s cell", tier)
		require.Equal(t, strconv.FormatInt(n, 10), cell[1], "tier %s customers", tier)
		require.Equal(t, fmtPct(float64(n)/total), cell[2], "tier %s share", tier)
	}
	var share float64
	require.NoError(t, db.DB().QueryRow(`SELECT 100 * sum(current_value) FILTER (value_tier = 'IV') / sum(current_value)
		FROM customer_value WHERE as_of = DATE '2026-06-30'`).Scan(&share))
	require.Regexp(t, `current value [0-9]+ <span class="share">\(`+regexp.QuoteMeta(fmtPct(share/100))+`%\)`, tierCell(t, html, "IV"))

	rows, err := db.DB().Query(`SELECT segment, count(*) FROM customer_rfm WHERE as_of = DATE '2026-06-30' GROUP BY ALL`)
	require.NoError(t, err)
	for rows.Next() {
		var seg string
		var n int64
		require.NoError(t, rows.Scan(&seg, &n))
		require.Regexp(t, regexp.QuoteMeta(strings.ReplaceAll(seg, "'", "&#39;"))+`</td><td>`+strconv.FormatInt(n, 10)+`</td>`, html, seg)
	}
	require.NoError(t, rows.Err())
	for _, stage := range []string{"exploration", "formation", "stability", "decline"} {
		n := count(t, db, `SELECT count(*) FROM customer_value WHERE as_of = DATE '2026-06-30' AND lifecycle_stage = ?`, stage)
		require.Contains(t, html, `class="axis">`+stage+`</text>`)
		require.Contains(t, html, `class="axis">`+strconv.FormatInt(n, 10)+`</text>`, stage)
	}
	var top []string
	keyRows, err := db.DB().Query(`SELECT customer_id FROM customer_knowledge WHERE as_of = DATE '2026-06-30' AND is_key_source ORDER BY rank LIMIT 15`)
	require.NoError(t, err)
	for keyRows.Next() {
		var id string
		require.NoError(t, keyRows.Scan(&id))
		top = append(top, id)
	}
	require.NotEmpty(t, top, "the sample plants key sources")
	var shown []string
	for _, m := range regexp.MustCompile(`<tr><td class="id" title="C[0-9]+">(C[0-9]+)</td><td>[0-9]+</td>`).FindAllStringSubmatch(html, -1) {
		shown = append(shown, m[1])
	}
	require.Equal(t, top, shown)
	// The class mix: each class's customers, and all of them.
	classRows, err := db.DB().Query(`SELECT class, count(*) FROM customer_knowledge WHERE as_of = DATE '2026-06-30' GROUP BY ALL
		UNION ALL SELECT 'all customers', count(*) FROM customer_knowledge WHERE as_of = DATE '2026-06-30'`)
	require.NoError(t, err)
	for classRows.Next() {
		var class string
		var n int64
		require.NoError(t, classRows.Scan(&class, &n))
		row := regexp.MustCompile(`data-class="` + class + `">(.*)</tr>`).FindStringSubmatch(html)
		require.NotNil(t, row, class)
		cells := regexp.MustCompile(`<td[^>]*>([^<]*)</td>`).FindAllStringSubmatch(row[1], -1)
		require.Equal(t, strconv.FormatInt(n, 10), cells[len(cells)-2][1], "%s total", class)
	}
	require.NoError(t, classRows.Err())
	require.Contains(t, html, "No holdout check in this run")
}

func readReport(t *testing.T, dir, asOf string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "reports", asOf+".html"))
	require.NoError(t, err)
	return string(b)
}

func tierCell(t *testing.T, html, tier string) string {
	t.Helper()
	i := strings.Index(html, `data-tier="`+tier+`"`)
	require.GreaterOrEqual(t, i, 0)
	j := strings.Index(html[i:], "</div>")
	return html[i : i+j]
}

func fmtPct(f float64) string { return fmt.Sprintf("%.1f", 100*f) }

// The report's "who moved" section is the warehouse's: each from × to cell of the tier and
// stage matrices, the new, lost and moved counts, and the notable moves by CLV.
func TestReportShowsWhoMoved(t *testing.T) {
	env := testutil.Open(t, filepath.Join(testutil.RepoRoot(), "config.yaml"))
	env.Run(t, "nightly", "2026-05-31")
	require.NotContains(t, readReport(t, env.Config.Publish.Dir, "2026-05-31"), "Who moved", "the first as_of has no previous one")
	env.Run(t, "nightly", "2026-06-30")
	html := strings.ReplaceAll(readReport(t, env.Config.Publish.Dir, "2026-06-30"), "\u202f", "")
	db := env.Warehouse
	require.Contains(t, html, "Who moved since 2026-05-31")
	require.NotContains(t, html, "ZgotmplZ", "html/template blanked a value it found unsafe")
	require.Regexp(t, `<td style="background:rgba\(56,108,176,0\.[0-9]+\)">`, html, "moves are shaded")

	for _, dim := range []string{"rfm_segment", "value_tier", "lifecycle_stage"} {
		table := regexp.MustCompile(`(?s)<table id="transitions-` + dim + `".*?</table>`).FindString(html)
		require.NotEmpty(t, table, dim)
		header := regexp.MustCompile(`<th>([^<]*)</th>`).FindAllStringSubmatch(regexp.MustCompile(`(?s)<tr>.*?</tr>`).FindString(table), -1)
		var shown int64
		for _, row := range regexp.MustCompile(`<tr><th class="text">([^<]*)</th>(.*)</tr>`).FindAllStringSubmatch(table, -1) {
			cells := regexp.MustCompile(`<td[^>]*>([^<]*)</td>`).FindAllStringSubmatch(row[2], -1)
			require.Len(t, cells, len(header)-1, dim)
			for i, cell := range cells {
				from, to := html2text(row[1]), html2text(header[i+1][1])
				want := count(t, db, `SELECT coalesce(sum(customers), 0) FROM segment_transitions WHERE as_of = DATE '2026-06-30' AND dimension = ?
					AND coalesce(from_value, '—') = ? AND coalesce(to_value, '—') = ?`, dim, from, to)
				got := int64(0)
				if cell[1] != "" {
					got, _ = strconv.ParseInt(cell[1], 10, 64)
				}
				require.Equal(t, want, got, "%s %s → %s", dim, from, to)
				shown += got
			}
		}
		require.Equal(t, count(t, db, `SELECT sum(customers) FROM segment_transitions WHERE as_of = DATE '2026-06-30' AND dimension = ?`, dim), shown, dim)
	}
	counts := regexp.MustCompile(`id="moves">([0-9]+) new customers · ([0-9]+) lost [^·]*· ([0-9]+) moved`).FindStringSubmatch(html)
	require.NotNil(t, counts)
	for i, change := range []string{"new", "lost", "moved"} {
		require.Equal(t, strconv.FormatInt(count(t, db, `SELECT count(DISTINCT customer_id) FROM customer_changes WHERE as_of = DATE '2026-06-30' AND change = ?`, change), 10), counts[i+1], change)
	}

	// Notable: leaving or reaching tier IV, or a key source entering decline, by CLV.
	rows, err := db.DB().Query(`SELECT m.customer_id FROM customer_changes m JOIN customer_clv l USING (as_of, customer_id)
		JOIN customer_knowledge k USING (as_of, customer_id)
		WHERE m.as_of = DATE '2026-06-30' AND ((m.dimension = 'value_tier' AND 'IV' IN (m.from_value, m.to_value))
		   OR (m.dimension = 'lifecycle_stage' AND m.to_value = 'decline' AND k.is_key_source))
		ORDER BY l.clv DESC, m.customer_id LIMIT 25`)
	require.NoError(t, err)
	var want []string
	for rows.Next() {
		var id string
		require.NoError(t, rows.Scan(&id))
		want = append(want, id)
	}
	require.NoError(t, rows.Err())
	require.NotEmpty(t, want, "the sample has notable moves")
	notable := regexp.MustCompile(`(?s)<table id="notable-moves">.*?</table>`).FindString(html)
	var shown []string
	for _, m := range regexp.MustCompile(`<td class="id" title="[^"]*">([^<]*)</td>`).FindAllStringSubmatch(notable, -1) {
		shown = append(shown, m[1])
	}
	require.Equal(t, want, shown)
}

// html2text undoes the escaping of a label in the report.
func html2text(s string) string { return strings.NewReplacer("&#39;", "'", "&amp;", "&").Replace(s) }
