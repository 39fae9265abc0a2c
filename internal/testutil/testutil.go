// Package testutil has helpers shared by tests: locating the repository and its example data,
// and running a config against a fresh warehouse.
package testutil

import (
	"context"
	"database/sql"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/ckm-dev/ckm/config"
	_ "github.com/ckm-dev/ckm/connectors/all" // the connectors configs name
	"github.com/ckm-dev/ckm/pipelines"
	"github.com/ckm-dev/ckm/warehouse"
)

// RepoRoot is the repository's top directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Example is a file or folder under examples/, where the real datasets the examples and tests
// read are kept (each folder names its source and licence).
func Example(t testing.TB, rel string) string {
	p := filepath.Join(RepoRoot(), "examples", rel)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("example data %s is missing: %v", p, err)
	}
	return p
}

// Env is a loaded config with an open warehouse in a temp dir.
type Env struct {
	Config    *config.Config
	Warehouse *warehouse.Warehouse
}

// Open loads a config file, pointing its warehouse at a fresh file in a temp dir
// (configs read the path from ${CKM_WAREHOUSE}).
func Open(t testing.TB, configPath string) *Env {
	t.Setenv("CKM_WAREHOUSE", filepath.Join(t.TempDir(), "ckm.duckdb"))
	cfg, err := config.Load(configPath)
	require.NoError(t, err)
	w, err := warehouse.Open(context.Background(), cfg.Warehouse.Options())
	require.NoError(t, err)
	t.Cleanup(func() { w.Close() })
	return &Env{Config: cfg, Warehouse: w}
}

// OpenYAML writes a config into dir, loads it and opens its warehouse (paths in the config
// resolve against dir).
func OpenYAML(t testing.TB, dir, yaml string) *Env {
	path := filepath.Join(dir, "config.yaml")
	require.NoError(t, os.WriteFile(path, []byte(yaml), 0o644))
	cfg, err := config.Load(path)
	require.NoError(t, err, yaml)
	w, err := warehouse.Open(context.Background(), cfg.Warehouse.Options())
	require.NoError(t, err)
	t.Cleanup(func() { w.Close() })
	return &Env{Config: cfg, Warehouse: w}
}

// ConfigProblems loads a config that must fail validation, written into a temp dir, and returns
// its problems as the user sees them (each with its key and line).
func ConfigProblems(t testing.TB, yaml string) string {
	path := filepath.Join(t.TempDir(), "config.yaml")
	require.NoError(t, os.WriteFile(path, []byte(yaml), 0o644))
	_, err := config.Load(path)
	problems, ok := config.ErrProblems(err)
	require.True(t, ok, "got %v", err)
	return problems.Error()
}

// Runner is a runner over the env that logs nowhere.
func (e *Env) Runner() *pipelines.Runner {
	return &pipelines.Runner{Config: e.Config, Warehouse: e.Warehouse, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

// Run runs a pipeline for an as_of date and fails the test on error.
func (e *Env) Run(t testing.TB, pipeline, asOf string) *pipelines.Result {
	date, err := time.Parse(time.DateOnly, asOf)
	require.NoError(t, err)
	res, err := e.Runner().Run(context.Background(), pipelines.Request{Pipeline: pipeline, AsOf: date})
	require.NoError(t, err)
	return res
}

// PoisonAllocator is Arrow memory that is overwritten when freed: a string or slice kept past
// its batch's release then reads 0xDB bytes, which a test sees as wrong output (in production
// the same mistake reads freed C memory and crashes). Size counts the bytes not yet freed.
type PoisonAllocator struct {
	mem  memory.Allocator
	live atomic.Int64
}

// NewPoisonAllocator returns an allocator over Go memory that poisons what is freed.
func NewPoisonAllocator() *PoisonAllocator { return &PoisonAllocator{mem: memory.NewGoAllocator()} }

func (p *PoisonAllocator) Allocate(size int) []byte {
	p.live.Add(int64(size))
	return p.mem.Allocate(size)
}

func (p *PoisonAllocator) Reallocate(size int, b []byte) []byte {
	out := p.Allocate(size)
	copy(out, b)
	p.Free(b)
	return out
}

func (p *PoisonAllocator) Free(b []byte) {
	for i := range b {
		b[i] = 0xDB
	}
	p.live.Add(-int64(len(b)))
	p.mem.Free(b)
}

// Size is how many allocated bytes are not yet freed.
func (p *PoisonAllocator) Size() int64 { return p.live.Load() }

// ReadmeSQL returns the statements of the README's sql block that follows the line holding
// marker, so a test runs what the README tells users to run.
func ReadmeSQL(t testing.TB, marker string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(RepoRoot(), "README.md"))
	require.NoError(t, err)
	_, after, ok := strings.Cut(string(b), marker)
	require.True(t, ok, "README.md has no %q", marker)
	_, block, ok := strings.Cut(after, "```sql\n")
	require.True(t, ok, "no sql block after %q in README.md", marker)
	block, _, ok = strings.Cut(block, "```")
	require.True(t, ok)
	var out []string
	for _, stmt := range strings.Split(block, ";\n") {
		var lines []string
		for _, l := range strings.Split(stmt, "\n") {
			if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "--") {
				lines = append(lines, l)
			}
		}
		if len(lines) > 0 {
			out = append(out, strings.Join(lines, " "))
		}
	}
	return out
}

// Pairs runs a two-column query and returns its rows as a map from the first column to the second.
func Pairs(t testing.TB, db *sql.DB, query string) map[string]string {
	t.Helper()
	rows, err := db.Query(query)
	require.NoError(t, err)
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var k, v string
		require.NoError(t, rows.Scan(&k, &v))
		out[k] = v
	}
	require.NoError(t, rows.Err())
	return out
}
