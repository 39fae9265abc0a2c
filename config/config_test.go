package config

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ckm-dev/ckm/connectors"
)

// testKind is a connector kind registered only in this test binary, with one required key.
type testKindConfig struct {
	Topic string `yaml:"topic" doc:"the topic"`
}

func (c *testKindConfig) Validate(string) []connectors.FieldProblem {
	if c.Topic == "" {
		return []connectors.FieldProblem{{Key: "topic", Msg: "no topic", Hint: "topic: orders"}}
	}
	return nil
}

func init() {
	connectors.Register("testkind", connectors.Spec{Summary: "a kind for config tests"},
		func(context.Context, connectors.Env, testKindConfig) (connectors.Source, error) {
			return nil, errors.New("not for reading")
		})
}

func write(t *testing.T, body string) string {
	path := filepath.Join(t.TempDir(), "config.yaml")
	require.NoError(t, os.WriteFile(path, []byte(body), 0o644))
	return path
}

const valid = `warehouse: {path: w/ckm.duckdb, memory_limit: 1GB}
timezone: Europe/Berlin
sources:
  orders:
    table: orders
    testkind: {topic: orders}
    mapping:
      order_id: id
      customer_id: {expr: "upper(cust)"}
      order_ts: {from: ts, format: "%d/%m/%Y", timezone: America/New_York}
      amount: amt
      status: {const: completed}
pipelines:
  nightly: {sources: [orders], transforms: [rfm]}
`

func TestLoadValid(t *testing.T) {
	cfg, err := Load(write(t, valid))
	require.NoError(t, err)
	require.Equal(t, "testkind", cfg.Sources["orders"].Kind)
	require.Equal(t, "orders", cfg.Sources["orders"].Options.(*testKindConfig).Topic)
	require.Equal(t, "id", cfg.Sources["orders"].Mapping["order_id"].From, "a bare string is the source field")
	require.Equal(t, "upper(cust)", cfg.Sources["orders"].Mapping["customer_id"].Expr)
	require.Equal(t, "completed", *cfg.Sources["orders"].Mapping["status"].Const)
	require.Equal(t, 365, cfg.Scoring.LookbackDays, "default")
	require.Equal(t, 0.05, cfg.BadRatio(cfg.Sources["orders"]), "default")
	require.True(t, filepath.IsAbs(cfg.Warehouse.Path), "the warehouse path resolves against the config's directory")
	require.Equal(t, filepath.Join(filepath.Dir(cfg.Warehouse.Path), ".duckdb_tmp"), cfg.Warehouse.TempDirectory, "spills go beside the warehouse by default")
	require.Len(t, cfg.Scoring.RFM.Segments, 10)
}

func TestEnvironmentInterpolation(t *testing.T) {
	env := map[string]string{"WH": "/data/ckm.duckdb", "EMPTY": ""}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	out, _, _, problems := interpolate("c.yaml", []byte("a: ${WH}\nb: ${MISSING:-fallback}\nc: ${EMPTY:-used when empty}\nd: $${LITERAL}\ne: ${NOPE}\n"), lookup)
	require.Equal(t, "a: /data/ckm.duckdb\nb: fallback\nc: used when empty\nd: ${LITERAL}\ne: \n", string(out))
	require.Len(t, problems, 1)
	require.Equal(t, 5, problems[0].Line)
	require.Contains(t, problems[0].String(), "c.yaml:5: environment variable NOPE is not set")
}

