package warehouse_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ckm-dev/ckm/warehouse"
)

// A query DuckDB cannot spill for want of disk fails with where it spills and what is free there.
func TestSpillFailuresNameTheTempDirectory(t *testing.T) {
	dir := t.TempDir()
	spill := filepath.Join(dir, "scratch disk")
	w, err := warehouse.Open(context.Background(), warehouse.Options{Path: filepath.Join(dir, "ckm.duckdb"), MemoryLimit: "64MB", Threads: 2, TempDirectory: spill})
	require.NoError(t, err)
	defer w.Close()
	var setting string
	require.NoError(t, w.DB().QueryRow(`SELECT current_setting('temp_directory')`).Scan(&setting))
	require.Equal(t, spill, setting)

	// A full disk, as DuckDB sees it: a temp directory allowed 1 MB.
	_, err = w.DB().Exec(`SET max_temp_directory_size = '1MB'`)
	require.NoError(t, err)
	_, err = w.DB().Exec(`CREATE TEMP TABLE t AS SELECT range AS a, md5(CAST(range AS VARCHAR)) AS b FROM range(5000000)`)
	require.Error(t, err)
	explained := w.ExplainDiskFull(err)
	var spillErr *warehouse.DiskFullError
	require.True(t, errors.As(explained, &spillErr), "%v", explained)
	require.Equal(t, spill, spillErr.Dir)
	require.True(t, spillErr.Spill)
	require.Positive(t, spillErr.FreeBytes, "the directory DuckDB spilled to exists")
	require.Contains(t, explained.Error(), "set warehouse.temp_directory to a larger disk")
	require.ErrorIs(t, explained, err)

	other := errors.New("Binder Error: no such column")
	require.Equal(t, other, w.ExplainDiskFull(other), "other errors pass unchanged")
}
