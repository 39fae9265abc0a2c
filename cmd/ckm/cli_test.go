package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ckm-dev/ckm/internal/devkafka"
	"github.com/ckm-dev/ckm/internal/testutil"
	"github.com/ckm-dev/ckm/warehouse"
)

// sampleConfig writes the shipped config into dir, reading the shipped sample, with extra
// appended, and returns its path.
func sampleConfig(t *testing.T, dir, extra string) string {
	cfg, err := os.ReadFile(filepath.Join(testutil.RepoRoot(), "config.yaml"))
	require.NoError(t, err)
	text := strings.ReplaceAll(string(cfg), "${CKM_DATA:-data/sample}", filepath.Join(testutil.RepoRoot(), "data", "sample"))
	text = strings.ReplaceAll(text, "${CKM_WAREHOUSE:-data/ckm.duckdb}", "data/ckm.duckdb")
	path := filepath.Join(dir, "config.yaml")
	require.NoError(t, os.WriteFile(path, []byte(text+extra), 0o600))
	return path
}

// `ckm sql` reads the warehouse's tables and nothing else: no file is read or written, no
// database attached, no setting changed, and each refusal is one line saying why.
func TestSQLReadsTheWarehouseAlone(t *testing.T) {
	dir := t.TempDir()
	cfg := sampleConfig(t, dir, "")
	code, _, stderr := ckm("run", "--config", cfg, "--as-of", "2026-06-30")
	require.Zero(t, code, stderr)
	for _, q := range []string{
		"COPY orders TO '" + filepath.Join(dir, "stolen.csv") + "'",
		"COPY (SELECT 1) TO '" + filepath.Join(dir, "data", "ckm.duckdb") + "'",
		"SELECT * FROM read_csv('/etc/passwd')",
		"SELECT * FROM read_text('/etc/hostname')",
		"SELECT * FROM glob('/root/*')",
		"ATTACH '" + filepath.Join(dir, "other.duckdb") + "' AS other",
		"SET enable_external_access = true",
		"RESET lock_configuration",
		"INSTALL httpfs",
		"EXPORT DATABASE '" + filepath.Join(dir, "export") + "'",
	} {
		code, _, stderr := ckm("sql", "--config", cfg, q)
		require.Equal(t, 1, code, q)
		require.Equal(t, 1, strings.Count(stderr, "\n"), "one line: %s", stderr)
		require.Contains(t, stderr, "ckm sql reads the warehouse's own tables only", q)
	}
	for _, name := range []string{"stolen.csv", "other.duckdb", "export"} {
		require.NoFileExists(t, filepath.Join(dir, name))
	}
	code, out, stderr := ckm("sql", "--config", cfg, "--format", "csv", "SELECT count(*) > 0 AS ok FROM orders")
	require.Zero(t, code, stderr)
	require.Equal(t, "ok\ntrue\n", out, "the warehouse is whole")

	// A table is for a terminal: a line break or an escape sequence in a value (a dead letter's
	// payload holds whatever a source sent) is shown quoted; CSV keeps the value as it is.
	const hostile = "SELECT 'a' || chr(10) || 'b' AS v, chr(27) || '[2J' AS e"
	code, out, stderr = ckm("sql", "--config", cfg, hostile)
	require.Zero(t, code, stderr)
	require.Equal(t, "v       e\n\"a\\nb\"  \"\\x1b[2J\"\n(1 rows)\n", out)
	code, out, stderr = ckm("sql", "--config", cfg, "--format", "csv", hostile)
	require.Zero(t, code, stderr)
	require.Equal(t, "v,e\n\"a\nb\",\x1b[2J\n", out)
}

func mode(t *testing.T, path string) os.FileMode {
	st, err := os.Stat(path)
	require.NoError(t, err)
	return st.Mode().Perm()
}

