package warehouse

import (
	"cmp"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
)

// tempDirectory is where DuckDB spills what does not fit in memory_limit.
func tempDirectory(opts Options) string {
	return cmp.Or(opts.TempDirectory, DefaultTempDirectory(opts.Path))
}

// DefaultTempDirectory is where DuckDB spills for the warehouse file at path unless told
// otherwise: .duckdb_tmp beside it.
func DefaultTempDirectory(path string) string {
	abs, err := filepath.Abs(path)
	if err != nil {
		abs = path
	}
	return filepath.Join(filepath.Dir(abs), ".duckdb_tmp")
}

// SpillError is DuckDB failing to spill to its temp directory: the disk filled up (the 10M
// orders load spilled 18 GB beside an 8 GB memory_limit).
type SpillError struct {
	Dir       string
	FreeBytes int64 // -1: unknown
	Err       error
}

func (e *SpillError) Error() string {
	free := ""
	switch {
	case e.FreeBytes >= 1e9:
		free = fmt.Sprintf(" (%.1f GB free now)", float64(e.FreeBytes)/1e9)
	case e.FreeBytes >= 0:
		free = fmt.Sprintf(" (%.1f MB free now)", float64(e.FreeBytes)/1e6)
	}
	return fmt.Sprintf("%v\n(hint: DuckDB writes what does not fit in warehouse.memory_limit to %s%s: free space there, "+
		"set warehouse.temp_directory to a larger disk, or raise memory_limit)", e.Err, e.Dir, free)
}

func (e *SpillError) Unwrap() error { return e.Err }

// ExplainSpill returns err with the temp directory and its free space when DuckDB failed for
// want of disk to spill to, and err unchanged otherwise.
func (w *Warehouse) ExplainSpill(err error) error {
	if err == nil || errors.As(err, new(*SpillError)) {
		return err
	}
	msg := err.Error()
	if !strings.Contains(msg, "No space left on device") && !strings.Contains(msg, "failed to offload data block") {
		return err
	}
	dir := cmp.Or(w.tempDir, ".")
	return &SpillError{Dir: dir, FreeBytes: freeBytes(dir), Err: err}
}