// Every problem in a file is reported at once, each with its line, path and a hint.
func TestEveryProblemReportedWithLineAndHint(t *testing.T) {
	body := strings.NewReplacer(
		"timezone: Europe/Berlin", "timezone: Mars/Olympus",
		"memory_limit: 1GB", "memory_limit: lots",
		"    table: orders\n", "    table: orders\n    max_bad_ratio: 2\n    tabel: x\n",
		"    testkind: {topic: orders}", "    testkind: {topic: \"\", partitions: 3}",
		"      amount: amt", "      amount: amt\n      amunt: x",
		"[rfm]", "[rfm, clv9]",
		"sources: [orders]", "sources: [ordres]",
	).Replace(valid) + "scoring: {lookback_days: many}\n"
	_, err := Load(write(t, body))
	problems, ok := ErrProblems(err)
	require.True(t, ok, "got %v", err)
	got := problems.Error()
	for _, want := range []string{
		":7: sources.orders.tabel: unknown key tabel (hint: did you mean table?)",
		":8: sources.orders.testkind.partitions: unknown key partitions",
		":18: scoring.lookback_days: expected a whole number",
	} {
		require.Contains(t, got, want)
	}
	// Schema problems are reported first; fixing them reveals the semantic ones.
	body = strings.NewReplacer("    tabel: x\n", "", ", partitions: 3", "", "lookback_days: many", "lookback_days: 30").Replace(body)
	_, err = Load(write(t, body))
	problems, ok = ErrProblems(err)
	require.True(t, ok, "got %v", err)
	got = problems.Error()
	for _, want := range []string{
		":1: warehouse.memory_limit: cannot read \"lots\" as a size",
		":2: timezone: unknown time zone \"Mars/Olympus\"",
		":6: sources.orders.max_bad_ratio: 2 is not a ratio between 0 and 1",
		":7: sources.orders.testkind.topic: no topic (hint: topic: orders)",
		":13: sources.orders.mapping.amunt: orders has no column amunt",
		":16: pipelines.nightly.sources[0]: unknown source ordres (hint: did you mean orders?)",
		":16: pipelines.nightly.transforms[1]: unknown transform clv9",
	} {
		require.Contains(t, got, want)
	}
	require.Len(t, problems, 7, got)
}

func TestConnectorBlockRules(t *testing.T) {
	_, err := Load(write(t, "sources:\n  s:\n    table: orders\n    flie: {paths: [x]}\n"))
	require.ErrorContains(t, err, ":4: sources.s.flie: unknown key flie")
	_, err = Load(write(t, "sources:\n  s:\n    table: orders\n    mapping: {order_id: a}\n"))
	require.ErrorContains(t, err, "sources.s: no connector block (hint: add one of: ")
	_, err = Load(write(t, "sources:\n  s:\n    table: customer\n    testkind: {topic: t}\n"))
	require.ErrorContains(t, err, `sources.s.table: unknown table "customer" (hint: one of customers, orders, feedback)`)
}

func TestMappingRules(t *testing.T) {
	_, err := Load(write(t, `sources:
  s:
    table: orders
    testkind: {topic: t}
    mapping:
      order_id: {from: a, expr: "b"}
      customer_id: c
      order_ts: {from: d, timezone: Nowhere/Land}
      amount: e
`))
	require.ErrorContains(t, err, "sources.s.mapping.order_id: set exactly one of from, expr, const, hash")
	require.ErrorContains(t, err, `sources.s.mapping.order_ts: unknown time zone "Nowhere/Land"`)
	require.ErrorContains(t, err, "sources.s.mapping.status: required column status is not mapped")
}

