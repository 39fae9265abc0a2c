package publish

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ckm-dev/ckm/connectors/mapping"
	"github.com/ckm-dev/ckm/warehouse"
)

// snapshotRuns are the columns of pipeline_runs the snapshot holds, so dashboards can show
// freshness (errors are stored bounded and without record payloads).
const snapshotRuns = `run_id, pipeline, as_of, trigger, scheduled_for, started_at, finished_at, status, rows_in, rows_out, dead_letters, error`

// snapshotCustomers selects the customers' columns for the customer_scores view: those BI tools
// may see, the others NULL, and no lineage or unmapped fields.
func (p *publisher) snapshotCustomers() string {
	customers, _ := mapping.TableNamed("customers")
	sel := make([]string, len(customers.Columns))
	for i, c := range customers.Columns {
		sel[i] = c.Name
		if !slices.Contains(p.opts.CustomerColumns, c.Name) {
			sel[i] = "CAST(NULL AS " + c.Type.SQL() + ") AS " + c.Name
		}
	}
	return "SELECT " + strings.Join(sel, ", ") + " FROM main.customers"
}

// snapshot builds a DuckDB file with the run's outputs next to the published one, checkpoints
// and closes it, and renames it over the old one. A BI tool that has the old file open keeps
// reading it whole; the next connection opens the new one.
func (p *publisher) snapshot(ctx context.Context) (err error) {
	tmp := p.tempPath(SnapshotFile)
	var live string
	if err := p.conn.QueryRowContext(ctx, `SELECT current_database()`).Scan(&live); err != nil {
		return fmt.Errorf("publish snapshot: %w", err)
	}
	alias := "snapshot_" + strings.NewReplacer("-", "_").Replace(p.run.RunID)
	if _, err := p.conn.ExecContext(ctx, fmt.Sprintf(`ATTACH %s AS %s`, warehouse.Quote(tmp), alias)); err != nil {
		return fmt.Errorf("publish snapshot: create %s: %w", tmp, err)
	}
	attached := true
	defer func() {
		if attached {
			_, _ = p.conn.ExecContext(context.WithoutCancel(ctx), `USE `+warehouse.Ident(live))
			_, detachErr := p.conn.ExecContext(context.WithoutCancel(ctx), `DETACH `+alias)
			err = errors.Join(err, detachErr)
		}
		if err != nil {
			err = errors.Join(fmt.Errorf("publish snapshot: %w", err), os.Remove(tmp), removeIfExists(tmp+".wal"))
		}
	}()
	for _, t := range Tables {
		if _, isView := p.views[t]; isView {
			continue
		}
		if _, err := p.conn.ExecContext(ctx, fmt.Sprintf(`CREATE TABLE %s.%s AS SELECT * FROM main.%s WHERE as_of = ?`,
			alias, t, t), p.run.AsOf); err != nil {
			return fmt.Errorf("copy %s: %w", t, err)
		}
	}
	for t, q := range map[string]string{"customers": p.snapshotCustomers(), "pipeline_runs": "SELECT " + snapshotRuns + " FROM main.pipeline_runs"} {
		if _, err := p.conn.ExecContext(ctx, fmt.Sprintf(`CREATE TABLE %s.%s AS %s`, alias, t, q)); err != nil {
			return fmt.Errorf("copy %s: %w", t, err)
		}
	}
	// The views keep their text: unqualified names bind to the snapshot's own tables when a
	// reader opens it.
	if _, err := p.conn.ExecContext(ctx, `USE `+alias); err != nil {
		return err
	}
	for name, def := range p.views {
		if _, err := p.conn.ExecContext(ctx, def); err != nil {
			return fmt.Errorf("create view %s in snapshot: %w", name, err)
		}
	}
	if _, err := p.conn.ExecContext(ctx, `USE `+warehouse.Ident(live)); err != nil {
		return err
	}
	if _, err := p.conn.ExecContext(ctx, fmt.Sprintf(`CREATE TABLE %s.snapshot_info AS
		SELECT ?::DATE AS as_of, ? AS run_id, ? AS pipeline, now() AS published_at`, alias),
		p.run.AsOf, p.run.RunID, p.run.Pipeline); err != nil {
		return fmt.Errorf("write snapshot_info: %w", err)
	}
	// The row count of each output, so a reader can check that it sees all of a run.
	var counts []string
	for _, t := range Tables {
		counts = append(counts, fmt.Sprintf("(%s, %d)", warehouse.Quote(t), p.manifest.Rows[t]))
	}
	if _, err := p.conn.ExecContext(ctx, fmt.Sprintf(`CREATE TABLE %s.snapshot_tables AS
		SELECT * FROM (VALUES %s) AS t(table_name, "rows")`, alias, strings.Join(counts, ", "))); err != nil {
		return fmt.Errorf("write snapshot_tables: %w", err)
	}
	if _, err := p.conn.ExecContext(ctx, `CHECKPOINT `+alias); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	if _, err := p.conn.ExecContext(ctx, `DETACH `+alias); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	attached = false
	if err := os.Chmod(tmp, p.opts.fileMode()); err != nil {
		return err
	}
	if err := syncFile(tmp); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(p.opts.Dir, SnapshotFile))
}

// viewDefinitions returns the CREATE VIEW statements of the published views.
func (p *publisher) viewDefinitions(ctx context.Context) (map[string]string, error) {
	rows, err := p.conn.QueryContext(ctx, `SELECT view_name, sql FROM duckdb_views()
		WHERE database_name = current_database() AND schema_name = 'main' AND list_contains(?, view_name)`, Tables)
	if err != nil {
		return nil, fmt.Errorf("read view definitions: %w", err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var name, def string
		if err := rows.Scan(&name, &def); err != nil {
			return nil, err
		}
		out[name] = def
	}
	return out, rows.Err()
}

// syncFile flushes path to disk before it is renamed into place, so a crash cannot leave a
// published name pointing at a file that is not all there.
func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
