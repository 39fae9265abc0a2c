package pipelines

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/ckm-dev/ckm/connectors"
	"github.com/ckm-dev/ckm/scheduler"
	"github.com/ckm-dev/ckm/warehouse"
)

// Run state and history: pipeline_runs records every run, pipeline_locks the one going on.

// ErrBusy is returned when the pipeline is already running in this process.
var ErrBusy = errors.New("pipeline is already running")

// Errors of runs that did not run to an end start with these: catch-up runs them again.
const (
	abandonedPrefix   = "abandoned: "
	interruptedPrefix = "interrupted: "
)

// owner names this process in pipeline_locks. The nonce tells a restarted process from a dead
// one that had the same pid.
var owner = func() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s:%d:%s", host, os.Getpid(), uuid.NewString()[:8])
}()

// LockOwner is how this process signs the pipeline locks it takes.
func LockOwner() string { return owner }

// begin takes the pipeline's lock and records the run as running. A lock held by another
// process is stale: DuckDB lets one process write, and this one does, so that process has
// died; its run is marked abandoned. A scheduled time that already ran is refused.
func (r *Runner) begin(ctx context.Context, conn *warehouse.Conn, req Request, res *Result) error {
	return conn.Tx(ctx, func(ctx context.Context) error {
		var holder, heldRun string
		var since time.Time
		err := conn.QueryRowContext(ctx, `SELECT owner, run_id, acquired_at FROM pipeline_locks WHERE pipeline = ?`, req.Pipeline).Scan(&holder, &heldRun, &since)
		switch {
		case err == nil && holder == owner:
			return fmt.Errorf("%w: run %s since %s", ErrBusy, heldRun, since.UTC().Format(time.RFC3339))
		case err != nil && !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("read pipeline lock: %w", err)
		}
		if _, err := conn.ExecContext(ctx, `DELETE FROM pipeline_locks WHERE pipeline = ?`, req.Pipeline); err != nil {
			return fmt.Errorf("take over stale pipeline lock: %w", err)
		}
		if _, err := conn.ExecContext(ctx, `UPDATE pipeline_runs SET status = 'failed', finished_at = now(),
			error = ? WHERE pipeline = ? AND status = 'running'`, abandonedPrefix+"the process ended before the run finished", req.Pipeline); err != nil {
			return fmt.Errorf("close abandoned runs: %w", err)
		}
		if req.ScheduledFor != nil {
			var ran string
			err := conn.QueryRowContext(ctx, `SELECT run_id FROM pipeline_runs WHERE pipeline = ? AND scheduled_for = ? AND `+ranToEnd+` LIMIT 1`,
				req.Pipeline, req.ScheduledFor.UTC()).Scan(&ran)
			if err == nil {
				return fmt.Errorf("%w: %s at %s (run %s)", scheduler.ErrAlreadyRan, req.Pipeline, req.ScheduledFor.UTC().Format(time.RFC3339), ran)
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("look up scheduled time: %w", err)
			}
		}
		if _, err := conn.ExecContext(ctx, `INSERT INTO pipeline_runs (run_id, pipeline, as_of, trigger, scheduled_for, started_at, status)
			VALUES (?, ?, ?, ?, ?, now(), 'running')`, res.RunID, req.Pipeline, res.AsOf, string(req.Trigger), utcOrNil(req.ScheduledFor)); err != nil {
			return fmt.Errorf("record run start: %w", err)
		}
		if _, err := conn.ExecContext(ctx, `INSERT INTO pipeline_locks VALUES (?, ?, ?, now())`, req.Pipeline, res.RunID, owner); err != nil {
			return fmt.Errorf("take pipeline lock: %w", err)
		}
		return nil
	})
}

// ranToEnd selects runs that ended by themselves, successfully or not: not running, not
// abandoned by a dead process, not interrupted by a shutdown.
const ranToEnd = `status <> 'running' AND coalesce(error, '') NOT LIKE '` + abandonedPrefix + `%' AND coalesce(error, '') NOT LIKE '` + interruptedPrefix + `%'`