// A mapping's min and max must read as the column's type, bound only what has an order, and
// not cross; dates and timestamps may be written unquoted, as YAML users write them.
func TestMappingBoundsRules(t *testing.T) {
	_, err := Load(write(t, `sources:
  s:
    table: orders
    testkind: {topic: t}
    mapping:
      order_id: a
      customer_id: {from: c, min: C1}
      order_ts: {from: d, min: yesterday}
      amount: {from: e, min: 10, max: 1e400}
      quantity: {from: q, min: 5, max: 1}
      product_launch_date: {from: p, max: 2026-13-01}
      status: {from: s, format: unix}
      margin: {from: m, format: "%Y"}
`))
	for _, want := range []string{
		"sources.s.mapping.customer_id: min and max bound numbers, dates and timestamps; customer_id is text",
		`sources.s.mapping.order_ts: min: cannot read "yesterday" as a timestamp (YYYY-MM-DD, YYYY-MM-DD HH:MM:SS or RFC 3339)`,
		`sources.s.mapping.amount: max: cannot read "1e400" as a finite number`,
		"sources.s.mapping.quantity: min 5 is after max 1",
		`sources.s.mapping.product_launch_date: max: cannot read "2026-13-01" as a date (YYYY-MM-DD)`,
		"sources.s.mapping.status: format reads dates and timestamps; status is text",
		`sources.s.mapping.margin: format reads dates and timestamps; margin is a number`,
	} {
		require.ErrorContains(t, err, want)
	}
	_, err = Load(write(t, `sources:
  s:
    table: orders
    testkind: {topic: t}
    mapping: {order_id: a, customer_id: c, amount: e, order_ts: {from: d, format: yyyy-mm-dd}, status: s, product_launch_date: {from: p, format: unix_ms}}
`))
	var problems Problems
	require.ErrorAs(t, err, &problems)
	require.Len(t, problems, 1, "unix_ms is a format")
	require.Equal(t, `sources.s.mapping.order_ts: format "yyyy-mm-dd" is neither strptime codes (%d/%m/%Y %H:%M) nor Unix time (unix, unix_ms, unix_ns, unix_us)`,
		problems[0].Path+": "+problems[0].Msg)
	cfg, err := Load(write(t, `sources:
  s:
    table: orders
    testkind: {topic: t}
    mapping:
      order_id: a
      customer_id: c
      order_ts: {from: d, min: 1900-01-01, max: 2030-01-01T00:00:00Z}
      amount: {from: e, min: -1000, max: 1000}
      margin: {from: m, min: -1e3, max: 1e+6}
      status: {from: s}
`))
	require.NoError(t, err)
	require.Equal(t, "1900-01-01", cfg.Sources["s"].Mapping["order_ts"].Min)
	require.Equal(t, "2030-01-01T00:00:00Z", cfg.Sources["s"].Mapping["order_ts"].Max)
	_, err = Load(write(t, `sources:
  s:
    table: orders
    testkind: {topic: t}
    mapping: {order_id: a, customer_id: c, order_ts: {from: d, max: 1960-01-01}, amount: e, status: s}
`))
	require.ErrorContains(t, err, "sources.s.mapping.order_ts: max 1960-01-01 is before 1970-01-02, the earliest order_ts taken unless min is set")
}

// A mapping's SQL is placed inside ckm's own: a mistake there failed the run in generated SQL the
// operator never wrote, or (a second value, a clause, a comment) changed that SQL. DuckDB's parser
// now reads each expr and filter alone, and its strptime each format, before anything runs.
func TestMappingSQLIsParsedByDuckDB(t *testing.T) {
	_, err := Load(write(t, `sources:
  s:
    table: orders
    testkind: {topic: t}
    filter: "amount >"
    mapping:
      order_id: {expr: "upper(id"}
      customer_id: {expr: "cust AS customer_id"}
      order_ts: {from: ts, format: "%Y-%m-%d %Q"}
      amount: {expr: "amt) AS amount, (1"}
      margin: {expr: "1); DROP TABLE orders; SELECT (1"}
      quantity: {expr: "sum(qty)"}
      product_id: {expr: "row_number() OVER ()"}
      category: {expr: "uper(cat)"}
      status: {expr: "st ) UNION ALL (SELECT 'x'"}
      product_launch_date: {expr: "(SELECT max(d) FROM launches WHERE sku = product)"}
`))
	var problems Problems
	require.ErrorAs(t, err, &problems)
	got := map[string]string{}
	for _, p := range problems {
		got[fmt.Sprintf("%d %s", p.Line, p.Path)] = p.Msg + " | " + p.Hint
	}
	notOne := "expr is not one SQL expression | it is placed in ckm's SQL as the value of each record: " +
		"a parenthesis closed early, a second value, a clause or a statement breaks out of that"
	require.Equal(t, map[string]string{
		"5 sources.s.filter":                   "filter is not valid SQL: it ends where more must follow | ",
		"7 sources.s.mapping.order_id.expr":    "expr is not valid SQL: it ends where more must follow | ",
		"8 sources.s.mapping.customer_id.expr": `expr is not valid SQL: syntax error at or near "AS", at character 6: AS customer_id | `,
		"9 sources.s.mapping.order_ts.format":  `format "%Y-%m-%d %Q" is not one DuckDB reads: Unrecognized format for strftime/strptime: %Q | strptime codes such as %d/%m/%Y %H:%M:%S (DuckDB's documentation: Date Format)`,
		"10 sources.s.mapping.amount.expr":     notOne,
		"11 sources.s.mapping.margin.expr":     notOne,
		"12 sources.s.mapping.quantity.expr":   "expr calls sum, which aggregates many records; a mapping reads one record at a time | order lines add up into their order with rollup_lines: true; other sums belong in the source's query",
		"13 sources.s.mapping.product_id.expr": "expr calls row_number over a window of records; a mapping reads one record at a time | ",
		"14 sources.s.mapping.category.expr":   "expr calls uper, a function DuckDB does not have | did you mean upper?",
		"15 sources.s.mapping.status.expr":     notOne,
		"16 sources.s.mapping.product_launch_date.expr": "expr holds a subquery, which a mapping cannot evaluate: it reads one record at a time | " +
			"values from another file join onto each record with lookups; a fixed list is written inline: x IN ('a', 'b')",
	}, got)

	// A prepared statement's parameter has no value to take.
	_, err = Load(write(t, `sources:
  s:
    table: orders
    testkind: {topic: t}
    filter: "amount > $1"
    mapping: {order_id: id, customer_id: cust, order_ts: ts, amount: amt, status: st}
`))
	require.ErrorContains(t, err, "sources.s.filter: filter holds a parameter (? or $1), which nothing gives a value to")

	// What a run takes loads: any capitals, a trailing comment, lambdas, casts, a list's
	// aggregate, strptime codes DuckDB has.
	_, err = Load(write(t, `sources:
  s:
    table: orders
    testkind: {topic: t}
    filter: "status <> 'test' -- test orders are no sales"
    mapping:
      order_id: {expr: "UPPER(id) -- ids are upper case in the warehouse"}
      customer_id: {expr: "list_filter(string_split(c, '|'), x -> x <> '')[1]"}
      order_ts: {from: ts, format: "%d.%m.%Y %-H:%M:%S %z"}
      amount: {expr: "TRY_CAST(qty AS DOUBLE) * list_max([1, 2])"}
      status: {expr: "CASE WHEN inv LIKE 'C%' THEN 'returned' ELSE 'completed' END"}
`))
	require.NoError(t, err)
}

