package cli

import (
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ckm-dev/ckm/config"
	"github.com/ckm-dev/ckm/connectors"
	"github.com/ckm-dev/ckm/pipelines"
	"github.com/ckm-dev/ckm/transforms/knowledge"
)

func (a *app) runCmd() *cobra.Command {
	var pipeline, asOf string
	var allowFuture bool
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run a pipeline once: load new source data, score every customer, replace the as_of outputs",
		Example: `  ckm run --as-of 2026-06-30                                   # the shipped sample
  ckm run --config examples/cdnow/config.yaml --as-of 1997-09-30   # another config
  ckm run                                                      # yesterday, in the configured time zone`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			if pipeline, err = a.pipelineName(cfg, pipeline); err != nil {
				return err
			}
			date, err := parseAsOf(asOf, cfg.Location())
			if err != nil {
				return err
			}
			w, err := a.openWarehouse(cmd.Context(), cfg, false)
			if err != nil {
				return err
			}
			defer w.Close()
			r := &pipelines.Runner{Config: cfg, Warehouse: w, Log: a.log}
			if a.interactive() {
				r.Step = a.progress
			}
			res, err := r.Run(cmd.Context(), pipelines.Request{Pipeline: pipeline, AsOf: date, Trigger: pipelines.Manual, AllowFuture: allowFuture})
			if err != nil {
				return fmt.Errorf("run %s for %s failed: %w", pipeline, date.Format(time.DateOnly), err)
			}
			a.printSummary(res)
			return nil
		},
	}
	cmd.Flags().StringVarP(&pipeline, "pipeline", "p", "", "pipeline to run (default: the only one configured)")
	cmd.Flags().StringVar(&asOf, "as-of", "", "scoring date YYYY-MM-DD (default: yesterday in the configured time zone)")
	cmd.Flags().BoolVar(&allowFuture, "allow-future", false, "score an as_of after today (refused otherwise)")
	return cmd
}

// pipelineName is name, or the only configured pipeline when name is empty.
func (a *app) pipelineName(cfg *config.Config, name string) (string, error) {
	if name != "" {
		return name, nil
	}
	names := cfg.PipelineNames()
	if len(names) != 1 {
		return "", fmt.Errorf("config has %d pipelines (%s): name one with --pipeline", len(names), strings.Join(names, ", "))
	}
	return names[0], nil
}

// parseAsOf reads YYYY-MM-DD; empty means yesterday, the last complete day, in loc.
func parseAsOf(s string, loc *time.Location) (time.Time, error) {
	if s == "" {
		return pipelines.DayBefore(time.Now(), loc), nil
	}
	return parseDate("--as-of", s)
}

