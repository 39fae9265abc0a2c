package cli

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/ckm-dev/ckm/generate"
)

func (a *app) generateCmd() *cobra.Command {
	p := generate.Defaults()
	var out, start, end string
	cmd := &cobra.Command{
		Use: "generate",
		Example: `  ckm generate --customers 100000 --seed 1 --out data/generated
  CKM_DATA=data/generated CKM_WAREHOUSE=data/generated/ckm.duckdb ckm run --as-of 2026-06-30`,
		Short: "Write synthetic customers, orders and feedback with known true BG/NBD and Gamma-Gamma parameters",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if p.Start, err = time.Parse(time.DateOnly, start); err != nil {
				return fmt.Errorf("--start %q: want YYYY-MM-DD", start)
			}
			if p.End, err = time.Parse(time.DateOnly, end); err != nil {
				return fmt.Errorf("--end %q: want YYYY-MM-DD", end)
			}
			if !p.End.After(p.Start) {
				return fmt.Errorf("--end %s is not after --start %s", end, start)
			}
			sum, err := generate.Write(out, p)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "wrote %d customers, %d orders, %d feedback events to %s\n", sum.Customers, sum.Orders, sum.Feedback, out)
			fmt.Fprintf(a.stdout, "score them with the shipped config, in a warehouse of their own:\n  CKM_DATA=%s CKM_WAREHOUSE=%s ckm run --as-of %s\n",
				out, filepath.Join(out, "ckm.duckdb"), p.End.Format(time.DateOnly))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&out, "out", "o", "data/generated", "output directory")
	f.IntVarP(&p.Customers, "customers", "n", p.Customers, "number of customers")
	f.Uint64Var(&p.Seed, "seed", p.Seed, "random seed: the same seed gives the same files")
	f.StringVar(&start, "start", p.Start.Format(time.DateOnly), "first purchase date")
	f.StringVar(&end, "end", p.End.Format(time.DateOnly), "last purchase date")
	f.StringVar(&p.Zone, "zone", p.Zone, "time zone of the written local timestamps")
	f.Float64Var(&p.R, "r", p.R, "BG/NBD r (shape of the purchase-rate gamma)")
	f.Float64Var(&p.Alpha, "alpha", p.Alpha, "BG/NBD α (rate of the purchase-rate gamma, per week)")
	f.Float64Var(&p.A, "a", p.A, "BG/NBD a (dropout beta)")
	f.Float64Var(&p.B, "b", p.B, "BG/NBD b (dropout beta)")
	f.Float64Var(&p.P, "p", p.P, "Gamma-Gamma p")
	f.Float64Var(&p.Q, "q", p.Q, "Gamma-Gamma q")
	f.Float64Var(&p.Gamma, "gamma", p.Gamma, "Gamma-Gamma γ")
	f.Float64Var(&p.KeyShare, "key-share", p.KeyShare, "share of planted key knowledge sources (frequent, loyal, share ideas, absorbed by the firm)")
	f.Float64Var(&p.UnwillingShare, "unwilling-share", p.UnwillingShare, "share of valuable customers who are unwilling to share knowledge")
	f.Float64Var(&p.WillingShare, "willing-share", p.WillingShare, "share of willing customers of little value")
	f.Float64Var(&p.ComplainerShare, "complainer-share", p.ComplainerShare, "share of loud complainers")
	f.Float64Var(&p.ChattyShare, "chatty-share", p.ChattyShare, "share of ordinary customers who give feedback a few times a year")
	f.Float64Var(&p.ReturnShare, "return-share", p.ReturnShare, "share of purchases partly refunded")
	f.Float64Var(&p.CancelShare, "cancel-share", p.CancelShare, "share of extra cancelled orders")
	f.Float64Var(&p.Dirty, "dirty", p.Dirty, "share of deliberately malformed records")
	f.BoolVar(&p.Gzip, "gzip", p.Gzip, "gzip the data files")
	return cmd
}