func TestBadYAMLAndEmptyFile(t *testing.T) {
	_, err := Load(write(t, "sources:\n  s: [unclosed\n"))
	require.ErrorContains(t, err, "not valid YAML")
	_, err = Load(write(t, "# nothing\n"))
	require.ErrorContains(t, err, "config is empty")
	_, err = Load(filepath.Join(t.TempDir(), "absent.yaml"))
	require.ErrorContains(t, err, "read config")
}

func TestKnowledgeWeightsAreValidated(t *testing.T) {
	body := valid + `scoring:
  knowledge:
    kind_weights: {sugestion: 2}
    dimension_weights:
      ahp:
        kv: {w: 9, ac: 0.2}
        w: {ac: 5}
    indicator_weights:
      w: {fixed: {trust: 2, acceptence: 1}}
`
	_, err := Load(write(t, body))
	problems, ok := ErrProblems(err)
	require.True(t, ok, "%v", err)
	text := problems.Error()
	require.Contains(t, text, "scoring.knowledge.dimension_weights.ahp: pairwise comparisons are inconsistent: consistency ratio")
	require.Contains(t, text, "≥ 0.10")
	require.Contains(t, text, "did you mean suggestion?")
	require.Contains(t, text, `scoring.knowledge.indicator_weights.w: unknown name "acceptence"`)

	cfg, err := Load(write(t, valid))
	require.NoError(t, err)
	require.Equal(t, 0.6, cfg.Scoring.Knowledge.High, "DESIGN.md's default")
	require.Equal(t, 3.0, cfg.Scoring.Knowledge.KindWeights["co_design"])
}