var dateShape = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}$`)

// parseDate reads a flag's YYYY-MM-DD date.
func parseDate(flag, s string) (time.Time, error) {
	t, err := time.Parse(time.DateOnly, s)
	switch {
	case err == nil:
		return t, nil
	case dateShape.MatchString(s):
		return time.Time{}, fmt.Errorf("%s %s: not a calendar date", flag, s)
	}
	return time.Time{}, fmt.Errorf("%s %q: want a date as YYYY-MM-DD", flag, s)
}

// progress shows a step with a live elapsed time on the terminal.
func (a *app) progress(name string) func() {
	start := time.Now()
	stop := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		frames := []string{"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"}
		for i := 0; ; i++ {
			fmt.Fprintf(a.stderr, "\r%s %-32s %6.1fs", frames[i%len(frames)], name, time.Since(start).Seconds())
			select {
			case <-stop:
				fmt.Fprintf(a.stderr, "\r✓ %-32s %6.1fs\n", name, time.Since(start).Seconds())
				return
			case <-t.C:
			}
		}
	}()
	return func() { close(stop); <-finished }
}

func (a *app) printSummary(res *pipelines.Result) {
	out := a.stdout
	fmt.Fprintf(out, "run %s of %s for as_of %s succeeded in %s\n\n", res.RunID, res.Pipeline,
		res.AsOf.Format(time.DateOnly), res.Elapsed.Round(time.Millisecond))
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "source\ttable\tread\tloaded\tdead letters\tcollapsed\tskipped\t")
	for _, s := range res.Sources {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t\n", s.Name, s.Table, s.Read, s.Loaded, s.DeadLettered, s.Collapsed, s.Skipped)
	}
	tw.Flush()
	fmt.Fprintf(out, "\ncustomers scored: %d (rows written: %d)\n\n", res.Customers, res.RowsOut)
	type seg struct {
		name string
		n    int64
	}
	var segs []seg
	for k, v := range res.Segments {
		segs = append(segs, seg{k, v})
	}
	sort.Slice(segs, func(i, j int) bool {
		return segs[i].n > segs[j].n || segs[i].n == segs[j].n && segs[i].name < segs[j].name
	})
	if len(segs) > 0 {
		tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "RFM segment\tcustomers\tshare\t")
		for _, s := range segs {
			fmt.Fprintf(tw, "%s\t%d\t%.1f%%\t\n", s.name, s.n, 100*float64(s.n)/float64(max(res.Customers, 1)))
		}
		tw.Flush()
	}
	a.printFits(res)
	a.printTierStage(res)
	a.printKnowledge(res)
	for _, w := range res.Warnings {
		fmt.Fprintln(out, "warning: "+w)
	}
	if res.Published != "" {
		fmt.Fprintf(out, "\npublished for BI tools: %s (report), %s\n", res.Published, filepath.Dir(filepath.Dir(res.Published)))
	}
	if res.PublishedPostgres != "" {
		fmt.Fprintf(out, "published to PostgreSQL: schema %s\n", res.PublishedPostgres)
	}
}

func (a *app) printFits(res *pipelines.Result) {
	for _, f := range res.Fits {
		status := "converged"
		if !f.Converged {
			status = "NOT converged: " + f.Message
		}
		fmt.Fprintf(a.stdout, "\n%s on %d customers: log-likelihood %.2f, %d iterations, %s\n", f.Model, f.Customers, f.LogLikelihood, f.Iterations, status)
		for _, p := range f.Params {
			fmt.Fprintf(a.stdout, "  %-6s %10.4f  (± %.4f)\n", p.Name, p.Value, p.StdError)
		}
	}
	if len(res.Holdout) > 0 {
		all := res.Holdout[len(res.Holdout)-1]
		fmt.Fprintf(a.stdout, "\nholdout: %d customers, mean predicted %.3f vs actual %.3f repeat purchases, MAE %.3f (by frequency in clv_holdout)\n",
			all.Customers, all.Expected, all.Actual, all.MeanAbsError)
	}
}

// Report order of value tiers and lifecycle stages.
var (
	valueTiers      = []string{"IV", "III", "II", "I"}
	lifecycleStages = []string{"exploration", "formation", "stability", "decline"}
)

// printTierStage prints customers by value tier (rows) and lifecycle stage (columns).
func (a *app) printTierStage(res *pipelines.Result) {
	if len(res.TierStage) == 0 {
		return
	}
	stages := lifecycleStages
	tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(a.stdout)
	fmt.Fprintln(tw, "value tier\t"+strings.Join(stages, "\t")+"\ttotal\t")
	for _, tier := range valueTiers {
		var total int64
		fmt.Fprint(tw, tier)
		for _, st := range stages {
			n := res.TierStage[[2]string{tier, st}]
			total += n
			fmt.Fprintf(tw, "\t%d", n)
		}
		fmt.Fprintf(tw, "\t%d\t\n", total)
	}
	tw.Flush()
}

// printKnowledge prints the key sources, classes by value tier and lifecycle stage, and the top 10.
func (a *app) printKnowledge(res *pipelines.Result) {
	k := res.Knowledge
	if k == nil {
		return
	}
	out := a.stdout
	fmt.Fprintf(out, "\nkey knowledge sources: %d of %d eligible customers, those with %d or more knowledge events in the lookback (weights kv %.3f, w %.3f, ac %.3f; AHP CR %.3f)\n",
		k.KeySources, k.Eligible, k.MinEvents, k.Model.DimensionWeights[0], k.Model.DimensionWeights[1], k.Model.DimensionWeights[2], k.Model.ConsistencyRatio)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "class\tvalue tier\t"+strings.Join(lifecycleStages, "\t")+"\ttotal\t")
	for _, class := range knowledge.Classes[:len(knowledge.Classes)-1] {
		for _, tier := range append(slices.Clone(valueTiers), "") {
			var total int64
			row := class + "\t" + orDash(tier)
			for _, stage := range append(slices.Clone(lifecycleStages), "") {
				n := k.ClassTierStage[[3]string{class, tier, stage}]
				total += n
				if stage != "" {
					row += fmt.Sprintf("\t%d", n)
				}
			}
			if total > 0 {
				fmt.Fprintf(tw, "%s\t%d\t\n", row, total)
			}
		}
	}
	tw.Flush()
	fmt.Fprintf(out, "%s (fewer than %d knowledge events in the lookback, or a dimension too little observed): %d of %d customers\n",
		knowledge.InsufficientEvidence, k.MinEvents, k.Count(knowledge.InsufficientEvidence), k.Customers)
	if len(k.Top) == 0 {
		return
	}
	fmt.Fprintln(out)
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "rank\tcustomer\tkksi\tclass\ttop factors")
	for _, s := range k.Top {
		fmt.Fprintf(tw, "%d\t%s\t%.3f\t%s\t%s\n", s.Rank, connectors.Printable(s.CustomerID), s.KKSI, s.Class, s.TopFactors)
	}
	tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
