// Package pipelines wires sources, transforms and outputs into runs and records each run's history.
package pipelines

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/google/uuid"

	"github.com/ckm-dev/ckm/config"
	"github.com/ckm-dev/ckm/connectors"
	"github.com/ckm-dev/ckm/publish"
	"github.com/ckm-dev/ckm/transforms/clv"
	"github.com/ckm-dev/ckm/warehouse"
)

// Trigger says why a run started.
type Trigger string

const (
	Manual   Trigger = "manual"
	Schedule Trigger = "schedule"
	Backfill Trigger = "backfill"
)

// Request asks for one run of a pipeline.
type Request struct {
	Pipeline     string
	AsOf         time.Time // a calendar date; only its year, month and day count
	Trigger      Trigger
	ScheduledFor *time.Time
	// AllowFuture lets a run score an as_of after today in the configured zone (refused by
	// default: it would score days that have not happened and move what BI sees ahead).
	AllowFuture bool
}

// SourceResult is what one source delivered in a run.
type SourceResult struct {
	Name  string
	Table string
	connectors.BatchStats
}

// Result describes a finished run.
type Result struct {
	RunID     string
	Pipeline  string
	AsOf      time.Time
	Sources   []SourceResult
	Customers int64            // customers scored
	Segments  map[string]int64 // RFM segment → customers
	Fits      []clv.Fit        // CLV model fits attempted in this run
	CLVStats  CLVStats
	Holdout   []clv.HoldoutGroup
	TierStage map[[2]string]int64 // (value tier, lifecycle stage) → customers
	Knowledge *KnowledgeResult    // nil unless the knowledge transform ran
	Warnings  []string
	RowsOut   int64
	Elapsed   time.Duration
	Succeeded bool   // the outputs and the run's success committed
	Published string // the report of what BI tools see, once published
	// PublishedPostgres is the PostgreSQL schema the run was published to ("" when not).
	PublishedPostgres string
}

// CLVStats shows where CLV time goes: fitting works on distinct histories, not on orders.
type CLVStats struct {
	Customers, Tuples int
	// Summary is the one pass over orders RFM and CLV share (see CustomerSummarySQL); Fit, both fits.
	Summary, Fit time.Duration
}

// Runner runs pipelines against one open warehouse.
type Runner struct {
	Config    *config.Config
	Warehouse *warehouse.Warehouse
	Log       *slog.Logger
	// Step, when set, is told when a long step starts; the returned func is called when it ends.
	Step func(name string) (done func())
	// Arrow, when set, is the memory transforms build their batches in, and batches read from
	// DuckDB are copied into it (by default they are read in DuckDB's own memory): tests set an
	// allocator that overwrites what is freed, so that a string kept past its batch's release
	// shows up as wrong output instead of a crash after commit in production.
	Arrow memory.Allocator
	// Now is the clock that tells what "today" is (default time.Now).
	Now func() time.Time
	// ChunkRows is how many customers scoring hands to the transforms at a time (default
	// DefaultChunkRows); what a transform needs of every customer it keeps as compact numbers.
	ChunkRows int
}

// today is the current calendar date in the configured zone.
func (r *Runner) today() time.Time {
	now := time.Now
	if r.Now != nil {
		now = r.Now
	}
	return civilDate(now().In(r.Config.Location()))
}

// FutureAsOfError refuses an as_of after today.
type FutureAsOfError struct {
	AsOf, Today time.Time
	Zone        string
}

func (e *FutureAsOfError) Error() string {
	return fmt.Sprintf("as_of %s is after today (%s in %s): a run would score days that have not happened yet and move what BI tools see ahead; pass --allow-future if that is what you want",
		e.AsOf.Format(time.DateOnly), e.Today.Format(time.DateOnly), e.Zone)
}

// checkAsOf refuses an as_of after today unless allowed.
func (r *Runner) checkAsOf(asOf time.Time, allowFuture bool) error {
	if today := r.today(); !allowFuture && asOf.After(today) {
		return &FutureAsOfError{AsOf: asOf, Today: today, Zone: r.Config.Timezone}
	}
	return nil
}

