package pipelines

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/ckm-dev/ckm/config"
	"github.com/ckm-dev/ckm/connectors"
	"github.com/ckm-dev/ckm/scheduler"
)

// Metrics are what `ckm serve` exposes on /metrics. They live in their own registry (no
// globals), with the Go runtime and process collectors beside them.
type Metrics struct {
	Registry *prometheus.Registry

	runs        *prometheus.CounterVec
	stage       *prometheus.HistogramVec
	rowsIn      *prometheus.CounterVec
	rowsOut     *prometheus.CounterVec
	deadLetters *prometheus.CounterVec
	kafkaLag    *prometheus.GaugeVec
	lastSuccess *prometheus.GaugeVec
	skipped     *prometheus.CounterVec
	nextRun     *prometheus.GaugeVec
	inProgress  *prometheus.GaugeVec
}

// NewMetrics registers ckm's metrics in a new registry.
func NewMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ckm_runs_total",
			Help: "Pipeline runs that ended, by trigger and status (succeeded or failed)."}, []string{"pipeline", "trigger", "status"}),
		stage: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "ckm_stage_duration_seconds",
			Help:    "Duration of each stage of a run (load <source>, scoring steps, write outputs, publish for BI).",
			Buckets: prometheus.ExponentialBuckets(0.01, 3, 12)}, []string{"pipeline", "stage"}),
		rowsIn: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ckm_rows_in_total",
			Help: "Source records read by runs."}, []string{"pipeline", "source"}),
		rowsOut: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ckm_rows_out_total",
			Help: "Output rows written by successful runs."}, []string{"pipeline"}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ckm_dead_letters_total",
			Help: "Source records that went to dead_letters."}, []string{"pipeline", "source"}),
		kafkaLag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ckm_kafka_lag_messages",
			Help: "Messages waiting per Kafka partition (stream: topic/partition) beyond the stored offset, measured after each run."}, []string{"source", "stream"}),
		lastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ckm_last_success_timestamp_seconds",
			Help: "When the pipeline's last successful run finished (Unix time)."}, []string{"pipeline"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ckm_scheduled_runs_skipped_total",
			Help: "Scheduled times not run: overlap (previous run still going) or already_ran (by another ckm serve)."}, []string{"pipeline", "reason"}),
		nextRun: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ckm_next_run_timestamp_seconds",
			Help: "The pipeline's next scheduled time (Unix time)."}, []string{"pipeline"}),
		inProgress: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ckm_run_in_progress",
			Help: "1 while a run of the pipeline goes on."}, []string{"pipeline"}),
	}
	m.Registry.MustRegister(m.runs, m.stage, m.rowsIn, m.rowsOut, m.deadLetters, m.kafkaLag, m.lastSuccess, m.skipped,
		m.nextRun, m.inProgress, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Declare creates every scheduled pipeline's series at 0, so a freshly started serve shows them
// before the first run (Prometheus' rate() and absent() need a series to exist).
func (m *Metrics) Declare(cfg *config.Config, pipelines []string) {
	for _, p := range pipelines {
		m.inProgress.WithLabelValues(p).Set(0)
		for _, status := range []string{"succeeded", "failed"} {
			m.runs.WithLabelValues(p, string(Schedule), status)
		}
		m.rowsOut.WithLabelValues(p)
		for _, reason := range []string{"overlap", "already_ran"} {
			m.skipped.WithLabelValues(p, reason)
		}
		for _, source := range cfg.SourceNames(cfg.Pipelines[p].Sources) {
			m.rowsIn.WithLabelValues(p, source)
			m.deadLetters.WithLabelValues(p, source)
		}
	}
}

// Stage returns a Runner.Step hook that times the stages of pipeline's runs.
func (m *Metrics) Stage(pipeline string) func(name string) func() {
	return func(name string) func() {
		start := time.Now()
		return func() { m.stage.WithLabelValues(pipeline, name).Observe(time.Since(start).Seconds()) }
	}
}

// Run records a run that ended.
func (m *Metrics) Run(pipeline string, trigger Trigger, res *Result) {
	status := "failed"
	if res != nil && res.Succeeded { // publishing may still have failed, but the run's outputs landed
		status = "succeeded"
	}
	m.runs.WithLabelValues(pipeline, string(trigger), status).Inc()
	if res == nil {
		return
	}
	for _, s := range res.Sources {
		m.rowsIn.WithLabelValues(pipeline, s.Name).Add(float64(s.Read))
		m.deadLetters.WithLabelValues(pipeline, s.Name).Add(float64(s.DeadLettered))
	}
	if status == "succeeded" {
		m.rowsOut.WithLabelValues(pipeline).Add(float64(res.RowsOut))
		m.lastSuccess.WithLabelValues(pipeline).Set(float64(time.Now().Unix()))
	}
}

// RunsCounter is the counter of pipeline's runs by trigger and status.
func (m *Metrics) RunsCounter(pipeline string, trigger Trigger, status string) prometheus.Counter {
	return m.runs.WithLabelValues(pipeline, string(trigger), status)
}

// RowsIn is the counter of records read from source by pipeline ("ingest": between runs).
func (m *Metrics) RowsIn(pipeline, source string) prometheus.Counter {
	return m.rowsIn.WithLabelValues(pipeline, source)
}

// LastSuccess is the gauge of pipeline's last successful run.
func (m *Metrics) LastSuccess(pipeline string) prometheus.Gauge {
	return m.lastSuccess.WithLabelValues(pipeline)
}

// Ingested records what ingest between runs loaded (pipeline label "ingest").
func (m *Metrics) Ingested(sr SourceResult) {
	m.rowsIn.WithLabelValues("ingest", sr.Name).Add(float64(sr.Read))
	m.deadLetters.WithLabelValues("ingest", sr.Name).Add(float64(sr.DeadLettered))
}

// Lag records the backlog of a streaming source.
func (m *Metrics) Lag(source string, backlog []connectors.Backlog) {
	for _, b := range backlog {
		m.kafkaLag.WithLabelValues(source, b.Stream).Set(float64(b.Waiting))
	}
}

// LoadLastSuccess sets the last-success gauges from pipeline_runs, so a restarted serve
// reports the truth before its first run.
func (m *Metrics) LoadLastSuccess(ctx context.Context, db connectors.Querier) error {
	rows, err := db.QueryContext(ctx, `SELECT pipeline, max(finished_at) FROM pipeline_runs WHERE status = 'succeeded' GROUP BY pipeline`)
	if err != nil {
		return fmt.Errorf("read last successful runs: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var p string
		var at sql.NullTime
		if err := rows.Scan(&p, &at); err != nil {
			return err
		}
		if at.Valid {
			m.lastSuccess.WithLabelValues(p).Set(float64(at.Time.Unix()))
		}
	}
	return rows.Err()
}

// SchedulerEvent follows the scheduler's decisions (scheduler.Scheduler.Events).
func (m *Metrics) SchedulerEvent(e scheduler.Event) {
	switch e.Kind {
	case scheduler.EventPlanned:
		m.nextRun.WithLabelValues(e.Pipeline).Set(float64(e.Next.Unix()))
	case scheduler.EventSkipped:
		m.skipped.WithLabelValues(e.Pipeline, "overlap").Inc()
	case scheduler.EventAlreadyRan:
		m.skipped.WithLabelValues(e.Pipeline, "already_ran").Inc()
		m.inProgress.WithLabelValues(e.Pipeline).Set(0)
	case scheduler.EventStarted:
		m.inProgress.WithLabelValues(e.Pipeline).Set(1)
	case scheduler.EventFinished:
		m.inProgress.WithLabelValues(e.Pipeline).Set(0)
	}
}