// What ckm writes is private by default (the warehouse holds raw records), published files get
// the configured permission, and the snapshot holds the scores and only the customer columns
// the config allows: no names by default, no lineage, no unmapped fields, no record payloads in
// errors.
func TestFilesArePrivateAndTheSnapshotShowsWhatConfigAllows(t *testing.T) {
	dir := t.TempDir()
	cfg := sampleConfig(t, dir, "")
	code, _, stderr := ckm("run", "--config", cfg, "--as-of", "2026-06-30")
	require.Zero(t, code, stderr)
	data := filepath.Join(dir, "data")
	require.Equal(t, os.FileMode(0o700), mode(t, data))
	require.Equal(t, os.FileMode(0o600), mode(t, filepath.Join(data, "ckm.duckdb")))
	pub := filepath.Join(data, "publish")
	require.Equal(t, os.FileMode(0o700), mode(t, pub))
	for _, f := range []string{"snapshot.duckdb", "latest/report.html", "latest/manifest.json", "latest/customer_scores.parquet",
		"parquet/customer_rfm/as_of=2026-06-30/data.parquet", "reports/2026-06-30.html"} {
		require.Equal(t, os.FileMode(0o600), mode(t, filepath.Join(pub, f)), f)
	}
	require.Equal(t, os.FileMode(0o700), mode(t, filepath.Join(pub, "latest")))

	snap, err := warehouse.Open(context.Background(), warehouse.Options{Path: filepath.Join(pub, "snapshot.duckdb"), ReadOnly: true})
	require.NoError(t, err)
	defer snap.Close()
	var columns string
	require.NoError(t, snap.DB().QueryRow(`SELECT string_agg(column_name, ',' ORDER BY column_index) FROM duckdb_columns() WHERE table_name = 'customers'`).Scan(&columns))
	require.Equal(t, "customer_id,name,segment,region,signup_date,contact_consent,updated_at", columns, "no lineage, no _extra")
	var customers, named, regions int
	require.NoError(t, snap.DB().QueryRow(`SELECT count(*), count(name), count(region) FROM customers`).Scan(&customers, &named, &regions))
	require.Positive(t, customers)
	require.Zero(t, named, "names are not published unless configured")
	require.Equal(t, customers, regions)
	require.NoError(t, snap.DB().QueryRow(`SELECT count(name) FROM customer_scores`).Scan(&named))
	require.Zero(t, named)
	var parquetNames int
	require.NoError(t, snap.DB().QueryRow(`SELECT count(*) FROM pragma_table_info('pipeline_runs') WHERE name IN ('rows_in', 'error')`).Scan(&parquetNames))
	require.Equal(t, 2, parquetNames)

	// Opened up for a BI group, with names.
	open := t.TempDir()
	cfg = sampleConfig(t, open, "publish:\n  mode: \"0640\"\n  customer_columns: [customer_id, name, segment, region]\n")
	code, _, stderr = ckm("run", "--config", cfg, "--as-of", "2026-06-30")
	require.Zero(t, code, stderr)
	pub = filepath.Join(open, "data", "publish")
	require.Equal(t, os.FileMode(0o750), mode(t, pub))
	require.Equal(t, os.FileMode(0o750), mode(t, filepath.Join(pub, "latest")))
	require.Equal(t, os.FileMode(0o640), mode(t, filepath.Join(pub, "latest", "customer_scores.parquet")))
	require.Equal(t, os.FileMode(0o640), mode(t, filepath.Join(pub, "snapshot.duckdb")))
	require.Equal(t, os.FileMode(0o600), mode(t, filepath.Join(open, "data", "ckm.duckdb")), "the warehouse stays private")
	reader, err := warehouse.Open(context.Background(), warehouse.Options{Path: filepath.Join(t.TempDir(), "reader.duckdb")})
	require.NoError(t, err)
	defer reader.Close()
	require.NoError(t, reader.DB().QueryRow(`SELECT count(name) FROM read_parquet(?)`, filepath.Join(pub, "latest", "customer_scores.parquet")).Scan(&named))
	require.Positive(t, named, "names are published when configured")
}

// manifestAsOf is the as_of latest/ shows.
func manifestAsOf(t *testing.T, dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, "data", "publish", "latest", "manifest.json"))
	require.NoError(t, err)
	var m struct {
		AsOf string `json:"as_of"`
	}
	require.NoError(t, json.Unmarshal(b, &m))
	return m.AsOf
}

// An as_of in the future is refused unless asked for; once run, it does not freeze what BI sees:
// `ckm publish --as-of` puts a chosen run back, and later normal runs move latest/ on.
func TestFutureAsOfIsRefusedAndPublishUndoesIt(t *testing.T) {
	dir := t.TempDir()
	cfg := sampleConfig(t, dir, "")
	code, _, stderr := ckm("run", "--config", cfg, "--as-of", "2030-01-01")
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "as_of 2030-01-01 is after today")
	require.Contains(t, stderr, "--allow-future")
	code, _, stderr = ckm("backfill", "--config", cfg, "--from", "2026-06-29", "--to", "2030-01-02")
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "as_of 2030-01-02 is after today")

	code, _, stderr = ckm("run", "--config", cfg, "--as-of", "2026-06-29")
	require.Zero(t, code, stderr)
	code, _, stderr = ckm("run", "--config", cfg, "--as-of", "2030-01-01", "--allow-future")
	require.Zero(t, code, stderr)
	require.Equal(t, "2030-01-01", manifestAsOf(t, dir))

	code, out, stderr := ckm("publish", "--config", cfg, "--as-of", "2026-06-29")
	require.Zero(t, code, stderr)
	require.Contains(t, out, "for as_of 2026-06-29")
	require.Equal(t, "2026-06-29", manifestAsOf(t, dir), "a chosen run is what BI sees again")
	code, _, stderr = ckm("publish", "--config", cfg)
	require.Zero(t, code, stderr)
	require.Equal(t, "2026-06-29", manifestAsOf(t, dir), "the newest run up to today, not the future one")
	code, _, stderr = ckm("publish", "--config", cfg, "--as-of", "2026-01-01")
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "no successful run for as_of 2026-01-01")

	code, _, stderr = ckm("run", "--config", cfg, "--as-of", "2026-06-30")
	require.Zero(t, code, stderr)
	require.Equal(t, "2026-06-30", manifestAsOf(t, dir))
}

