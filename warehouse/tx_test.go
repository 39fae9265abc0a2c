package warehouse_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ckm-dev/ckm/warehouse"
)

// A commit DuckDB refuses has rolled the transaction back: the error says why it failed, and
// nothing of it landed.
func TestAFailedCommitReportsItsCauseAlone(t *testing.T) {
	ctx := context.Background()
	w, err := warehouse.Open(ctx, warehouse.Options{Path: filepath.Join(t.TempDir(), "ckm.duckdb"), Threads: 2})
	require.NoError(t, err)
	defer w.Close()
	_, err = w.DB().Exec(`CREATE TABLE keyed (k INTEGER PRIMARY KEY, writer VARCHAR)`)
	require.NoError(t, err)
	first, err := w.Conn(ctx)
	require.NoError(t, err)
	defer first.Close()
	second, err := w.Conn(ctx)
	require.NoError(t, err)
	defer second.Close()

	// Both insert key 1 in transactions open at once: the second commits first, and the first's
	// commit conflicts.
	err = first.Tx(ctx, func(ctx context.Context) error {
		if _, err := first.ExecContext(ctx, `INSERT INTO keyed VALUES (1, 'first')`); err != nil {
			return err
		}
		return second.Tx(ctx, func(ctx context.Context) error {
			_, err := second.ExecContext(ctx, `INSERT INTO keyed VALUES (1, 'second')`)
			return err
		})
	})
	require.ErrorContains(t, err, "commit: TransactionContext Error: Failed to commit: PRIMARY KEY or UNIQUE constraint violation")
	require.NotContains(t, err.Error(), "rollback", "the failed commit rolled back: no second error about a rollback")
	var writers string
	require.NoError(t, w.DB().QueryRow(`SELECT string_agg(writer) FROM keyed`).Scan(&writers))
	require.Equal(t, "second", writers, "the first transaction did not land")

	// The connection whose commit failed opens the next transaction as usual.
	require.NoError(t, first.Tx(ctx, func(ctx context.Context) error {
		_, err := first.ExecContext(ctx, `INSERT INTO keyed VALUES (2, 'first')`)
		return err
	}))
	require.NoError(t, w.DB().QueryRow(`SELECT string_agg(writer ORDER BY k) FROM keyed`).Scan(&writers))
	require.Equal(t, "second,first", writers)
}