func (r *Runner) step(name string) func() {
	r.Log.Info("step started", "step", name)
	start := time.Now()
	var done func()
	if r.Step != nil {
		done = r.Step(name)
	}
	return func() {
		if done != nil {
			done()
		}
		r.Log.Info("step finished", "step", name, "elapsed", time.Since(start).Round(time.Millisecond).String())
	}
}

// Run runs one pipeline for one as_of date. Sources are loaded batch by batch, each batch
// committed with its checkpoint; all outputs for the as_of are then replaced in one
// transaction together with the run's success, so readers see the old result or the new one.
func (r *Runner) Run(ctx context.Context, req Request) (*Result, error) {
	p, ok := r.Config.Pipelines[req.Pipeline]
	if !ok {
		return nil, fmt.Errorf("unknown pipeline %q (configured: %s)", req.Pipeline, strings.Join(r.Config.PipelineNames(), ", "))
	}
	if req.Trigger == "" {
		req.Trigger = Manual
	}
	asOf := civilDate(req.AsOf)
	if err := r.checkAsOf(asOf, req.AllowFuture); err != nil {
		return nil, err
	}
	conn, err := r.Warehouse.Conn(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()

	id, err := uuid.NewV7()
	if err != nil {
		return nil, fmt.Errorf("new run id: %w", err)
	}
	res := &Result{RunID: id.String(), Pipeline: req.Pipeline, AsOf: asOf, Segments: map[string]int64{}, TierStage: map[[2]string]int64{}}
	log := r.Log.With("run_id", res.RunID, "pipeline", req.Pipeline, "as_of", asOf.Format(time.DateOnly))
	start := time.Now()
	if err := r.begin(ctx, conn, req, res); err != nil {
		return nil, err
	}
	runErr := r.Warehouse.ExplainDiskFull(r.execute(ctx, conn, p, res, log))
	res.Elapsed = time.Since(start)
	if runErr != nil {
		if err := r.fail(conn, res, runErr, ctx.Err() != nil); err != nil {
			log.Error("could not record failed run", "error", err)
		}
		log.Error("run failed", "error", runErr)
		return res, runErr
	}
	res.Succeeded = true
	log.Info("run succeeded", "rows_out", res.RowsOut, "elapsed", res.Elapsed.Round(time.Millisecond).String())
	if err := r.publish(ctx, conn, res, false); err != nil {
		return res, fmt.Errorf("the run succeeded but publishing its outputs failed (the next run publishes again): %w", err)
	}
	return res, nil
}

// RepublishIfBehind publishes the newest successful run again when latest/ does not show it:
// the process died after the run committed and before its publishing finished. Runs of an
// as_of after today are not considered: one was a mistake that `ckm publish` undid.
// PostgreSQL gets every as_of whose newest successful run it has not (publishPostgres).
func (r *Runner) RepublishIfBehind(ctx context.Context) error {
	conn, err := r.Warehouse.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	behind, err := r.filesBehind(ctx)
	if err != nil {
		return err
	}
	if behind != nil {
		r.Log.Warn("the newest successful run was not fully published: publishing it again", "run_id", behind.RunID, "as_of", behind.AsOf.Format(time.DateOnly))
		if err := r.publishFiles(ctx, conn, behind, false); err != nil {
			return err
		}
	}
	// A database that is down must not keep the scheduler from starting: the next run tries again.
	if _, _, err := r.publishPostgres(ctx, conn, nil); err != nil {
		r.Log.Error("could not publish to PostgreSQL at start; each run tries again", "error", err)
	}
	return nil
}

// filesBehind is the newest successful run when latest/ does not show it; nil when it does
// or Parquet is off (the manifest that tells is in latest/, written with the Parquet files).
func (r *Runner) filesBehind(ctx context.Context) (*Result, error) {
	if !*r.Config.Publish.Parquet {
		return nil, nil
	}
	res, err := r.newestSucceeded(ctx, "", nil)
	if res == nil || err != nil {
		return nil, err
	}
	m, err := publish.ReadManifest(filepath.Join(r.Config.Publish.Dir, "latest"))
	if err != nil || (m != nil && (m.RunID == res.RunID || m.AsOf > res.AsOf.Format(time.DateOnly))) {
		return nil, err
	}
	return res, nil
}

// Publish publishes a successful run again and makes it what latest/ and the snapshot show,
// even when they show a newer as_of: `ckm publish` undoes a run of the wrong date. It is the
// newest successful run of pipeline ("" for any) for asOf, or with asOf nil the newest one up
// to today.
func (r *Runner) Publish(ctx context.Context, pipeline string, asOf *time.Time) (*Result, error) {
	res, err := r.newestSucceeded(ctx, pipeline, asOf)
	if err != nil {
		return nil, err
	}
	if res == nil {
		what := "up to today"
		if asOf != nil {
			what = "for as_of " + asOf.Format(time.DateOnly)
		}
		return nil, fmt.Errorf("no successful run %s to publish (see ckm status)", what)
	}
	conn, err := r.Warehouse.Conn(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return res, r.publish(ctx, conn, res, true)
}

// newestSucceeded is the newest successful run of pipeline ("" for any) for asOf, or with asOf
// nil of any as_of up to today; nil when there is none.
func (r *Runner) newestSucceeded(ctx context.Context, pipeline string, asOf *time.Time) (*Result, error) {
	q := `SELECT run_id, pipeline, as_of FROM pipeline_runs WHERE status = 'succeeded' AND (? = '' OR pipeline = ?)`
	args := []any{pipeline, pipeline}
	if asOf != nil {
		q += ` AND as_of = ?`
		args = append(args, civilDate(*asOf))
	} else {
		q += ` AND as_of <= ?`
		args = append(args, r.today())
	}
	res := &Result{}
	err := r.Warehouse.DB().QueryRowContext(ctx, q+` ORDER BY as_of DESC, finished_at DESC LIMIT 1`, args...).Scan(&res.RunID, &res.Pipeline, &res.AsOf)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("find the newest successful run: %w", err)
	}
	return res, nil
}

// publish hands the run's committed outputs to BI tools (see package publish). force makes it
// what latest/ shows even if latest/ shows a newer as_of.
func (r *Runner) publish(ctx context.Context, conn *warehouse.Conn, res *Result, force bool) error {
	err := r.Warehouse.ExplainDiskFull(r.publishFiles(ctx, conn, res, force))
	// PostgreSQL does not depend on the files: a failure of either leaves the other published.
	var again *Result
	if force {
		again = res
	}
	schema, published, pgErr := r.publishPostgres(ctx, conn, again)
	if slices.Contains(published, res.RunID) {
		res.PublishedPostgres = schema
	}
	return errors.Join(err, pgErr)
}

// publishFiles writes the run's Parquet partitions, report, latest/ and snapshot.
func (r *Runner) publishFiles(ctx context.Context, conn *warehouse.Conn, res *Result, force bool) error {
	done := r.step("publish for BI")
	defer done()
	p := r.Config.Publish
	run, err := r.publishRun(ctx, conn, res)
	if err != nil {
		return err
	}
	opts := publish.Options{Dir: p.Dir, Parquet: *p.Parquet, Snapshot: *p.Snapshot, Report: *p.Report, Log: r.Log,
		Force: force, Today: r.today(), Mode: p.FileMode(), CustomerColumns: p.CustomerColumns}
	next := run.Next
	run.Next = nil // the files of the next as_of are published again whole, below
	err = publish.Publish(ctx, conn, opts, run)
	if err == nil {
		res.Published = filepath.Join(p.Dir, "latest", "report.html")
	}
	// A run of an earlier date changed what the next as_of moved from: its change partitions,
	// its report, and latest/ and the snapshot when they show it, are published again. (A
	// forced publish changes no data, and must not move latest/ off the run it chose; a run of
	// an as_of after today was a mistake, which publishing it again would bring back.)
	if err == nil && next != nil && !force && !next.After(r.today()) {
		err = r.republishFiles(ctx, conn, opts, res.Pipeline, *next)
	}
	return err
}

// republishFiles publishes the files of the pipeline's newest successful run for asOf again.
func (r *Runner) republishFiles(ctx context.Context, conn *warehouse.Conn, opts publish.Options, pipeline string, asOf time.Time) error {
	res, err := r.newestSucceeded(ctx, pipeline, &asOf)
	if err != nil || res == nil {
		return err
	}
	r.Log.Info("publishing the next as_of again: its changes compare with this run's", "as_of", asOf.Format(time.DateOnly), "run_id", res.RunID)
	return publish.Publish(ctx, conn, opts, publish.Run{RunID: res.RunID, Pipeline: res.Pipeline, AsOf: res.AsOf})
}

// publishRun is what publishing res covers: its as_of, and the next as_of's changes.
func (r *Runner) publishRun(ctx context.Context, conn *warehouse.Conn, res *Result) (publish.Run, error) {
	next, err := adjacentAsOf(ctx, conn, res.Pipeline, res.AsOf, nextAsOf)
	return publish.Run{RunID: res.RunID, Pipeline: res.Pipeline, AsOf: res.AsOf, Next: next}, err
}

// publishPostgres publishes to PostgreSQL, when it is an output, each as_of whose newest
// successful run it has not got yet, oldest first (so a database that was down, or newly
// configured, catches up), and again also the run again, when not nil. pipeline_runs records
// each run published; published lists them.
func (r *Runner) publishPostgres(ctx context.Context, conn *warehouse.Conn, again *Result) (schema string, published []string, err error) {
	dsn, schema, on, err := r.Config.Publish.PostgresTarget()
	if !on || err != nil {
		return "", nil, err
	}
	againID := ""
	if again != nil {
		againID = again.RunID
	}
	rows, err := conn.QueryContext(ctx, `SELECT run_id, pipeline, as_of FROM (
			SELECT *, row_number() OVER (PARTITION BY as_of ORDER BY finished_at DESC) AS newest
			FROM pipeline_runs WHERE status = 'succeeded')
		WHERE newest = 1 AND (postgres_published_at IS NULL OR run_id = ?) ORDER BY as_of`, againID)
	if err != nil {
		return "", nil, fmt.Errorf("find runs to publish to PostgreSQL: %w", err)
	}
	var todo []*Result
	for rows.Next() {
		res := &Result{}
		if err := rows.Scan(&res.RunID, &res.Pipeline, &res.AsOf); err != nil {
			rows.Close()
			return "", nil, err
		}
		todo = append(todo, res)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return "", nil, fmt.Errorf("find runs to publish to PostgreSQL: %w", err)
	}
	done := r.step("publish to PostgreSQL")
	defer done()
	for _, res := range todo {
		run, err := r.publishRun(ctx, conn, res)
		if err != nil {
			return schema, published, err
		}
		opts := publish.PostgresOptions{DSN: dsn, Schema: schema, CustomerColumns: r.Config.Publish.CustomerColumns,
			ReaderWait: r.Config.Publish.PostgresReaderWait(), Log: r.Log}
		if err := publish.PublishPostgres(ctx, conn, opts, run); err != nil {
			return schema, published, err
		}
		if _, err := conn.ExecContext(ctx, `UPDATE pipeline_runs SET postgres_published_at = now() WHERE run_id = ?`, res.RunID); err != nil {
			return schema, published, fmt.Errorf("record the run published to PostgreSQL: %w", err)
		}
		published = append(published, res.RunID)
		r.Log.Info("published to PostgreSQL", "schema", schema, "as_of", res.AsOf.Format(time.DateOnly), "run_id", res.RunID)
	}
	return schema, published, nil
}

func (r *Runner) execute(ctx context.Context, conn *warehouse.Conn, p *config.Pipeline, res *Result, log *slog.Logger) error {
	for _, name := range r.Config.SourceNames(p.Sources) {
		sr, err := r.ingest(ctx, conn, name, res.RunID, log)
		res.Sources = append(res.Sources, sr)
		if err != nil {
			return err
		}
	}
	outs, err := r.score(ctx, conn, p, res, log)
	if err != nil {
		return err
	}
	defer outs.release()
	done := r.step("write outputs")
	defer done()
	return conn.Tx(ctx, func(ctx context.Context) error {
		n, err := outs.write(ctx, conn, res)
		if err != nil {
			return err
		}
		res.RowsOut = n
		if err := recordSources(ctx, conn, res); err != nil {
			return err
		}
		_, err = conn.ExecContext(ctx, `UPDATE pipeline_runs SET status = 'succeeded', finished_at = now(), rows_out = ?, error = NULL WHERE run_id = ?`, n, res.RunID)
		if err != nil {
			return fmt.Errorf("record run success: %w", err)
		}
		if _, err := conn.ExecContext(ctx, `DELETE FROM pipeline_locks WHERE run_id = ?`, res.RunID); err != nil {
			return fmt.Errorf("release pipeline lock: %w", err)
		}
		return recordChanges(ctx, conn, res.Pipeline, res.AsOf)
	})
}

// Ingest loads what is new in one source without scoring: each batch commits with its
// checkpoint as in a run. With follow, a streaming source keeps loading micro-batches until
// ctx ends, which then ends the ingest without error.
func (r *Runner) Ingest(ctx context.Context, source string, follow bool) (SourceResult, error) {
	return r.ingestAlone(ctx, source, readMode{follow: follow})
}

// Reload reads every stream of one source again from its start, each replacing what it loaded
// and superseding its dead letters: after a mapping was fixed, the records it dead-lettered load.
// Only a source whose connector can (files) is reloaded.
func (r *Runner) Reload(ctx context.Context, source string) (SourceResult, error) {
	return r.ingestAlone(ctx, source, readMode{reload: true})
}

// Restart forgets where the named streams of a source stand, so that its next read takes each
// as never read: a Kafka partition from its start setting (after its topic was deleted and
// created again, its offsets began anew), a PostgreSQL table whole (after it was restored with
// older cursor values). What is read again replaces its rows by key. A file source's files are
// read again with Reload instead, each replacing its own rows.
func (r *Runner) Restart(ctx context.Context, source string, streams []string) error {
	if err := r.knownSource(source); err != nil {
		return err
	}
	s := r.Config.Sources[source]
	if kind, _ := connectors.Lookup(s.Kind); kind.Spec.Reloads {
		return fmt.Errorf("source %s: the %s connector's streams are read again with --reload, not restarted", source, s.Kind)
	}
	conn, err := r.Warehouse.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	err = conn.Tx(ctx, func(ctx context.Context) error {
		for _, stream := range streams {
			res, err := conn.ExecContext(ctx, `DELETE FROM source_positions WHERE source = ? AND stream = ?`, source, stream)
			if err != nil {
				return err
			}
			if n, err := res.RowsAffected(); err != nil || n == 0 {
				known, err := storedPositions{conn, source}.Load(ctx)
				if err != nil {
					return err
				}
				return fmt.Errorf("source %s has read no stream %q (it has read: %s)", source, stream, strings.Join(slices.Sorted(maps.Keys(known)), ", "))
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("restart %s: %w", source, err)
	}
	r.Log.Warn("streams restarted: the next read takes them as never read", "source", source, "streams", streams)
	return nil
}

// knownSource says when source is not configured, naming those that are.
func (r *Runner) knownSource(source string) error {
	if _, ok := r.Config.Sources[source]; !ok {
		return fmt.Errorf("unknown source %q (configured: %s)", source, strings.Join(r.Config.SourceNames(nil), ", "))
	}
	return nil
}

// readMode is how an ingest reads its source: following it, or again from the start.
type readMode struct{ follow, reload, replay bool }

// ReplayDeadLetters maps one source's current dead letters again, from what was kept of them,
// without reading the source: after its mapping was fixed, those records load, and those still
// bad become dead letters anew in place of the old. Only a source whose connector replays
// (connectors.Replayer: Kafka, whose topics drop what their retention passed) is replayed.
func (r *Runner) ReplayDeadLetters(ctx context.Context, source string) (SourceResult, error) {
	return r.ingestAlone(ctx, source, readMode{replay: true})
}

func (r *Runner) ingestAlone(ctx context.Context, source string, mode readMode) (SourceResult, error) {
	if err := r.knownSource(source); err != nil {
		return SourceResult{Name: source}, err
	}
	conn, err := r.Warehouse.Conn(ctx)
	if err != nil {
		return SourceResult{Name: source}, err
	}
	defer conn.Close()
	id, err := uuid.NewV7()
	if err != nil {
		return SourceResult{Name: source}, fmt.Errorf("new run id: %w", err)
	}
	runID := "ingest-" + id.String()
	sr, err := r.ingestWith(ctx, conn, source, runID, r.Log.With("run_id", runID), mode)
	if mode.follow && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return sr, nil
	}
	return sr, r.Warehouse.ExplainDiskFull(err)
}

// Backlog asks a streaming source how much waits to be read (nil for sources that cannot tell,
// such as files). It only reads the warehouse, so the warehouse may be open read-only.
func (r *Runner) Backlog(ctx context.Context, source string) ([]connectors.Backlog, error) {
	if _, ok := r.Config.Sources[source]; !ok {
		return nil, fmt.Errorf("unknown source %q", source)
	}
	src, err := r.openSource(ctx, connectors.Env{Source: source, DB: r.Warehouse.DB(), Positions: storedPositions{r.Warehouse.DB(), source},
		Log: r.Log.With("source", source)})
	if err != nil {
		return nil, err
	}
	b, ok := src.(connectors.Backlogger)
	if !ok {
		return nil, nil
	}
	out, err := b.Backlog(ctx)
	if err != nil {
		return nil, fmt.Errorf("source %s: %w", source, err)
	}
	return out, nil
}

// openSource opens the connector of env.Source, filling in what config says of the source.
func (r *Runner) openSource(ctx context.Context, env connectors.Env) (connectors.Source, error) {
	s := r.Config.Sources[env.Source]
	kind, ok := connectors.Lookup(s.Kind)
	if !ok {
		return nil, fmt.Errorf("source %s: connector kind %q is not registered", env.Source, s.Kind)
	}
	env.Table, env.BaseDir = s.Table, r.Config.BaseDir
	src, err := kind.Open(ctx, env, s.Options)
	if err != nil {
		return nil, fmt.Errorf("source %s: open: %w", env.Source, err)
	}
	return src, nil
}

func (r *Runner) ingest(ctx context.Context, conn *warehouse.Conn, name, runID string, log *slog.Logger) (SourceResult, error) {
	return r.ingestWith(ctx, conn, name, runID, log, readMode{})
}

func (r *Runner) ingestWith(ctx context.Context, conn *warehouse.Conn, name, runID string, log *slog.Logger, mode readMode) (SourceResult, error) {
	sr := SourceResult{Name: name, Table: r.Config.Sources[name].Table}
	kind, _ := connectors.Lookup(r.Config.Sources[name].Kind)
	if mode.reload && !kind.Spec.Reloads {
		return sr, fmt.Errorf("source %s: the %s connector cannot read its input again from the start (only file sources reload)", name, r.Config.Sources[name].Kind)
	}
	done := r.step("load " + name)
	defer done()
	scratch, removeScratch, err := r.Warehouse.MakeScratch()
	if err != nil {
		return sr, fmt.Errorf("source %s: %w", name, err)
	}
	defer func() {
		// What was read is committed: a leftover is the next run's to sweep, not a failure.
		if err := removeScratch(); err != nil {
			log.Warn("temporary files left behind", "source", name, "dir", scratch, "error", err)
		}
	}()
	env := connectors.Env{Source: name, RunID: runID, DB: conn, Positions: storedPositions{conn, name}, Log: log.With("source", name), Follow: mode.follow,
		Reload: mode.reload, Scratch: scratch}
	src, err := r.openSource(ctx, env)
	if err != nil {
		return sr, err
	}
	// Only a streaming source follows; the others read what is there, as in a run.
	w := newBatchWriter(conn, r.Config, name, runID, log, mode.follow && kind.Spec.Streaming)
	if mode.replay {
		rp, ok := src.(connectors.Replayer)
		if !ok {
			return sr, fmt.Errorf("source %s: the %s connector cannot replay dead letters: read its input again instead (--reload for files, --restart for a PostgreSQL table)",
				name, r.Config.Sources[name].Kind)
		}
		err = replay(ctx, conn, name, rp, w, env.Log)
	} else {
		err = src.Read(ctx, w)
	}
	sr.BatchStats = w.total
	if err != nil {
		return sr, fmt.Errorf("source %s: %w", name, err)
	}
	env.Log.Info("source loaded", "read", sr.Read, "loaded", sr.Loaded, "dead_letters", sr.DeadLettered, "collapsed", sr.Collapsed, "skipped", sr.Skipped)
	return sr, nil
}

// replayedLetters is the temp table of the dead letters a replay maps again, numbered; a batch
// of them at a time is in replayBatch.
const (
	replayedLetters = "replayed_dead_letters"
	replayBatch     = "replayed_dead_letters_batch"
)

// replayBatchSize bounds the dead letters one replay transaction maps again: a mapping mistake
// can dead-letter a source's every record for days.
const replayBatchSize = 100_000

// replay hands w, in batches of replayBatchSize, each its own transaction, the source's current
// dead letters that were kept with what mapping them again needs: those the mapping
// dead-lettered (not records the connector could not read, such as bytes that are not UTF-8)
// and stored since dead letters keep a record's fields (meta), one per position. A replay that
// stops between batches leaves the rest current, for the next one.
func replay(ctx context.Context, conn *warehouse.Conn, source string, rp connectors.Replayer, w connectors.Writer, log *slog.Logger) error {
	_, err := conn.ExecContext(ctx, `CREATE OR REPLACE TEMP TABLE `+replayedLetters+` AS
		SELECT position, payload, meta, row_number() OVER (ORDER BY position) AS n FROM (
			SELECT position, payload, meta FROM dead_letters WHERE source = ? AND superseded_by IS NULL AND meta IS NOT NULL
			QUALIFY row_number() OVER (PARTITION BY position ORDER BY received_at DESC, run_id DESC) = 1)`, source)
	if err != nil {
		return fmt.Errorf("replay dead letters: %w", err)
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), "DROP TABLE IF EXISTS temp."+replayedLetters+"; DROP TABLE IF EXISTS temp."+replayBatch)
	var replayed, kept int64
	err = conn.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM `+replayedLetters+`),
		(SELECT count(DISTINCT position) FROM dead_letters WHERE source = ? AND superseded_by IS NULL AND meta IS NULL)`, source).Scan(&replayed, &kept)
	if err != nil {
		return fmt.Errorf("replay dead letters: %w", err)
	}
	if kept > 0 {
		log.Warn("dead letters left as they are: the source could not hand them over as records, or they were stored before ckm kept a record's fields",
			"dead_letters", kept)
	}
	for from := int64(1); from <= replayed; from += replayBatchSize {
		if _, err := conn.ExecContext(ctx, `CREATE OR REPLACE TEMP TABLE `+replayBatch+` AS
			SELECT position, payload, meta FROM `+replayedLetters+` WHERE n >= ? AND n < ?`, from, from+replayBatchSize); err != nil {
			return fmt.Errorf("replay dead letters: %w", err)
		}
		if _, err := w.Write(ctx, rp.Replay("temp."+replayBatch)); err != nil {
			return err
		}
	}
	return nil
}

// civilDate keeps only the calendar date, as midnight UTC, so DuckDB binds it as that DATE.
func civilDate(t time.Time) time.Time {
	return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
}