// LastScheduled is the latest scheduled time of pipeline that ran to an end (see scheduler.Runs).
func LastScheduled(ctx context.Context, db connectors.Querier, pipeline string) (time.Time, bool, error) {
	var last sql.NullTime
	err := db.QueryRowContext(ctx, `SELECT max(scheduled_for) FROM pipeline_runs
		WHERE pipeline = ? AND trigger = 'schedule' AND `+ranToEnd, pipeline).Scan(&last)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("read scheduled runs of %s: %w", pipeline, err)
	}
	return last.Time, last.Valid, nil
}

func utcOrNil(t *time.Time) any {
	if t == nil {
		return nil
	}
	return t.UTC()
}

// fail records the run as failed; interrupted says its context ended (a shutdown), which
// catch-up treats as not run.
func (r *Runner) fail(conn *warehouse.Conn, res *Result, runErr error, interrupted bool) error {
	msg := StoredError(runErr)
	if interrupted {
		msg = interruptedPrefix + msg
	}
	// The run's context may be cancelled (SIGTERM): recording the failure must still happen.
	return conn.Tx(context.Background(), func(ctx context.Context) error {
		if err := recordSources(ctx, conn, res); err != nil {
			return err
		}
		if _, err := conn.ExecContext(ctx, `UPDATE pipeline_runs SET status = 'failed', finished_at = now(), error = ? WHERE run_id = ?`, msg, res.RunID); err != nil {
			return err
		}
		_, err := conn.ExecContext(ctx, `DELETE FROM pipeline_locks WHERE run_id = ?`, res.RunID)
		return err
	})
}

// recordSources stores what each source delivered in the run, and the totals on the run: every
// record read is loaded, dead-lettered, collapsed into another of its key, or skipped.
func recordSources(ctx context.Context, conn *warehouse.Conn, res *Result) error {
	var total connectors.BatchStats
	for _, s := range res.Sources {
		total.Add(s.BatchStats)
		if _, err := conn.ExecContext(ctx, `INSERT OR REPLACE INTO pipeline_run_sources
			(run_id, source, "table", rows_read, rows_loaded, dead_letters, rows_collapsed, rows_skipped, rows_replaced)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, res.RunID, s.Name, s.Table, s.Read, s.Loaded, s.DeadLettered, s.Collapsed, s.Skipped, s.Replaced); err != nil {
			return fmt.Errorf("record source %s of the run: %w", s.Name, err)
		}
	}
	_, err := conn.ExecContext(ctx, `UPDATE pipeline_runs SET rows_in = ?, dead_letters = ?, rows_loaded = ?, rows_collapsed = ?, rows_skipped = ?
		WHERE run_id = ?`, total.Read, total.DeadLettered, total.Loaded, total.Collapsed, total.Skipped, res.RunID)
	if err != nil {
		return fmt.Errorf("record the run's counts: %w", err)
	}
	return nil
}

// maxStoredError bounds a run's error as pipeline_runs keeps it.
const maxStoredError = 500

// quotedValue finds what error messages quote of a record: DuckDB's "Original Line: …" with
// what follows it, and values in single quotes.
var quotedValue = regexp.MustCompile(`(?s)Original Line:.*|'[^']*'`)

// StoredError is an error as ckm stores it where BI tools and logs can see it (pipeline_runs,
// the snapshot): one line, no record payload (quoted values become '…'; dead_letters, which
// stays private to the warehouse, keeps those), at most maxStoredError bytes.
func StoredError(err error) string {
	msg := quotedValue.ReplaceAllStringFunc(err.Error(), func(m string) string {
		if strings.HasPrefix(m, "Original Line:") {
			return ""
		}
		return "'…'"
	})
	msg = strings.Join(strings.Fields(msg), " ")
	if len(msg) > maxStoredError {
		cut := maxStoredError
		for cut > 0 && !utf8.RuneStart(msg[cut]) {
			cut--
		}
		msg = msg[:cut] + " …"
	}
	return msg
}