// holderEnv makes the test binary a process that holds a warehouse open for writing until its
// stdin closes (see TestMain).
const holderEnv = "CKM_TEST_HOLD_WAREHOUSE"

func holdWarehouseUntilStopped(path string) int {
	w, err := warehouse.Open(context.Background(), warehouse.Options{Path: path})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer w.Close()
	fmt.Println("holding")
	io.Copy(io.Discard, os.Stdin)
	return 0
}

// A process kept out of the warehouse says who holds it: a writer says so at once and while
// it waits, a reader in one short line pointing at the snapshot.
func TestAWaitingRunSaysWhoHoldsTheWarehouse(t *testing.T) {
	dir := t.TempDir()
	cfg := sampleConfig(t, dir, "")
	code, _, stderr := ckm("run", "--config", cfg, "--as-of", "2026-06-30")
	require.Zero(t, code, stderr)
	holder := exec.Command(os.Args[0])
	holder.Env = append(os.Environ(), holderEnv+"="+filepath.Join(dir, "data", "ckm.duckdb"))
	stdin, err := holder.StdinPipe()
	require.NoError(t, err)
	stdout, err := holder.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, holder.Start())
	defer func() { stdin.Close(); holder.Wait() }()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "holding\n", line)
	pid := fmt.Sprintf("pid %d (", holder.Process.Pid)

	code, _, stderr = ckm("sql", "--config", cfg, "SELECT 1")
	require.Equal(t, 1, code)
	require.Equal(t, 1, strings.Count(stderr, "\n"), stderr)
	require.Contains(t, stderr, "the warehouse is being written by "+pid)
	require.Contains(t, stderr, "read the published snapshot "+filepath.Join(dir, "data", "publish", "snapshot.duckdb"))
	require.Less(t, len(stderr), 400, "a short line")

	text, err := os.ReadFile(cfg)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(cfg, []byte(strings.Replace(string(text), "warehouse:\n", "warehouse:\n  lock_wait: 1s\n", 1)), 0o600))
	code, _, stderr = ckm("run", "--config", cfg, "--as-of", "2026-06-30")
	require.Contains(t, stderr, "waiting for the warehouse")
	require.Contains(t, stderr, fmt.Sprintf("held_by_pid=%d", holder.Process.Pid))
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "waited 1s")
	require.Contains(t, stderr, "in use by "+pid)
}