func TestServeAndScheduleRules(t *testing.T) {
	body := `warehouse: {lock_wait: soon}
sources: {s: {table: customers, testkind: {topic: t}, mapping: {customer_id: id}}}
pipelines:
  nightly:
    schedule: "30 25 * * *"
    overlap: wait
    catch_up: everything
serve: {grace_period: 5 minutes, ingest_interval: often}
`
	_, err := Load(write(t, body))
	problems, ok := ErrProblems(err)
	require.True(t, ok, "got %v", err)
	got := problems.Error()
	for _, want := range []string{
		`:1: warehouse.lock_wait: cannot read "soon" as a duration`,
		`:5: pipelines.nightly.schedule: schedule "30 25 * * *": `,
		`:6: pipelines.nightly.overlap: unknown overlap policy "wait" (hint: skip or queue)`,
		`:7: pipelines.nightly.catch_up: unknown catch-up policy "everything" (hint: none, latest or all)`,
		`:8: serve.grace_period: cannot read "5 minutes" as a duration`,
		`:8: serve.ingest_interval: cannot read "often" as a duration`,
	} {
		require.Contains(t, got, want)
	}
	require.Len(t, problems, 6, got)

	cfg, err := Load(write(t, "sources: {s: {table: customers, testkind: {topic: t}, mapping: {customer_id: id}}}\npipelines:\n  nightly: {schedule: \"30 2 * * *\"}\n"))
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:9464", cfg.Serve.Listen, "metrics are bound to localhost unless configured")
	require.Equal(t, "skip", cfg.Pipelines["nightly"].Overlap)
	require.Equal(t, "latest", cfg.Pipelines["nightly"].CatchUp)
	require.Equal(t, filepath.Join(cfg.BaseDir, "data", "publish"), cfg.Publish.Dir, "published beside the warehouse")
}

func TestRFMBinsAreValidated(t *testing.T) {
	body := valid + `scoring:
  rfm:
    bins:
      frequency: [1, 2, 3]
      recency: [90, 30, 180, 270]
`
	_, err := Load(write(t, body))
	problems, ok := ErrProblems(err)
	require.True(t, ok, "%v", err)
	got := problems.Error()
	require.Contains(t, got, ":18: scoring.rfm.bins.frequency: has 3 bounds; want 4 (the upper bounds of scores 1–4)")
	require.Contains(t, got, ":19: scoring.rfm.bins.recency: bounds must ascend: 30 follows 90")

	cfg, err := Load(write(t, valid+"scoring:\n  rfm:\n    bins: {frequency: [1, 2, 3, 5]}\n"))
	require.NoError(t, err)
	require.Equal(t, []float64{1, 2, 3, 5}, cfg.Scoring.RFM.Bins.Frequency)
}

// The PostgreSQL output's block is checked like the rest, and its DSN comes from the
// environment when publishing: unset with the block present is an error, without the block
// CKM_PG_DSN alone turns it on.
func TestPostgresOutputIsConfiguredFromTheEnvironment(t *testing.T) {
	_, err := Load(write(t, valid+"publish:\n  postgres: {dsn_enf: X, schema: ckm}\n"))
	problems, ok := ErrProblems(err)
	require.True(t, ok, "%v", err)
	require.Contains(t, problems.Error(), ":16: publish.postgres.dsn_enf: unknown key dsn_enf (hint: did you mean dsn_env?)")
	_, err = Load(write(t, valid+"publish:\n  postgres: {dsn_env: 1BAD}\n"))
	require.ErrorContains(t, err, `publish.postgres.dsn_env: "1BAD" is not an environment variable's name`)

	cfg, err := Load(write(t, valid+"publish:\n  postgres: {dsn_env: SCORES_DSN, schema: bi}\n"))
	require.NoError(t, err)
	t.Setenv("SCORES_DSN", "")
	_, _, _, err = cfg.Publish.PostgresTarget()
	require.ErrorContains(t, err, "SCORES_DSN, which holds the DSN, is not set")
	t.Setenv("SCORES_DSN", "postgres://db/x")
	dsn, schema, on, err := cfg.Publish.PostgresTarget()
	require.NoError(t, err)
	require.Equal(t, []any{"postgres://db/x", "bi", true}, []any{dsn, schema, on})

	cfg, err = Load(write(t, valid))
	require.NoError(t, err)
	t.Setenv(DefaultPostgresDSNEnv, "")
	_, _, on, err = cfg.Publish.PostgresTarget()
	require.NoError(t, err)
	require.False(t, on, "no block, no CKM_PG_DSN: no PostgreSQL output")
	t.Setenv(DefaultPostgresDSNEnv, "postgres://db/y")
	dsn, schema, on, err = cfg.Publish.PostgresTarget()
	require.NoError(t, err)
	require.Equal(t, []any{"postgres://db/y", "ckm", true}, []any{dsn, schema, on})
	require.Equal(t, DefaultReaderWait, cfg.Publish.PostgresReaderWait(), "no block: the default bound")
}

