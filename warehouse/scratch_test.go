package warehouse

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A sweep removes what ended processes left in the scratch root, a killed one not yet reaped
// included, and only that: a process still reading keeps its files.
func TestMakeScratchRemovesOnlyWhatEndedProcessesLeft(t *testing.T) {
	w := &Warehouse{path: filepath.Join(t.TempDir(), "ckm.duckdb")}
	root := ScratchRoot(w.path)
	ended := exec.Command("true")
	require.NoError(t, ended.Run())
	// Killed but not yet reaped by its parent (this test): a zombie, which still answers signal 0.
	killed := exec.Command("sleep", "60")
	require.NoError(t, killed.Start())
	require.NoError(t, killed.Process.Kill())
	defer killed.Wait()
	require.Eventually(t, func() bool {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", killed.Process.Pid))
		return err == nil && strings.Contains(string(stat), ") Z ")
	}, 5*time.Second, 10*time.Millisecond)
	running := filepath.Join(root, strconv.Itoa(os.Getppid())+"-1")
	left := []string{filepath.Join(root, strconv.Itoa(ended.Process.Pid)+"-2"), filepath.Join(root, strconv.Itoa(killed.Process.Pid)+"-4"),
		filepath.Join(root, "not-a-pid")}
	for _, d := range append([]string{running}, left...) {
		require.NoError(t, os.MkdirAll(filepath.Join(d, "file-3"), 0o700))
		require.NoError(t, os.WriteFile(filepath.Join(d, "file-3", "piece.csv"), []byte("a,b\n"), 0o600))
	}

	dir, remove, err := w.MakeScratch()
	require.NoError(t, err)
	require.Equal(t, root, filepath.Dir(dir))
	require.DirExists(t, running, "its process still runs")
	for _, d := range left {
		require.NoDirExists(t, d)
	}
	require.NoError(t, remove())
	require.NoDirExists(t, dir)
	require.DirExists(t, root, "another process's directory keeps the root")
	require.NoError(t, os.RemoveAll(running))
	_, remove, err = w.MakeScratch()
	require.NoError(t, err)
	require.NoError(t, remove())
	require.NoDirExists(t, root, "the last one out removes the root: no empty directory stays beside the warehouse")

	memory := &Warehouse{path: ":memory:"}
	dir, remove, err = memory.MakeScratch()
	require.NoError(t, err)
	require.Empty(t, dir, "an in-memory warehouse has no place beside it: the system's temporary directory")
	require.NoError(t, remove())
}
