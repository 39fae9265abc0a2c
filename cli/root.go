// Package cli holds ckm's commands: flag parsing and printing; the work is done by pipelines,
// warehouse and connectors.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode"

	"github.com/spf13/cobra"

	"github.com/ckm-dev/ckm/config"
	"github.com/ckm-dev/ckm/pipelines"
	"github.com/ckm-dev/ckm/publish"
	"github.com/ckm-dev/ckm/warehouse"
)

type app struct {
	stdout, stderr io.Writer
	configPath     string
	verbose        bool
	logFormat      string
	log            *slog.Logger
}

// Exit codes. An invalid config has its own (sysexits' EX_CONFIG): Go exits 2 on a panic or a
// fatal signal, so a scheduler must be able to tell a crash from a config mistake.
const (
	ExitFailure = 1
	ExitConfig  = 78
)

// Main runs ckm with args and returns the exit code: 0 on success, ExitConfig for a bad config,
// ExitFailure for anything else, with one clear line on stderr saying what failed.
func Main(args []string, stdout, stderr io.Writer) int {
	// What ckm writes is private to its user unless configured otherwise (publish.mode): the
	// warehouse keeps raw records in dead_letters, and DuckDB creates its files with the umask.
	syscall.Umask(0o077)
	a := &app{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:           "ckm",
		Short:         "Nightly customer-knowledge scoring: RFM, CLV, value tiers and key knowledge sources in DuckDB",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRun: func(cmd *cobra.Command, _ []string) {
			a.log = a.newLogger()
		},
	}
	root.PersistentFlags().StringVarP(&a.configPath, "config", "c", "config.yaml", "config file")
	root.PersistentFlags().BoolVarP(&a.verbose, "verbose", "v", false, "debug logging")
	root.PersistentFlags().StringVar(&a.logFormat, "log-format", "text", "log format: text or json")
	root.AddCommand(a.runCmd(), a.serveCmd(), a.backfillCmd(), a.ingestCmd(), a.publishCmd(), a.validateCmd(), a.statusCmd(), a.sqlCmd(),
		a.generateCmd(), a.benchCmd(), a.connectorsCmd())
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	if p, ok := config.ErrProblems(err); ok {
		fmt.Fprintln(stderr, "ckm: invalid config:")
		for _, line := range p {
			fmt.Fprintln(stderr, "  "+line.String())
		}
		return ExitConfig
	}
	fmt.Fprintln(stderr, "ckm: "+oneLine(err))
	return ExitFailure
}

// oneLine is an error as one line for a terminal: whitespace runs become one space, and any
// other character that does not print is written escaped (\x1b), as a file name or a value in
// the error may hold an escape sequence the terminal would obey.
func oneLine(err error) string {
	var b strings.Builder
	for _, r := range strings.Join(strings.Fields(err.Error()), " ") {
		if unicode.IsPrint(r) {
			b.WriteRune(r)
		} else {
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		}
	}
	return b.String()
}

// interactive reports whether stderr is a terminal: then ckm shows progress, otherwise structured logs.
func (a *app) interactive() bool {
	f, ok := a.stderr.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func (a *app) newLogger() *slog.Logger {
	level := slog.LevelInfo
	if a.verbose {
		level = slog.LevelDebug
	} else if a.interactive() {
		level = slog.LevelWarn // progress lines tell the story on a terminal
	}
	opts := &slog.HandlerOptions{Level: level}
	if a.logFormat == "json" {
		return slog.New(slog.NewJSONHandler(a.stderr, opts))
	}
	return slog.New(slog.NewTextHandler(a.stderr, opts))
}

func (a *app) loadConfig() (*config.Config, error) {
	cfg, err := config.Load(a.configPath)
	if err != nil {
		return nil, err
	}
	return cfg, nil
}

// openWarehouse opens the configured warehouse. A writer waits up to warehouse.lock_wait for
// another process (a scheduled run, a backfill) to release the file; a reader does not wait,
// and reads the warehouse alone: no files, other databases or settings.
func (a *app) openWarehouse(ctx context.Context, cfg *config.Config, readOnly bool) (*warehouse.Warehouse, error) {
	opts := cfg.Warehouse.Options()
	opts.ReadOnly, opts.Sandbox = readOnly, readOnly
	if !readOnly {
		opts.LockWait = cfg.Warehouse.LockWaitDuration()
		opts.Waiting = func(h warehouse.Holder, waited time.Duration) {
			if a.interactive() {
				fmt.Fprintf(a.stderr, "waiting for the warehouse %s: in use by %s; waiting up to %s (warehouse.lock_wait), %s so far\n",
					cfg.Warehouse.Path, h, opts.LockWait, waited.Round(time.Second))
				return
			}
			a.log.Warn("waiting for the warehouse", "path", cfg.Warehouse.Path, "held_by_pid", h.PID, "held_by", h.Command,
				"held_since", h.Since, "lock_wait", opts.LockWait.String(), "waited", waited.Round(time.Second).String())
		}
	}
	w, err := warehouse.Open(ctx, opts)
	var inUse *warehouse.InUseError
	if errors.As(err, &inUse) && readOnly {
		return nil, fmt.Errorf("the warehouse is being written by %s: read the published snapshot %s meanwhile",
			inUse.Holder, filepath.Join(cfg.Publish.Dir, publish.SnapshotFile))
	}
	return w, err
}

// openReadOnly opens the configured warehouse for reading: it never blocks on, or changes, a writer's work.
func (a *app) openReadOnly(ctx context.Context) (*warehouse.Warehouse, error) {
	cfg, err := a.loadConfig()
	if err != nil {
		return nil, err
	}
	return a.openWarehouse(ctx, cfg, true)
}

func (a *app) validateCmd() *cobra.Command {
	var connect bool
	cmd := &cobra.Command{
		Use:   "validate [--connect]",
		Short: "Check the config: every problem with file:line and a hint; --connect also opens every source",
		Long: `Check the config: every problem at once, each with file:line, the YAML path and a hint (exit 78
if any). With --connect, also open every source the way a run would, loading nothing: files are
matched and their headers read against the mapping, Kafka brokers reached and topics looked up;
every problem is reported at once (exit 1 if any).`,
		Example: `  ckm validate
  ckm validate --config examples/kafka/config.yaml --connect`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "%s is valid: %d sources, %d pipelines, warehouse %s\n",
				a.configPath, len(cfg.Sources), len(cfg.Pipelines), cfg.Warehouse.Path)
			if !connect {
				return nil
			}
			scratch, err := warehouse.OpenScratch(cmd.Context())
			if err != nil {
				return err
			}
			defer scratch.Close()
			r := &pipelines.Runner{Config: cfg, Warehouse: scratch, Log: a.log}
			problems, err := r.Check(cmd.Context())
			if err != nil {
				return err
			}
			if len(problems) == 0 {
				fmt.Fprintf(a.stdout, "every source opened: %s\n", strings.Join(cfg.SourceNames(nil), ", "))
				return nil
			}
			counted := fmt.Sprintf("%d problems", len(problems))
			if len(problems) == 1 {
				counted = "1 problem"
			}
			fmt.Fprintf(a.stdout, "%s opening the sources:\n", counted)
			for _, p := range problems {
				fmt.Fprintln(a.stdout, "  "+p)
			}
			return fmt.Errorf("%s opening the sources (listed above)", counted)
		},
	}
	cmd.Flags().BoolVar(&connect, "connect", false, "also open every source, loading nothing")
	return cmd
}
