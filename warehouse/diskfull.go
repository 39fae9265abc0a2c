package warehouse

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
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

// DiskFullError is DuckDB failing to write for want of disk: spilling to its temp directory
// (the 10M orders load spilled 18 GB beside an 8 GB memory_limit), or writing a file of its
// own (the warehouse, its write-ahead log, a published Parquet file or snapshot).
type DiskFullError struct {
	Dir       string // the directory whose disk is full
	Spill     bool   // the write was DuckDB spilling what did not fit in memory_limit
	FreeBytes int64  // -1: unknown
	Err       error
}

func (e *DiskFullError) Error() string {
	free := ""
	switch {
	case e.FreeBytes >= 1e9:
		free = fmt.Sprintf(" (%.1f GB free now)", float64(e.FreeBytes)/1e9)
	case e.FreeBytes >= 0:
		free = fmt.Sprintf(" (%.1f MB free now)", float64(e.FreeBytes)/1e6)
	}
	if e.Spill {
		return fmt.Sprintf("%v\n(hint: DuckDB writes what does not fit in warehouse.memory_limit to %s%s: free space there, "+
			"set warehouse.temp_directory to a larger disk, or raise memory_limit)", e.Err, e.Dir, free)
	}
	return fmt.Sprintf("%v\n(hint: the disk holding %s is full%s: free space there; what was written before is intact)", e.Err, e.Dir, free)
}

func (e *DiskFullError) Unwrap() error { return e.Err }

// unwritable is the file DuckDB names when a write fails (IO Error: Could not write file "…").
var unwritable = regexp.MustCompile(`Could not write file "([^"]+)"`)

// ExplainDiskFull returns err with the directory whose disk is full and its free space when
// DuckDB failed for want of disk, and err unchanged otherwise.
func (w *Warehouse) ExplainDiskFull(err error) error {
	if err == nil || errors.As(err, new(*DiskFullError)) {
		return err
	}
	e := &DiskFullError{Dir: cmp.Or(w.tempDir, "."), Spill: true, Err: err}
	// A file outside the temp directory is DuckDB's own (the warehouse, its WAL) or one
	// written for readers: the spill hint would send the operator to the wrong disk.
	outside := func(path string) {
		if rel, err := filepath.Rel(e.Dir, path); err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			e.Dir, e.Spill = filepath.Dir(path), false
		}
	}
	msg := err.Error()
	var pathErr *fs.PathError
	switch {
	case errors.As(err, &pathErr) && errors.Is(err, syscall.ENOSPC): // written by ckm itself
		outside(pathErr.Path)
	case strings.Contains(msg, "No space left on device") || strings.Contains(msg, "failed to offload data block"):
		if m := unwritable.FindStringSubmatch(msg); m != nil {
			outside(m[1])
		}
	default:
		return err
	}
	e.FreeBytes = freeBytes(e.Dir)
	return e
}
