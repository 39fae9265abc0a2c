package cli

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/ckm-dev/ckm/pipelines"
)

func (a *app) benchCmd() *cobra.Command {
	opts := pipelines.BenchOptions{Customers: 1_000_000, Seed: 7, Dir: "bench-data", MemoryLimit: "4GB", Repeat: 2}
	cmd := &cobra.Command{
		Use: "bench",
		Example: `  ckm bench --customers 100000 --repeat 2        # quick, into bench-data/
  make bench                                       # 1M customers, as the README reports`,
		Short: "Measure ingest and every scoring stage against DuckDB's own read_csv and aggregate on the same data, in one process",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts.Log = a.log
			rep, err := pipelines.Bench(cmd.Context(), opts)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "data: %d customers, %d orders (%s, %.0f MB); DuckDB threads %d, memory_limit %s\n\n",
				rep.Customers, rep.Orders, rep.OrdersFile, float64(rep.OrdersBytes)/1e6, rep.Threads, opts.MemoryLimit)
			tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
			fmt.Fprintln(tw, "stage\tckm\tDuckDB reference\tratio\ttarget\t")
			fmt.Fprintf(tw, "ingest orders (rows/s)\t%.0f\t%.0f  read_csv → table\t%.2f× of reference\t≥ 0.60×\t\n",
				rep.IngestRate, rep.ReadCSVRate, rep.IngestRate/rep.ReadCSVRate)
			fmt.Fprintf(tw, "RFM stage, with the customer summary RFM and CLV share (s)\t%.2f\t%.2f  per-customer aggregate\t%.2f× of reference\t≤ 2.00×\t\n",
				rep.RFM.Seconds(), rep.Aggregate.Seconds(), rep.RFM.Seconds()/rep.Aggregate.Seconds())
			fmt.Fprintf(tw, "CLV + value stage, from that summary (s)\t%.2f\t%.2f  per-customer aggregate\t%.2f× of reference\t≤ 2.00×\t\n",
				rep.CLVValue.Seconds(), rep.Aggregate.Seconds(), rep.CLVValue.Seconds()/rep.Aggregate.Seconds())
			fmt.Fprintf(tw, "knowledge stage (s)\t%.2f\t%.2f  per-customer aggregate\t%.2f× of reference\t≤ 1.00×\t\n",
				rep.Knowledge.Seconds(), rep.Aggregate.Seconds(), rep.Knowledge.Seconds()/rep.Aggregate.Seconds())
			scoring := rep.RFM + rep.CLVValue + rep.Knowledge
			fmt.Fprintf(tw, "whole scoring (s)\t%.2f\t%.2f  per-customer aggregate\t%.2f× of reference\t≤ 2.00×\t\n",
				scoring.Seconds(), rep.Aggregate.Seconds(), scoring.Seconds()/rep.Aggregate.Seconds())
			fmt.Fprintf(tw, "publish for BI (s)\t%.2f\t%.2f  COPY each output to Parquet\t%.2f× of reference\t≤ 1.50×\t\n",
				rep.Publish.Seconds(), rep.CopyParquet.Seconds(), rep.Publish.Seconds()/rep.CopyParquet.Seconds())
			if rep.PublishPostgres > 0 {
				fmt.Fprintf(tw, "publish to PostgreSQL (s)\t%.2f\t%.2f  bare COPY FROM STDIN, same rows\t%.2f× of reference\t≥ 0.70×\t\n",
					rep.PublishPostgres.Seconds(), rep.BareCopyPostgres.Seconds(), rep.BareCopyPostgres.Seconds()/rep.PublishPostgres.Seconds())
			}
			tw.Flush()
			fmt.Fprintf(a.stdout, "\nknowledge: %d feedback events, %d key sources\n", rep.FeedbackEvents, rep.KeySources)
			fmt.Fprintf(a.stdout, "\ncustomer summary (the one pass over orders RFM and CLV share) %.2f s; CLV: both fits %.2f s on %d distinct (x, t_x, T) histories of %d customers (%.1f orders per history)\n",
				rep.CLV.Summary.Seconds(), rep.CLV.Fit.Seconds(), rep.CLV.Tuples, rep.CLV.Customers, float64(rep.Orders)/float64(max(rep.CLV.Tuples, 1)))
			fmt.Fprintf(a.stdout, "\npeak RSS of the first repetition %.2f GB (memory_limit %s + 1 GB = %.2f GB allowed)\n",
				float64(rep.PeakRSS)/1e9, opts.MemoryLimit, float64(rep.MemoryAllowed)/1e9)
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVarP(&opts.Customers, "customers", "n", opts.Customers, "customers to generate (about 15 orders each)")
	f.Uint64Var(&opts.Seed, "seed", opts.Seed, "generator seed")
	f.StringVar(&opts.Dir, "dir", opts.Dir, "working directory for the generated data and warehouse (reused when present)")
	f.StringVar(&opts.MemoryLimit, "memory-limit", opts.MemoryLimit, "DuckDB memory_limit for the bench warehouse")
	f.IntVar(&opts.Threads, "threads", 0, "DuckDB threads (0: all cores)")
	f.IntVar(&opts.Repeat, "repeat", opts.Repeat, "repetitions; the fastest of each is reported")
	f.Float64Var(&opts.Alpha, "alpha", 10, "BG/NBD α of the generated data: lower gives more orders per customer (data is generated once per --dir)")
	return cmd
}
