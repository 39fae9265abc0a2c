package cli

import (
	"context"
	"database/sql"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ckm-dev/ckm/connectors"
	"github.com/ckm-dev/ckm/pipelines"
)

func (a *app) sqlCmd() *cobra.Command {
	var format string
	var limit int
	cmd := &cobra.Command{
		Use:   `sql "SELECT …"`,
		Short: "Run a read-only query on the warehouse and print the result (table, csv or json)",
		Long: `Run a query on the warehouse's tables and print the result. The connection is read-only and
reads the warehouse alone: statements that write, read or write files (COPY, read_csv, glob),
attach other databases or change settings are refused.`,
		Example: `  ckm sql "SELECT segment, count(*) FROM customer_rfm GROUP BY ALL ORDER BY 2 DESC"
  ckm sql -f csv "SELECT source, position, reason FROM dead_letters WHERE superseded_by IS NULL"`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			w, err := a.openReadOnly(cmd.Context())
			if err != nil {
				return err
			}
			defer w.Close()
			rows, err := w.DB().QueryContext(cmd.Context(), args[0])
			if err != nil {
				return queryError(err)
			}
			defer rows.Close()
			if err := printRows(a.stdout, rows, format, limit); err != nil {
				return queryError(err)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&format, "format", "f", "table", "output format: table, csv or json")
	cmd.Flags().IntVar(&limit, "max-rows", 1000, "rows to print in table format (0: all)")
	return cmd
}

func (a *app) statusCmd() *cobra.Command {
	var n int
	var lag bool
	cmd := &cobra.Command{
		Use: "status",
		Example: `  ckm status -n 5
  ckm status --config examples/kafka/config.yaml --lag`,
		Short: "List recent pipeline runs; --lag also asks streaming sources how much waits to be read",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			w, err := a.openWarehouse(cmd.Context(), cfg, true)
			if err != nil {
				return err
			}
			defer w.Close()
			if lag {
				if err := a.printBacklog(cmd.Context(), &pipelines.Runner{Config: cfg, Warehouse: w, Log: a.log}); err != nil {
					return err
				}
			}
			rows, err := w.DB().QueryContext(cmd.Context(), `SELECT run_id, pipeline, as_of, trigger, status,
				strftime(scheduled_for AT TIME ZONE 'UTC', '%Y-%m-%d %H:%M:%SZ') AS scheduled_for_utc,
				strftime(started_at, '%Y-%m-%d %H:%M:%S') AS started,
				round(epoch(finished_at - started_at), 1) AS seconds, rows_in, rows_out, dead_letters, error,
				strftime(postgres_published_at, '%Y-%m-%d %H:%M:%S') AS postgres_published
				FROM pipeline_runs ORDER BY started_at DESC LIMIT ?`, n)
			if err != nil {
				return fmt.Errorf("read pipeline_runs: %w", err)
			}
			defer rows.Close()
			return printRows(a.stdout, rows, "table", 0)
		},
	}
	cmd.Flags().IntVarP(&n, "last", "n", 20, "how many runs")
	cmd.Flags().BoolVar(&lag, "lag", false, "contact Kafka brokers: per partition the stored offset, the end now and what waits")
	return cmd
}

// printBacklog prints, for each streaming source, where each stream resumes and what waits.
func (a *app) printBacklog(ctx context.Context, r *pipelines.Runner) error {
	tw := tabwriter.NewWriter(a.stdout, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "source\tstream\tnext offset\tend\twaiting\t")
	for _, name := range r.Config.SourceNames(nil) {
		backlog, err := r.Backlog(ctx, name)
		if err != nil {
			return err
		}
		for _, b := range backlog {
			next := "never read"
			switch {
			case b.Next > b.End: // the topic was created again: ingest stops here and says why
				next = fmt.Sprintf("%d past the end, see ckm ingest --source %s --restart %s", b.Next, name, b.Stream)
			case b.Next >= 0:
				next = fmt.Sprint(b.Next)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t\n", name, connectors.Printable(b.Stream), next, b.End, b.Waiting)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(a.stdout)
	return nil
}

// queryError says in one line why a query was refused or failed.
func queryError(err error) error {
	msg := err.Error()
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	var why string
	switch {
	case strings.Contains(msg, "read-only mode"):
		why = "ckm sql is read-only: it cannot change the warehouse"
	case strings.Contains(msg, "disabled by configuration"), strings.Contains(msg, "configuration has been locked"),
		strings.Contains(msg, "enable_external_access"), strings.Contains(msg, "Permission Error"):
		why = "ckm sql reads the warehouse's own tables only (no files, other databases or settings)"
	}
	if why != "" {
		return fmt.Errorf("%s: %s", why, msg)
	}
	return fmt.Errorf("query: %s", msg)
}

func printRows(out io.Writer, rows *sql.Rows, format string, limit int) error {
	cols, err := rows.Columns()
	if err != nil {
		return err
	}
	var records [][]any
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return err
		}
		records = append(records, vals)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("query: %w", err)
	}
	switch format {
	case "json":
		objs := make([]map[string]any, len(records))
		for i, r := range records {
			objs[i] = map[string]any{}
			for j, c := range cols {
				objs[i][c] = r[j]
			}
		}
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(objs)
	case "csv":
		w := csv.NewWriter(out)
		w.Write(cols)
		for _, r := range records {
			line := make([]string, len(r))
			for i, v := range r {
				line[i] = cell(v)
			}
			w.Write(line)
		}
		w.Flush()
		return w.Error()
	case "table":
		// A table is for a terminal: a value holding a tab, a line break or an escape sequence
		// (a dead letter's payload is whatever the source sent) is shown quoted, not obeyed.
		tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		header := make([]string, len(cols))
		for i, c := range cols {
			header[i] = connectors.Printable(c)
		}
		fmt.Fprintln(tw, strings.Join(header, "\t"))
		for i, r := range records {
			if limit > 0 && i == limit {
				fmt.Fprintf(tw, "… %d more rows (raise --max-rows)\n", len(records)-limit)
				break
			}
			line := make([]string, len(r))
			for i, v := range r {
				line[i] = connectors.Printable(cell(v))
			}
			fmt.Fprintln(tw, strings.Join(line, "\t"))
		}
		tw.Flush()
		fmt.Fprintf(out, "(%d rows)\n", len(records))
		return nil
	}
	return fmt.Errorf("unknown --format %q: want table, csv or json", format)
}

func cell(v any) string {
	switch x := v.(type) {
	case nil:
		return "NULL"
	case time.Time:
		if x.Hour() == 0 && x.Minute() == 0 && x.Second() == 0 && x.Nanosecond() == 0 {
			return x.Format(time.DateOnly)
		}
		return x.Format(time.RFC3339)
	case []byte:
		return string(x)
	case float64:
		return fmt.Sprintf("%.6g", x)
	}
	return fmt.Sprint(v)
}
