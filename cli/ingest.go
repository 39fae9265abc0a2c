package cli

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/spf13/cobra"

	"github.com/ckm-dev/ckm/pipelines"
)

func (a *app) ingestCmd() *cobra.Command {
	var sources, restart []string
	var follow, reload, replay bool
	cmd := &cobra.Command{
		Use: "ingest",
		Example: `  ckm ingest                                         # every source, what is new
  ckm ingest --config examples/kafka/config.yaml --source shop_orders --follow
  ckm ingest --source shop_orders --reload            # its files again, after fixing its mapping
  ckm ingest --source events --restart events/0       # a recreated topic's partition, as never read
  ckm ingest --source events --replay-dead-letters    # its dead letters again, after fixing its mapping`,
		Short: "Load new source data into the warehouse without scoring; --follow keeps streaming sources loading",
		Long: `Load what is new in the sources (default: all) into the canonical tables, batch by batch,
each batch committed with its checkpoint. With --follow, streaming sources (kafka) keep loading
micro-batches (batch_size / batch_bytes / flush_interval) until interrupted; an interrupt lets the
batch in flight commit or roll back, so nothing is lost or doubled. With --reload, the named
file sources read every file again from its start, each replacing what it loaded and superseding
its dead letters: after a mapping was fixed, the records it dead-lettered load. With --restart,
the named streams of one source are read as never read, replacing their rows by key: a Kafka
partition from its start setting (after its topic was deleted and created again), a PostgreSQL
table whole (after it was restored with older cursor values). With --replay-dead-letters, the
named Kafka sources map their dead letters again from what was kept of them, without reading the
topics (whose retention may have dropped them): after a mapping was fixed, those records load,
and those still bad become dead letters anew in place of the old.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch {
			case reload && follow:
				return errors.New("--reload reads files again once; it does not follow")
			case reload && len(sources) == 0:
				return errors.New("--reload needs the sources to read again: --source S")
			case replay && (follow || reload || len(restart) > 0):
				return errors.New("--replay-dead-letters maps kept dead letters again; it neither reads nor follows the sources")
			case replay && len(sources) == 0:
				return errors.New("--replay-dead-letters needs the sources whose dead letters to replay: --source S")
			case len(restart) > 0 && len(sources) != 1:
				return errors.New("--restart names streams of one source: --source S")
			case len(restart) > 0 && reload:
				return errors.New("--restart is for Kafka and PostgreSQL sources, --reload for files: one at a time")
			}
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			w, err := a.openWarehouse(cmd.Context(), cfg, false)
			if err != nil {
				return err
			}
			defer w.Close()
			for _, s := range sources {
				if _, ok := cfg.Sources[s]; !ok {
					return fmt.Errorf("unknown source %q (configured: %s)", s, strings.Join(cfg.SourceNames(nil), ", "))
				}
			}
			r := &pipelines.Runner{Config: cfg, Warehouse: w, Log: a.log}
			if len(restart) > 0 {
				if err := r.Restart(cmd.Context(), sources[0], restart); err != nil {
					return err
				}
			}
			names := cfg.SourceNames(sources)
			results := make([]pipelines.SourceResult, len(names))
			errs := make([]error, len(names))
			var wg sync.WaitGroup
			for i, name := range names {
				wg.Go(func() {
					switch {
					case reload:
						results[i], errs[i] = r.Reload(cmd.Context(), name)
					case replay:
						results[i], errs[i] = r.ReplayDeadLetters(cmd.Context(), name)
					default:
						results[i], errs[i] = r.Ingest(cmd.Context(), name, follow)
					}
					if errs[i] != nil {
						errs[i] = fmt.Errorf("ingest %s: %w", name, errs[i])
					}
				})
			}
			wg.Wait()
			for _, res := range results {
				fmt.Fprintf(a.stdout, "%-20s read %d, loaded %d, dead letters %d, collapsed %d, skipped %d\n",
					res.Name, res.Read, res.Loaded, res.DeadLettered, res.Collapsed, res.Skipped)
			}
			return errors.Join(errs...)
		},
	}
	cmd.Flags().StringSliceVarP(&sources, "source", "s", nil, "sources to load (default: all)")
	cmd.Flags().BoolVar(&follow, "follow", false, "keep loading streaming sources until interrupted")
	cmd.Flags().BoolVar(&reload, "reload", false, "read the named file sources' files again from their start, replacing what they loaded")
	cmd.Flags().BoolVar(&replay, "replay-dead-letters", false, "map the named Kafka sources' dead letters again, without reading the topics")
	cmd.Flags().StringSliceVar(&restart, "restart", nil, "streams of the one named source to read as never read: a Kafka partition (topic/partition), a PostgreSQL table")
	return cmd
}
