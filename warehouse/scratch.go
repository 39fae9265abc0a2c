package warehouse

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Connectors write temporary files while they read (a file's UTF-8 copy, the piece of a large
// file being loaded). They go beside the warehouse, on the disk sized for its data, rather than
// to /tmp (often small, or memory), and a process killed mid-read leaves them where the next
// one finds and removes them.

// ScratchRoot is the directory that holds the scratch directories of the warehouse at path.
func ScratchRoot(path string) string {
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	return path + ".scratch"
}

// MakeScratch makes a directory for this process's temporary files under the warehouse's
// scratch root, after removing those that processes no longer running left there. remove
// deletes it with what it holds. An in-memory warehouse has none: dir is empty, for the
// system's temporary directory.
func (w *Warehouse) MakeScratch() (dir string, remove func() error, err error) {
	if w.path == ":memory:" {
		return "", func() error { return nil }, nil
	}
	root := ScratchRoot(w.path)
	if err := os.MkdirAll(root, 0o700); err != nil {
		return "", nil, fmt.Errorf("make scratch directory: %w", err)
	}
	if err := sweepScratch(root); err != nil {
		return "", nil, fmt.Errorf("clear scratch directory %s: %w", root, err)
	}
	// Named after the process, so that a sweep can tell whether its owner still runs.
	dir, err = os.MkdirTemp(root, strconv.Itoa(os.Getpid())+"-")
	if errors.Is(err, os.ErrNotExist) {
		// Another process removed the root as it finished, between the two calls.
		if err = os.MkdirAll(root, 0o700); err == nil {
			dir, err = os.MkdirTemp(root, strconv.Itoa(os.Getpid())+"-")
		}
	}
	if err != nil {
		return "", nil, fmt.Errorf("make scratch directory: %w", err)
	}
	return dir, func() error {
		err := os.RemoveAll(dir)
		// The root goes too once empty, so that no empty directory stays beside the warehouse;
		// another process's directory in it keeps it (the removal then fails, as it should).
		_ = os.Remove(root)
		return err
	}, nil
}

// sweepScratch removes the scratch directories in root whose process has ended.
func sweepScratch(root string) error {
	entries, err := os.ReadDir(root)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		owner, _, _ := strings.Cut(e.Name(), "-")
		pid, err := strconv.Atoi(owner)
		if err == nil && pid > 0 && (pid == os.Getpid() || alive(pid)) {
			continue
		}
		if err := os.RemoveAll(filepath.Join(root, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
