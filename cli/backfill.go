package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/ckm-dev/ckm/pipelines"
)

func (a *app) backfillCmd() *cobra.Command {
	var pipeline, from, to string
	var force, allowFuture bool
	cmd := &cobra.Command{
		Use:   "backfill --from YYYY-MM-DD --to YYYY-MM-DD",
		Short: "Run a pipeline for every as_of date in a range, oldest first; resumable, skips dates that succeeded",
		Example: `  ckm backfill --from 2026-06-01 --to 2026-06-30            # June, oldest first; rerun to resume
  ckm backfill -p nightly --from 2026-06-01 --to 2026-06-07 --force   # recompute a week`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			if pipeline, err = a.pipelineName(cfg, pipeline); err != nil {
				return err
			}
			dates := make([]time.Time, 2)
			for i, s := range []string{from, to} {
				if dates[i], err = parseDate("--"+[]string{"from", "to"}[i], s); err != nil {
					return err
				}
			}
			w, err := a.openWarehouse(cmd.Context(), cfg, false)
			if err != nil {
				return err
			}
			defer w.Close()
			r := &pipelines.Runner{Config: cfg, Warehouse: w, Log: a.log}
			began := time.Now()
			var ran int
			err = r.Backfill(cmd.Context(), pipeline, dates[0], dates[1], force, allowFuture, func(s pipelines.BackfillStep) {
				day := s.AsOf.Format(time.DateOnly)
				width := len(fmt.Sprint(s.Total))
				if s.Skipped {
					fmt.Fprintf(a.stdout, "[%*d/%d] %s skipped: succeeded before (run %s; --force reruns it)\n", width, s.Index, s.Total, day, s.PreviousRunID)
					return
				}
				ran++
				eta := time.Duration(float64(time.Since(began)) / float64(s.Index) * float64(s.Total-s.Index))
				fmt.Fprintf(a.stdout, "[%*d/%d] %s succeeded in %s: %d customers (run %s) · about %s left\n", width, s.Index, s.Total, day,
					s.Elapsed.Round(time.Millisecond), s.Result.Customers, s.Result.RunID, eta.Round(time.Second))
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "backfill of %s done: %d runs in %s\n", pipeline, ran, time.Since(began).Round(time.Millisecond))
			return nil
		},
	}
	cmd.Flags().StringVarP(&pipeline, "pipeline", "p", "", "pipeline to run (default: the only one configured)")
	cmd.Flags().StringVar(&from, "from", "", "first as_of date, YYYY-MM-DD")
	cmd.Flags().StringVar(&to, "to", "", "last as_of date, YYYY-MM-DD (inclusive)")
	cmd.Flags().BoolVar(&force, "force", false, "rerun dates that already succeeded")
	cmd.Flags().BoolVar(&allowFuture, "allow-future", false, "score dates after today (refused otherwise)")
	_ = cmd.MarkFlagRequired("from")
	_ = cmd.MarkFlagRequired("to")
	return cmd
}
