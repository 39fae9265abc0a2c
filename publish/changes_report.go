package publish

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"html/template"
	"math"
	"slices"

	"github.com/ckm-dev/ckm/transforms/rfm"
)

// changesSection is the report's "who moved" part: from × to matrices against the previous
// as_of and the moves that ask for action.
type changesSection struct {
	Previous         string
	New, Lost, Moved float64
	Matrices         []transitionMatrix
	Notable          []notableMove
	NotableTotal     float64
	More             bool // more notable moves than listed
}

type transitionMatrix struct {
	ID, Title string
	To        []string // column labels; "—" is "not scored then"
	Rows      []transitionRow
}

type transitionRow struct {
	From  string
	Cells []transitionCell
}

type transitionCell struct {
	Customers float64
	Stay      bool    // the diagonal: customers who kept their value
	Shade     float64 // 0..1: the cell's share of its row, for its colour
}

type notableMove struct {
	CustomerID, Move, Why string
	CLV                   sql.NullFloat64
}

// notScored labels a NULL side of a transition: a new or lost customer, or one not classed.
const notScored = "—"

// transitionDimensions are the matrices shown, each with its values in reading order.
func transitionDimensions() []struct {
	dimension, title string
	order            []string
} {
	var segments []string
	for _, s := range rfm.DefaultSegments() {
		segments = append(segments, s.Name)
	}
	return []struct {
		dimension, title string
		order            []string
	}{
		{"rfm_segment", "RFM segments", segments},
		{"value_tier", "Value tiers", tierOrder[:4]},
		{"lifecycle_stage", "Lifecycle stages", stageOrder},
	}
}

// notableMoves are the moves listed by name: those a key-account team acts on.
const notableMoves = `SELECT c.customer_id, c.dimension || ': ' || c.from_value || ' → ' || c.to_value,
	CASE WHEN c.dimension = 'value_tier' AND c.from_value = 'IV' THEN 'left the top value tier'
	     WHEN c.dimension = 'value_tier' THEN 'rose to the top value tier'
	     ELSE 'key knowledge source entering decline' END, l.clv, count(*) OVER ()
	FROM customer_changes c
	LEFT JOIN customer_clv l USING (as_of, customer_id)
	LEFT JOIN customer_knowledge k USING (as_of, customer_id)
	WHERE c.as_of = ? AND c.change = 'moved' AND (
	      (c.dimension = 'value_tier' AND (c.from_value = 'IV' OR c.to_value = 'IV'))
	   OR (c.dimension = 'lifecycle_stage' AND c.to_value = 'decline' AND k.is_key_source))
	ORDER BY l.clv DESC NULLS LAST, c.customer_id LIMIT 25`

// changes reads the as_of's transitions and notable moves; nil when the as_of is the first.
func (p *publisher) changes(ctx context.Context, d *reportData) error {
	cells := map[string]map[[2]string]float64{}
	c := &changesSection{}
	err := p.query(ctx, `SELECT dimension, coalesce(from_value, '`+notScored+`'), coalesce(to_value, '`+notScored+`'), customers, previous_as_of::VARCHAR
		FROM segment_transitions WHERE as_of = ?`, func(rows *sql.Rows) error {
		var dim, from, to string
		var n float64
		if err := rows.Scan(&dim, &from, &to, &n, &c.Previous); err != nil {
			return err
		}
		if cells[dim] == nil {
			cells[dim] = map[[2]string]float64{}
		}
		cells[dim][[2]string{from, to}] = n
		return nil
	})
	if err != nil || c.Previous == "" {
		return err
	}
	err = p.query(ctx, `SELECT change, count(DISTINCT customer_id) FROM customer_changes WHERE as_of = ? GROUP BY ALL`, func(rows *sql.Rows) error {
		var change string
		var n float64
		if err := rows.Scan(&change, &n); err != nil {
			return err
		}
		switch change {
		case "new":
			c.New = n
		case "lost":
			c.Lost = n
		case "moved":
			c.Moved = n
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, dim := range transitionDimensions() {
		if m, ok := transitionMatrixOf(dim.dimension, dim.title, dim.order, cells[dim.dimension]); ok {
			c.Matrices = append(c.Matrices, m)
		}
	}
	err = p.query(ctx, notableMoves, func(rows *sql.Rows) error {
		var m notableMove
		if err := rows.Scan(&m.CustomerID, &m.Move, &m.Why, &m.CLV, &c.NotableTotal); err != nil {
			return err
		}
		c.Notable = append(c.Notable, m)
		return nil
	})
	c.More = c.NotableTotal > float64(len(c.Notable))
	d.Changes = c
	return err
}

// transitionMatrixOf lays out one dimension's cells: known values in order, then any others
// sorted, then "not scored".
func transitionMatrixOf(dimension, title string, order []string, cells map[[2]string]float64) (transitionMatrix, bool) {
	if len(cells) == 0 {
		return transitionMatrix{}, false
	}
	seen := map[string]bool{}
	for k := range cells {
		seen[k[0]], seen[k[1]] = true, true
	}
	var labels []string
	for _, v := range order {
		if seen[v] {
			labels = append(labels, v)
			delete(seen, v)
		}
	}
	hasNone := seen[notScored]
	delete(seen, notScored)
	var others []string
	for v := range seen {
		others = append(others, v)
	}
	slices.Sort(others)
	labels = append(labels, others...)
	if hasNone {
		labels = append(labels, notScored)
	}
	m := transitionMatrix{ID: "transitions-" + dimension, Title: title, To: labels}
	for _, from := range labels {
		row := transitionRow{From: from}
		var total float64
		for _, to := range labels {
			total += cells[[2]string{from, to}]
		}
		if total == 0 {
			continue
		}
		for _, to := range labels {
			n := cells[[2]string{from, to}]
			row.Cells = append(row.Cells, transitionCell{Customers: n, Stay: from == to, Shade: math.Sqrt(n / cmp.Or(total, 1))})
		}
		m.Rows = append(m.Rows, row)
	}
	return m, true
}

// shade is a cell's background: blue for moves, grey for stays, stronger for a larger share.
// It is CSS ckm writes from numbers (html/template would otherwise blank it as unsafe).
func shade(c transitionCell) template.CSS {
	switch {
	case c.Customers == 0:
		return "transparent"
	case c.Stay:
		return template.CSS(fmt.Sprintf("rgba(120,120,120,%.2f)", 0.08+0.3*c.Shade))
	}
	return template.CSS(fmt.Sprintf("rgba(56,108,176,%.2f)", 0.12+0.6*c.Shade))
}