// How long a publish waits for BI transactions is a duration: 0 waits without a bound, a
// negative or unreadable one is a problem.
func TestPostgresReaderWaitIsADuration(t *testing.T) {
	for text, want := range map[string]time.Duration{"{schema: bi}": DefaultReaderWait, "{reader_wait: 2m}": 2 * time.Minute, "{reader_wait: 0}": 0} {
		cfg, err := Load(write(t, valid+"publish:\n  postgres: "+text+"\n"))
		require.NoError(t, err, text)
		require.Equal(t, want, cfg.Publish.PostgresReaderWait(), text)
	}
	for _, bad := range []string{"-5s", "a while"} {
		_, err := Load(write(t, valid+"publish:\n  postgres: {reader_wait: "+bad+"}\n"))
		require.ErrorContains(t, err, `:16: publish.postgres.reader_wait: cannot read "`+bad+`" as a duration`, bad)
	}
}

// ${VAR} is put into the text before YAML reads it: a value holding " #", a line break or a
// backslash inside double quotes would change the document without a word (a path cut at its
// #, a key added, \n read as a line break). Such a value is refused, naming the variable and
// the line, never the value (it may be a secret); ordinary values, and that value in single
// quotes, load.
func TestEnvironmentValuesThatChangeTheYAMLAreRefused(t *testing.T) {
	const body = `warehouse:
  path: ${CKM_TEST_WH}
  memory_limit: ${CKM_TEST_MEM:-1GB}
sources:
  orders:
    table: orders
    testkind: {topic: "${CKM_TEST_TOPIC:-orders}"}
    mapping: {order_id: id, customer_id: cust, order_ts: ts, amount: amt, status: {const: completed}}
`
	for _, tc := range []struct {
		name, wh, topic, line string // line: the problem's, "" for none
	}{
		{"ordinary values", "/data/ckm.duckdb", "orders", ""},
		{"a path with a #", "/data/my #1/ckm.duckdb", "orders", ":2:"},
		{"a line break adding a key", "/data/ckm.duckdb\n  threads: 64", "orders", ":2:"},
		{"a backslash in double quotes", "/data/ckm.duckdb", `C:\new`, ":7:"},
		{"a colon and space", "/data/ckm: main.duckdb", "orders", ":2:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("CKM_TEST_WH", tc.wh)
			t.Setenv("CKM_TEST_TOPIC", tc.topic)
			cfg, err := Load(write(t, body))
			if tc.line == "" {
				require.NoError(t, err)
				require.Equal(t, tc.wh, cfg.Warehouse.Path)
				require.Equal(t, "1GB", cfg.Warehouse.MemoryLimit)
				return
			}
			require.ErrorContains(t, err, tc.line+" the value of environment variable ")
			require.ErrorContains(t, err, "changes how the config reads here")
			require.NotContains(t, err.Error(), "my #1") // the value; the temp dir is named after the test, "…a_#" and random digits
			require.NotContains(t, err.Error(), `C:\new`)
		})
	}
	// A file broken whatever the values says so, not that a value (a URL's colon) broke it.
	t.Setenv("CKM_TEST_WH", "http://store:9000/ckm.duckdb")
	_, err := Load(write(t, body+"pipelines: [unclosed\n"))
	require.ErrorContains(t, err, "not valid YAML")
	require.NotContains(t, err.Error(), "environment variable")
	t.Setenv("CKM_TEST_WH", "/data/my #1: it's \"main\"/ckm.duckdb")
	_, err = Load(write(t, strings.Replace(body, "path: ${CKM_TEST_WH}", "path: '${CKM_TEST_WH}'", 1)))
	require.Error(t, err, "a ' in the value ends the single quotes")
	t.Setenv("CKM_TEST_WH", "/data/my #1: \"main\"/ckm.duckdb")
	cfg, err := Load(write(t, strings.Replace(body, "path: ${CKM_TEST_WH}", "path: '${CKM_TEST_WH}'", 1)))
	require.NoError(t, err)
	require.Equal(t, "/data/my #1: \"main\"/ckm.duckdb", cfg.Warehouse.Path)
}