// `ckm validate --connect` opens every source without loading anything and reports every
// problem at once: a file lacking a mapped column, a damaged file, a topic that does not exist,
// brokers that cannot be found or refuse the connection (at once, without the retry budget).
func TestValidateConnectReportsEveryProblemAtOnce(t *testing.T) {
	b, err := devkafka.Start(devkafka.Options{Topics: map[string]int32{"orders": 1}})
	require.NoError(t, err)
	defer b.Close()
	dir := t.TempDir()
	for name, body := range map[string]string{
		"good.csv":   "id,cust,ts,amt\nO1,C1,2026-01-01,1\n",
		"wrong.csv":  "id,customer,ts,amt\nO2,C1,2026-01-01,1\n",
		"cut.csv.gz": "\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff", // a gzip header and nothing after it
		// Read as a run reads them: UTF-16 told by its byte order mark, Excel's sep= line.
		"utf16.csv": "\xff\xfei\x00d\x00,\x00c\x00u\x00s\x00t\x00,\x00t\x00s\x00,\x00a\x00m\x00t\x00\n\x00",
		"sep.csv":   "sep=;\nid;cust;ts;amt\nO3;C1;2026-01-01;1\n",
		// Columns an expression reads: in any capitals, as DuckDB reads names; a lambda's
		// parameter and a subquery's column are none of the file's.
		"exprs/e.csv": "id,cust,ts,amt\nO4,C1,2026-01-01,1\n",
		// An expression bound over the file's fields as a run binds it: CSV fields are text.
		"typed/t.csv": "id,cust,ts,amt\nO5,C1,2026-01-01,1\n",
	} {
		require.NoError(t, os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o700))
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600))
	}
	cfg := filepath.Join(dir, "config.yaml")
	const mapping = `mapping: {order_id: id, customer_id: cust, order_ts: ts, amount: amt, status: {const: completed}}`
	require.NoError(t, os.WriteFile(cfg, []byte(fmt.Sprintf(`warehouse: {path: ckm.duckdb}
sources:
  files:
    table: orders
    file: {paths: ["*.csv", "*.csv.gz"]}
    %[2]s
  exprs:
    table: orders
    file: {paths: ["exprs/*.csv"]}
    filter: "list_filter([cust], c -> c <> '') IS NOT NULL AND (SELECT count(*) FROM range(2) r(n)) > 0 AND stauts <> 'test'"
    mapping: {order_id: id, customer_id: {expr: "upper(CUST)"}, order_ts: ts, amount: {expr: "TRY_CAST(Amt AS DOUBLE) * TRY_CAST(qty AS DOUBLE)"}, status: {const: completed}}
  typed:
    table: orders
    file: {paths: ["typed/*.csv"]}
    mapping: {order_id: id, customer_id: cust, order_ts: ts, amount: {expr: "amt * 2"}, status: {const: completed}}
  kafka_typed:
    table: orders
    kafka: {brokers: ["%[1]s"], topics: [orders], connect_timeout: 1m}
    mapping: {order_id: id, customer_id: {expr: "coalesce(kafka_key, json_extract_string(_doc, '$.cust'))"}, order_ts: ts, amount: {expr: "json_extract_string(_doc, '$.amt') * 2"}, status: {const: completed}}
  no_topic:
    table: orders
    kafka: {brokers: ["%[1]s"], topics: [ordres], connect_timeout: 1m}
    %[2]s
  no_host:
    table: orders
    kafka: {brokers: ["kafka.invalid:9092"], topics: [orders], connect_timeout: 10m}
    %[2]s
  refused:
    table: orders
    kafka: {brokers: ["127.0.0.1:1"], topics: [orders], connect_timeout: 10m}
    %[2]s
pipelines:
  p: {transforms: [rfm]}
`, b.Addr, mapping)), 0o600))
	code, out, stderr := ckm("validate", "--config", cfg, "--connect")
	require.Equal(t, 1, code, stderr)
	require.Contains(t, out, "9 problems opening the sources:")
	require.Contains(t, out, "source kafka_typed: orders: mapping.amount.expr: Binder Error: No function matches the given name and argument types '*(VARCHAR, INTEGER_LITERAL)'")
	require.Contains(t, out, "source typed: typed/t.csv: mapping.amount.expr: Binder Error: No function matches the given name and argument types '*(VARCHAR, INTEGER_LITERAL)'")
	require.Contains(t, out, "source exprs: exprs/e.csv has no column stauts, which filter reads (it has id, cust, ts, amt)")
	require.Contains(t, out, "source exprs: exprs/e.csv has no column qty, which mapping.amount.expr reads (it has id, cust, ts, amt)")
	require.Contains(t, out, "source files: wrong.csv has no column cust, which the mapping reads (it has id, customer, ts, amt)")
	require.Contains(t, out, "source files: cut.csv.gz: truncated or corrupt gzip")
	require.Contains(t, out, "source no_topic: topic ordres at "+b.Addr)
	require.Contains(t, out, "source no_host: cannot reach any kafka broker (kafka.invalid:9092: no such host)")
	require.Contains(t, out, "source refused: cannot reach any kafka broker (127.0.0.1:1: connection refused)")
	for _, good := range []string{"good.csv", "utf16.csv", "sep.csv"} {
		require.NotContains(t, out, good)
	}
	require.NoFileExists(t, filepath.Join(dir, "ckm.duckdb"), "nothing was loaded, no warehouse made")
}

// What `ckm generate` writes, the shipped config reads without editing: the command it prints
// (CKM_DATA pointing there) runs.
func TestGenerateThenRunWithTheShippedConfig(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "generated")
	code, out, stderr := ckm("generate", "--customers", "400", "--seed", "3", "--out", dir)
	require.Zero(t, code, stderr)
	require.Contains(t, out, "CKM_DATA="+dir+" CKM_WAREHOUSE="+filepath.Join(dir, "ckm.duckdb")+" ckm run --as-of 2026-06-30")
	t.Setenv("CKM_DATA", dir)
	t.Setenv("CKM_WAREHOUSE", filepath.Join(dir, "ckm.duckdb"))
	code, out, stderr = ckm("run", "--config", filepath.Join(testutil.RepoRoot(), "config.yaml"), "--as-of", "2026-06-30")
	require.Zero(t, code, stderr)
	require.Regexp(t, `crm_customers\s+customers\s+4\d\d\s`, out, "the generated customers were read")
	require.Contains(t, out, "published for BI tools: "+filepath.Join(dir, "publish", "latest", "report.html"))
}
