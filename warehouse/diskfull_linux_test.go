package warehouse_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ckm-dev/ckm/warehouse"
)

// A disk that fills outside the temp directory (the warehouse's own, the publish directory) is
// named as the one to free: /dev/full answers every write with ENOSPC, as a full disk does.
func TestAFullDiskOutsideTheTempDirectoryIsNamed(t *testing.T) {
	dir := t.TempDir()
	w, err := warehouse.Open(context.Background(), warehouse.Options{Path: filepath.Join(dir, "ckm.duckdb"), Threads: 2})
	require.NoError(t, err)
	defer w.Close()

	_, byDuckDB := w.DB().Exec(`COPY (SELECT range FROM range(100000)) TO '/dev/full' (FORMAT csv)`)
	require.Error(t, byDuckDB)
	byGo := fmt.Errorf("publish report: %w", os.WriteFile("/dev/full", make([]byte, 1<<16), 0o600))
	for _, err := range []error{byDuckDB, byGo} {
		explained := w.ExplainDiskFull(err)
		var full *warehouse.DiskFullError
		require.True(t, errors.As(explained, &full), "%v", explained)
		require.Equal(t, "/dev", full.Dir)
		require.False(t, full.Spill)
		require.Contains(t, explained.Error(), "the disk holding /dev is full")
		require.NotContains(t, explained.Error(), "temp_directory", "not a spill: its hint would send the operator to the wrong disk")
		require.ErrorIs(t, explained, err)
	}
}
