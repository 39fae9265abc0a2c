package pipelines

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/ckm-dev/ckm/publish"
	"github.com/ckm-dev/ckm/warehouse"
)

// changeDimensions are what customer_changes follows, each read from the output that holds it.
var changeDimensions = []struct{ name, table, column string }{
	{"rfm_segment", "customer_rfm", "segment"},
	{"value_tier", "customer_value", "value_tier"},
	{"lifecycle_stage", "customer_value", "lifecycle_stage"},
	{"knowledge_class", "customer_knowledge", "class"},
}

// recordChanges computes customer_changes and segment_transitions for asOf against the
// pipeline's previous successful as_of, and again for the next one, which compares against
// asOf: a rerun or backfill of an older date changes what the next date moved from. The caller
// holds the transaction that records the run's success, so the changes commit with it.
func recordChanges(ctx context.Context, conn *warehouse.Conn, pipeline string, asOf time.Time) error {
	if err := computeChanges(ctx, conn, pipeline, asOf); err != nil {
		return err
	}
	next, err := adjacentAsOf(ctx, conn, pipeline, asOf, nextAsOf)
	if err != nil || next == nil {
		return err
	}
	return computeChanges(ctx, conn, pipeline, *next)
}

// Which neighbour of an as_of adjacentAsOf finds.
const (
	previousAsOf = false
	nextAsOf     = true
)

// adjacentAsOf is the pipeline's nearest as_of with a successful run before or after asOf;
// nil when there is none. An aggregate always answers one row (NULL when none matched).
func adjacentAsOf(ctx context.Context, conn *warehouse.Conn, pipeline string, asOf time.Time, next bool) (*time.Time, error) {
	q, what := `SELECT max(as_of) FROM pipeline_runs WHERE pipeline = ? AND status = 'succeeded' AND as_of < ?`, "previous"
	if next {
		q, what = `SELECT min(as_of) FROM pipeline_runs WHERE pipeline = ? AND status = 'succeeded' AND as_of > ?`, "next"
	}
	var t sql.NullTime
	if err := conn.QueryRowContext(ctx, q, pipeline, asOf).Scan(&t); err != nil {
		return nil, fmt.Errorf("find the %s as_of of pipeline %s: %w", what, pipeline, err)
	}
	if !t.Valid {
		return nil, nil
	}
	d := civilDate(t.Time)
	return &d, nil
}

// computeChanges replaces asOf's rows of the change tables; the first as_of has none.
func computeChanges(ctx context.Context, conn *warehouse.Conn, pipeline string, asOf time.Time) error {
	for _, t := range publish.ChangeTables {
		if _, err := conn.ExecContext(ctx, `DELETE FROM `+t+` WHERE as_of = ?`, asOf); err != nil {
			return fmt.Errorf("replace %s for %s: %w", t, asOf.Format(time.DateOnly), err)
		}
	}
	prev, err := adjacentAsOf(ctx, conn, pipeline, asOf, previousAsOf)
	if err != nil || prev == nil {
		return err
	}
	dims := make([]string, len(changeDimensions))
	for i, d := range changeDimensions {
		dims[i] = fmt.Sprintf(`SELECT as_of, customer_id, '%s' AS dimension, %s AS v FROM %s WHERE as_of IN ($cur, $prev)`, d.name, d.column, d.table)
	}
	// cur/prev: who was scored (RFM scores every customer with a purchase up to the as_of).
	with := `WITH cur AS (SELECT customer_id, run_id FROM customer_rfm WHERE as_of = $cur),
	prev AS (SELECT customer_id FROM customer_rfm WHERE as_of = $prev),
	run AS (SELECT coalesce(any_value(run_id), '') AS run_id FROM cur),
	dims AS (` + strings.Join(dims, "\nUNION ALL ") + `),
	pairs AS (SELECT dimension, customer_id, p.v AS from_value, c.v AS to_value
	          FROM (SELECT * FROM dims WHERE as_of = $prev) p
	          FULL JOIN (SELECT * FROM dims WHERE as_of = $cur) c USING (dimension, customer_id))
	`
	queries := map[string]string{
		"customer_changes": `INSERT INTO customer_changes ` + with + `
			SELECT $cur, $prev, customer_id, (SELECT run_id FROM run), 'new', 'customer', NULL, NULL FROM cur ANTI JOIN prev USING (customer_id)
			UNION ALL
			SELECT $cur, $prev, customer_id, (SELECT run_id FROM run), 'lost', 'customer', NULL, NULL FROM prev ANTI JOIN cur USING (customer_id)
			UNION ALL
			SELECT $cur, $prev, customer_id, (SELECT run_id FROM run), 'moved', dimension, from_value, to_value FROM pairs
			WHERE from_value <> to_value`,
		"segment_transitions": `INSERT INTO segment_transitions ` + with + `
			SELECT $cur, $prev, (SELECT run_id FROM run), dimension, from_value, to_value, count(*) FROM pairs GROUP BY ALL`,
	}
	for _, t := range publish.ChangeTables {
		if _, err := conn.ExecContext(ctx, queries[t], sql.Named("cur", asOf), sql.Named("prev", *prev)); err != nil {
			return fmt.Errorf("compute %s for %s against %s: %w", t, asOf.Format(time.DateOnly), prev.Format(time.DateOnly), err)
		}
	}
	return nil
}
