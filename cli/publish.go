package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/ckm-dev/ckm/pipelines"
)

func (a *app) publishCmd() *cobra.Command {
	var pipeline, asOf string
	cmd := &cobra.Command{
		Use:   "publish [--as-of YYYY-MM-DD]",
		Short: "Publish a successful run again and make it what latest/ and the snapshot show",
		Long: `Publish a successful run's outputs again (Parquet partition, report, snapshot, latest/) and make
it what BI tools see, even when they show a newer as_of: this undoes a run of the wrong date
(the run's own outputs stay in the warehouse). Without --as-of, the newest successful run up to
today is published.`,
		Example: `  ckm publish --as-of 2026-06-30    # latest/ and the snapshot show 2026-06-30 again
  ckm publish                        # the newest successful run up to today`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			var date *time.Time
			if asOf != "" {
				d, err := parseDate("--as-of", asOf)
				if err != nil {
					return err
				}
				date = &d
			}
			w, err := a.openWarehouse(cmd.Context(), cfg, false)
			if err != nil {
				return err
			}
			defer w.Close()
			r := &pipelines.Runner{Config: cfg, Warehouse: w, Log: a.log}
			res, err := r.Publish(cmd.Context(), pipeline, date)
			if err != nil {
				return fmt.Errorf("publish: %w", err)
			}
			fmt.Fprintf(a.stdout, "published run %s of %s for as_of %s: %s\n", res.RunID, res.Pipeline, res.AsOf.Format(time.DateOnly), res.Published)
			return nil
		},
	}
	cmd.Flags().StringVarP(&pipeline, "pipeline", "p", "", "the pipeline whose run to publish (default: any)")
	cmd.Flags().StringVar(&asOf, "as-of", "", "the as_of whose newest successful run to publish")
	return cmd
}
