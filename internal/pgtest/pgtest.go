// Package pgtest starts a throwaway PostgreSQL server for a test: a real cluster made with
// initdb in a temp dir, listening on a free loopback port, with password authentication.
// initdb refuses to run as root, so as root the server runs as the postgres user (runuser).
package pgtest

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/ckm-dev/ckm/internal/testutil"
)

// Server is a running cluster; Admin is its superuser.
type Server struct {
	Port     int
	Admin    string
	Password string
	dir      string
	bin      string
	asUser   string // run the server's programs as this user ("" : as this process)
}

// binDir finds PostgreSQL's programs: Debian keeps them in /usr/lib/postgresql/<version>/bin.
func binDir() string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int { return version(b) - version(a) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "pg_ctl")); err == nil {
			return d
		}
	}
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		return filepath.Dir(p)
	}
	return ""
}

func version(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

// Start starts a server for t and stops it when t ends. Without PostgreSQL installed the test
// is skipped, saying how to install it, unless CKM_REQUIRE_POSTGRES is set (CI sets it and
// installs PostgreSQL): then it fails.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := binDir()
	if bin == "" {
		const how = "no PostgreSQL found: install it (Debian: apt-get install postgresql) to run the PostgreSQL output's tests"
		if os.Getenv("CKM_REQUIRE_POSTGRES") != "" {
			t.Fatal(how)
		}
		t.Skip(how)
	}
	// Not t.TempDir: its parents are private to this user, and the server may run as another.
	dir, err := os.MkdirTemp("", "ckm-pg-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	s := &Server{Admin: "ckm_test_admin", Password: "pw-" + strconv.FormatInt(time.Now().UnixNano(), 36), dir: dir, bin: bin}
	pwfile := filepath.Join(dir, "pw")
	require.NoError(t, os.WriteFile(pwfile, []byte(s.Password+"\n"), 0o600))
	if os.Geteuid() == 0 {
		s.asUser = "postgres"
		u, err := user.Lookup(s.asUser)
		require.NoError(t, err, "running as root, the server must run as the postgres user")
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		for _, p := range []string{dir, pwfile} {
			require.NoError(t, os.Chown(p, uid, gid))
		}
	}
	data := filepath.Join(dir, "data")
	s.run(t, "initdb", "-D", data, "-U", s.Admin, "--pwfile", pwfile, "-A", "scram-sha-256", "-E", "UTF8", "--locale", "C", "--no-sync")
	s.Port = freePort(t)
	s.run(t, "pg_ctl", "-D", data, "-l", filepath.Join(dir, "log"), "-w", "-t", "60", "start", "-o",
		fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c synchronous_commit=off", s.Port, dir))
	t.Cleanup(func() {
		cmd := s.command("pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Logf("stop PostgreSQL: %v: %s", err, out)
		}
	})
	return s
}

func (s *Server) command(program string, args ...string) *exec.Cmd {
	path := filepath.Join(s.bin, program)
	if s.asUser != "" {
		return exec.Command("runuser", append([]string{"-u", s.asUser, "--", path}, args...)...)
	}
	return exec.Command(path, args...)
}

func (s *Server) run(t testing.TB, program string, args ...string) {
	t.Helper()
	cmd := s.command(program, args...)
	cmd.Dir = s.dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(s.dir, "log"))
		t.Fatalf("%s %s: %v\n%s\n%s", program, strings.Join(args, " "), err, out, log)
	}
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// DSN is the URL of database as user with password.
func (s *Server) DSN(database, user, password string) string {
	u := url.URL{Scheme: "postgres", User: url.UserPassword(user, password), Host: fmt.Sprintf("127.0.0.1:%d", s.Port), Path: "/" + database,
		RawQuery: "sslmode=disable"}
	return u.String()
}

// AdminDSN connects to database as the superuser.
func (s *Server) AdminDSN(database string) string { return s.DSN(database, s.Admin, s.Password) }

// Exec runs statements as the superuser in database.
func (s *Server) Exec(t testing.TB, database string, statements ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.AdminDSN(database))
	require.NoError(t, err)
	defer conn.Close(ctx)
	for _, q := range statements {
		_, err := conn.Exec(ctx, q)
		require.NoError(t, err, q)
	}
}

// StartWithReadmeRoles starts a server with database analytics set up by the README's block
// of roles, and returns the DSNs of the role ckm writes as and of the read-only BI role.
func StartWithReadmeRoles(t testing.TB) (server *Server, writer, reader string) {
	s := Start(t)
	s.Exec(t, "postgres", "CREATE DATABASE analytics")
	s.Exec(t, "analytics", testutil.ReadmeSQL(t, "ckm-bi-roles")...)
	return s, s.DSN("analytics", "ckm_writer", "change-me-writer"), s.DSN("analytics", "bi_reader", "change-me-reader")
}

// Outputs are the tables ckm publishes to PostgreSQL whose rows carry the run that wrote them.
var Outputs = []string{"customer_rfm", "customer_clv", "customer_value", "customer_knowledge", "model_fits", "customer_changes", "segment_transitions"}

// Digest is, per as_of, a digest of the values of the Outputs in schema ckm, run ids left out.
func Digest(t testing.TB, dsn string) map[string]string {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dsn)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	out := map[string]string{}
	for _, table := range Outputs {
		rows, err := conn.Query(context.Background(), fmt.Sprintf(`SELECT as_of::text, md5(string_agg((to_jsonb(t) - 'run_id')::text, '|' ORDER BY (to_jsonb(t) - 'run_id')::text))
			FROM ckm.%s t GROUP BY 1`, pgx.Identifier{table}.Sanitize()))
		require.NoError(t, err)
		for rows.Next() {
			var asOf, digest string
			require.NoError(t, rows.Scan(&asOf, &digest))
			out[asOf] += table + ":" + digest + " "
		}
		require.NoError(t, rows.Err())
	}
	return out
}

// SwapHold keeps ckm's PostgreSQL publish from committing its swap: it holds a lock on
// published_runs, which the swap writes last, after it replaced every output's rows.
type SwapHold struct {
	conn *pgx.Conn
	tx   pgx.Tx
}

// HoldSwap takes the lock in database.
func (s *Server) HoldSwap(t testing.TB, database string) *SwapHold {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), s.AdminDSN(database))
	require.NoError(t, err)
	tx, err := conn.Begin(context.Background())
	require.NoError(t, err)
	_, err = tx.Exec(context.Background(), `LOCK TABLE ckm.published_runs IN SHARE MODE`)
	require.NoError(t, err)
	return &SwapHold{conn: conn, tx: tx}
}

// WaitBlocked waits until a swap waits for the lock.
func (h *SwapHold) WaitBlocked(t testing.TB) {
	t.Helper()
	require.Eventually(t, func() bool {
		var waiting int
		require.NoError(t, h.conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
			WHERE c.relname = 'published_runs' AND NOT l.granted`).Scan(&waiting))
		return waiting > 0
	}, 2*time.Minute, 10*time.Millisecond, "a publish waits to write published_runs")
}

// Release lets the swap go on.
func (h *SwapHold) Release() {
	h.tx.Rollback(context.Background())
	h.conn.Close(context.Background())
}
