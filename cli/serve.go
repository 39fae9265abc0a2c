package cli

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/ckm-dev/ckm/config"
	"github.com/ckm-dev/ckm/pipelines"
	"github.com/ckm-dev/ckm/scheduler"
	"github.com/ckm-dev/ckm/warehouse"
)

func (a *app) serveCmd() *cobra.Command {
	var listen string
	cmd := &cobra.Command{
		Use: "serve",
		Example: `  ckm serve                                   # every pipeline with a schedule; SIGTERM stops it gracefully
  ckm serve --listen 0.0.0.0:9464           # metrics and health checks for another host`,
		Short: "Run the scheduled pipelines as a daemon, with /healthz, /readyz and Prometheus /metrics",
		Long: `Runs each pipeline that has a schedule (cron, in the pipeline's time zone) until SIGTERM or
SIGINT. A run in progress then gets serve.grace_period to finish before it is cancelled and
rolls back. Times missed while ckm was down run per the pipeline's catch_up policy (none,
latest, all); a time that comes while the previous run goes on follows its overlap policy
(skip, queue). Runs happen one at a time; the warehouse is opened for each run only.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			if listen != "" {
				cfg.Serve.Listen = listen
			}
			return a.serve(cmd.Context(), cfg)
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "", "address for /healthz, /readyz and /metrics (default: serve.listen, 127.0.0.1:9464)")
	return cmd
}

// metricsRefresh is how often serve reads the warehouse for its metrics between runs when it
// does not ingest (serve.ingest_interval) that often.
const metricsRefresh = 30 * time.Second

func (a *app) serve(ctx context.Context, cfg *config.Config) error {
	jobs, err := pipelines.Jobs(cfg)
	if err != nil {
		return err
	}
	if len(jobs) == 0 {
		return errors.New(`no pipeline has a schedule: add one, e.g. schedule: "30 2 * * *", to a pipeline in ` + a.configPath)
	}
	grace := cfg.Serve.Grace()
	metrics := pipelines.NewMetrics()
	scheduled := make([]string, len(jobs))
	for i, j := range jobs {
		scheduled[i] = j.Pipeline
	}
	metrics.Declare(cfg, scheduled)
	svc := &pipelines.Service{Config: cfg, Log: a.log, Metrics: metrics, Open: func(ctx context.Context, readOnly bool) (*warehouse.Warehouse, error) {
		return a.openWarehouse(ctx, cfg, readOnly)
	}}
	sched := &scheduler.Scheduler{Jobs: jobs, Runs: svc, Log: a.log, Grace: grace, Events: metrics.SchedulerEvent}

	ln, err := net.Listen("tcp", cfg.Serve.Listen)
	if err != nil {
		return fmt.Errorf("serve: listen on %s (serve.listen): %w", cfg.Serve.Listen, err)
	}
	var ready atomic.Bool
	srv := &http.Server{Handler: endpoints(sched, metrics, &ready), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("http server stopped", "error", err)
		}
	}()
	defer func() {
		shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
	}()
	a.log.Info("serving", "listen", ln.Addr().String(), "pipelines", len(jobs), "grace_period", grace.String())

	if err := svc.Start(ctx); err != nil {
		if ctx.Err() != nil { // stopped while starting: nothing ran, nothing to roll back
			a.log.Info("stopped before the first run", "reason", err)
			return nil
		}
		return err
	}
	for _, j := range jobs {
		a.log.Info("scheduled", "pipeline", j.Pipeline, "schedule", j.Schedule.String(), "next", j.Schedule.Next(time.Now()).UTC(),
			"overlap", string(j.Overlap), "catch_up", string(j.CatchUp))
	}
	schedCtx, stopSched := context.WithCancel(ctx)
	defer stopSched()
	go func() {
		<-schedCtx.Done()
		ready.Store(false) // draining: load balancers and probes stop sending work
	}()
	var betweenRuns sync.WaitGroup
	betweenRuns.Go(func() { // between runs: metrics from the warehouse, Kafka ingest when configured
		ingest := cfg.Serve.Ingest() > 0
		every := cmp.Or(cfg.Serve.Ingest(), metricsRefresh)
		for {
			select {
			case <-schedCtx.Done():
				return
			case <-time.After(every):
				svc.BetweenRuns(schedCtx, ingest)
			}
		}
	})
	ready.Store(true)
	err = sched.Run(schedCtx)
	betweenRuns.Wait() // a load in progress has rolled back and closed the warehouse
	a.log.Info("stopped")
	return err
}

// endpoints serves /healthz (the process lives), /readyz (the schedule runs; 503 while starting
// or shutting down) and /metrics.
func endpoints(sched *scheduler.Scheduler, metrics *pipelines.Metrics, ready *atomic.Bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Load() {
			http.Error(w, "not ready: starting or shutting down", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
		for _, s := range sched.Status() {
			fmt.Fprintf(w, "%s: next %s, running %t, queued %d\n", s.Pipeline, s.Next.UTC().Format(time.RFC3339), s.Running, s.Queued)
		}
	})
	mux.Handle("/metrics", promhttp.HandlerFor(metrics.Registry, promhttp.HandlerOpts{Registry: metrics.Registry}))
	return mux
}
