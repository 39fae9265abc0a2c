// Package config loads config.yaml: environment interpolation, a schema check that reports
// every unknown key and mistyped value with its line, and semantic validation with hints.
package config

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"

	"github.com/ckm-dev/ckm/connectors"
	"github.com/ckm-dev/ckm/connectors/mapping"
	"github.com/ckm-dev/ckm/scheduler"
	"github.com/ckm-dev/ckm/transforms/clv"
	"github.com/ckm-dev/ckm/transforms/knowledge"
	"github.com/ckm-dev/ckm/transforms/rfm"
	"github.com/ckm-dev/ckm/transforms/value"
	"github.com/ckm-dev/ckm/warehouse"
)

// Config is a whole config.yaml.
type Config struct {
	Warehouse   Warehouse            `yaml:"warehouse"`
	Timezone    string               `yaml:"timezone"`      // IANA zone that defines calendar days (as_of); default UTC
	MaxBadRatio *float64             `yaml:"max_bad_ratio"` // default for sources; 0.05 when unset
	Sources     map[string]*Source   `yaml:"sources"`
	Pipelines   map[string]*Pipeline `yaml:"pipelines"`
	Scoring     Scoring              `yaml:"scoring"`
	Serve       Serve                `yaml:"serve"`
	Publish     Publish              `yaml:"publish"`

	File    string `yaml:"-"` // the config file
	BaseDir string `yaml:"-"` // its directory; relative paths resolve against it
}

// Warehouse is where the DuckDB file lives and how DuckDB may use the machine.
type Warehouse struct {
	Path        string `yaml:"path"`
	MemoryLimit string `yaml:"memory_limit"`
	Threads     int    `yaml:"threads"`
	// LockWait is how long a writer (run, backfill, ingest, a scheduled run) waits for another
	// process to release the file; default 10m.
	LockWait string `yaml:"lock_wait"`
	// TempDirectory is where DuckDB spills what does not fit in memory_limit (loading a 14 GB
	// file with 8GB spilled 18 GB); default .duckdb_tmp beside the warehouse file.
	TempDirectory string `yaml:"temp_directory"`
}

// Options are what opening the warehouse needs of it.
func (w Warehouse) Options() warehouse.Options {
	return warehouse.Options{Path: w.Path, MemoryLimit: w.MemoryLimit, Threads: w.Threads, TempDirectory: w.TempDirectory}
}

// LockWaitDuration is LockWait, read once validation has checked it.
func (w Warehouse) LockWaitDuration() time.Duration {
	d, _ := time.ParseDuration(w.LockWait)
	return d
}

// Source is one configured input. Besides the keys below it has exactly one connector
// block named after its kind (file: {...}, kafka: {...}).
type Source struct {
	Table       string                    `yaml:"table"`
	Timezone    string                    `yaml:"timezone"` // zone of timestamps without an offset; default: the global timezone
	Mapping     map[string]mapping.Field  `yaml:"mapping"`
	Filter      string                    `yaml:"filter"`
	MaxBadRatio *float64                  `yaml:"max_bad_ratio"`
	RollupLines bool                      `yaml:"rollup_lines"` // records sharing an order_id in one stream are lines of one order
	Lookups     map[string]mapping.Lookup `yaml:"lookups"`      // fields from other files, by key (see mapping.Lookup)
	// UnknownFields: fields the mapping does not read are ignored, kept in _extra, or fail the record.
	UnknownFields string `yaml:"unknown_fields"`
	// DecimalSeparator: "," reads numbers written with a decimal comma (1,5); default ".".
	DecimalSeparator string `yaml:"decimal_separator"`

	Kind    string `yaml:"-"` // the connector kind, from its block's key
	Options any    `yaml:"-"` // the decoded connector block
}

// Pipeline names which sources feed it and which transforms it runs.
type Pipeline struct {
	Sources    []string `yaml:"sources"`    // default: every source
	Transforms []string `yaml:"transforms"` // default: every transform
	Schedule   string   `yaml:"schedule"`   // cron expression, for `ckm serve`
	Timezone   string   `yaml:"timezone"`   // zone of the schedule; default: the global timezone
	Overlap    string   `yaml:"overlap"`    // skip | queue: a time that comes while the last run goes on; default skip
	CatchUp    string   `yaml:"catch_up"`   // none | latest | all: times missed while ckm serve was down; default latest
}

// Serve configures `ckm serve`.
type Serve struct {
	Listen      string `yaml:"listen"`       // address of /healthz, /readyz, /metrics; default 127.0.0.1:9464
	GracePeriod string `yaml:"grace_period"` // how long a run may finish after SIGTERM; default 5m
	// IngestInterval: when set, streaming sources (Kafka) are loaded this often between runs, so
	// the nightly run finds little left to read; their lag is measured then too (else every 30s).
	IngestInterval string `yaml:"ingest_interval"`
}

// Publish configures what a successful run publishes for BI tools.
type Publish struct {
	Dir      string `yaml:"dir"`      // default: publish/ beside the warehouse file
	Parquet  *bool  `yaml:"parquet"`  // Parquet per output, partitioned by as_of, and latest/; default true
	Snapshot *bool  `yaml:"snapshot"` // a read-only DuckDB file with the latest outputs; default true
	Report   *bool  `yaml:"report"`   // a static HTML report per run; default true
	// Mode is the permission of the published files, octal (directories get the matching search
	// bits); default 0600, only ckm's user: e.g. 0640 for a group BI tools run as.
	Mode string `yaml:"mode"`
	// CustomerColumns are the customers' columns BI tools may see in the snapshot and
	// customer_scores (the others, names among them, are NULL there); default customer_id,
	// segment, region.
	CustomerColumns []string `yaml:"customer_columns"`
	// Postgres publishes the outputs into PostgreSQL as well. Without this block, setting
	// CKM_PG_DSN turns it on with the defaults.
	Postgres *PublishPostgres `yaml:"postgres"`
}

// PublishPostgres says where in PostgreSQL to publish: the DSN is read from the environment
// when publishing, so it is never in a config file or a log.
type PublishPostgres struct {
	DSNEnv string `yaml:"dsn_env"` // the environment variable holding the DSN; default CKM_PG_DSN
	Schema string `yaml:"schema"`  // default ckm
	// ReaderWait bounds how long a publish's commit waits for the BI transactions that were
	// reading when the new as_of's partitions were attached; default 30s; 0: until they end.
	ReaderWait string `yaml:"reader_wait"`
}

// DefaultReaderWait is publish.postgres.reader_wait when not set.
const DefaultReaderWait = 30 * time.Second

// PostgresReaderWait is publish.postgres.reader_wait, read once validation has checked it
// (0: no bound).
func (p Publish) PostgresReaderWait() time.Duration {
	if p.Postgres == nil || p.Postgres.ReaderWait == "" {
		return DefaultReaderWait
	}
	d, _ := time.ParseDuration(p.Postgres.ReaderWait)
	return d
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// DefaultPostgresDSNEnv is the environment variable that holds the PostgreSQL output's DSN.
const DefaultPostgresDSNEnv = "CKM_PG_DSN"

// PostgresTarget is the DSN and schema to publish into, read from the environment now; ok is
// false when PostgreSQL is not an output. A configured block whose variable is unset is an
// error: the operator asked for PostgreSQL.
func (p Publish) PostgresTarget() (dsn, schema string, ok bool, err error) {
	if p.Postgres == nil {
		dsn = os.Getenv(DefaultPostgresDSNEnv)
		return dsn, "ckm", dsn != "", nil
	}
	env := cmp.Or(p.Postgres.DSNEnv, DefaultPostgresDSNEnv)
	if dsn = os.Getenv(env); dsn == "" {
		return "", "", false, fmt.Errorf("publish.postgres: the environment variable %s, which holds the DSN, is not set", env)
	}
	return dsn, cmp.Or(p.Postgres.Schema, "ckm"), true, nil
}

// FileMode is Mode, read once validation has checked it (0: the default).
func (p Publish) FileMode() os.FileMode {
	m, _ := strconv.ParseUint(p.Mode, 8, 32)
	return os.FileMode(m)
}

// Grace is GracePeriod, read once validation has checked it.
func (s Serve) Grace() time.Duration {
	d, _ := time.ParseDuration(s.GracePeriod)
	return d
}

// Ingest is IngestInterval, read once validation has checked it; 0 when unset.
func (s Serve) Ingest() time.Duration {
	d, _ := time.ParseDuration(s.IngestInterval)
	return d
}

// Scoring holds the parameters of the transforms.
type Scoring struct {
	LookbackDays int              `yaml:"lookback_days"`
	RFM          rfm.Params       `yaml:"rfm"`
	CLV          clv.Params       `yaml:"clv"`
	Value        value.Params     `yaml:"value"`
	Knowledge    knowledge.Params `yaml:"knowledge"`
}

// Transforms lists the transforms a pipeline may name, in the order they run.
var Transforms = []string{"rfm", "clv", "value", "knowledge"}

// transformNeeds lists what each transform reads from another.
var transformNeeds = map[string]string{"value": "clv", "knowledge": "clv"}

// BadRatio is the dead-letter ratio above which a source fails the run.
func (c *Config) BadRatio(s *Source) float64 {
	switch {
	case s.MaxBadRatio != nil:
		return *s.MaxBadRatio
	case c.MaxBadRatio != nil:
		return *c.MaxBadRatio
	}
	return 0.05
}

// Location is the configured time zone.
func (c *Config) Location() *time.Location {
	loc, err := time.LoadLocation(c.Timezone)
	if err != nil {
		return time.UTC
	}
	return loc
}

// ScheduleLocation is the zone p's schedule is read in: its own, else the config's.
func (c *Config) ScheduleLocation(p *Pipeline) (*time.Location, error) {
	return time.LoadLocation(cmp.Or(p.Timezone, c.Timezone))
}

// MappingSpec is the mapping of source name onto its canonical table.
func (c *Config) MappingSpec(name string, json bool) mapping.Spec {
	s := c.Sources[name]
	t, _ := mapping.TableNamed(s.Table)
	zone := s.Timezone
	if zone == "" {
		zone = c.Timezone
	}
	return mapping.Spec{Table: t, Fields: s.Mapping, JSON: json, Timezone: zone, Filter: s.Filter, RollupLines: s.RollupLines, Lookups: s.Lookups,
		UnknownFields: s.UnknownFields, DecimalComma: s.DecimalSeparator == ","}
}

// SourceNames lists sources in load order: by canonical table, then by name.
func (c *Config) SourceNames(only []string) []string {
	names := only
	if len(names) == 0 {
		for n := range c.Sources {
			names = append(names, n)
		}
	}
	order := map[string]int{}
	for i, t := range mapping.TableNames() {
		order[t] = i
	}
	sorted := append([]string(nil), names...)
	sort.SliceStable(sorted, func(i, j int) bool {
		a, b := c.Sources[sorted[i]], c.Sources[sorted[j]]
		if order[a.Table] != order[b.Table] {
			return order[a.Table] < order[b.Table]
		}
		return sorted[i] < sorted[j]
	})
	return sorted
}

// PipelineNames lists pipelines by name.
func (c *Config) PipelineNames() []string {
	out := make([]string, 0, len(c.Pipelines))
	for n := range c.Pipelines {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Load reads, interpolates, checks and validates a config file. Any problems come back
// together as Problems.
func Load(path string) (*Config, error) {
	return load(path, osLookup)
}

func load(path string, env func(string) (string, bool)) (*Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	text, shadow, subs, problems := interpolate(path, raw, env)
	file, err := parser.ParseBytes(text, 0)
	if len(problems) == 0 {
		if wrong := checkSubstitutions(path, file, err, shadow, subs); len(wrong) > 0 {
			return nil, Problems(wrong)
		}
	}
	if err != nil {
		return nil, Problems{{File: path, Msg: "not valid YAML: " + yaml.FormatError(err, false, false)}}
	}
	if len(file.Docs) == 0 || file.Docs[0].Body == nil {
		return nil, Problems{{File: path, Msg: "config is empty", Hint: "see the README's config reference"}}
	}
	body := file.Docs[0].Body
	w := &schemaWalker{file: path, lines: map[string]int{}, extra: connectorBlock}
	w.walk(body, reflect.TypeOf(Config{}), "")
	problems = append(problems, w.problems...)
	cfg := &Config{File: path, BaseDir: filepath.Dir(abs)}
	if len(problems) == 0 {
		if err := yaml.NodeToValue(body, cfg); err != nil {
			problems = append(problems, Problem{File: path, Msg: yaml.FormatError(err, false, false)})
		}
	}
	if len(problems) == 0 {
		problems = append(problems, cfg.decodeConnectors(body, w.lines)...)
	}
	if len(problems) == 0 {
		cfg.applyDefaults()
		problems = append(problems, cfg.validate(w.lines)...)
	}
	if len(problems) > 0 {
		sort.SliceStable(problems, func(i, j int) bool { return problems[i].Line < problems[j].Line })
		return cfg, Problems(problems)
	}
	return cfg, nil
}

// checkSQL has DuckDB parse the SQL each mapping embeds (checked only when the rest of a
// source's mapping is sound, as a run would compile it).
func (c *Config) checkSQL(add func(path, msg, hint string)) {
	var names []string // the sources with SQL to check: an expr, a filter or a format
	for _, name := range slices.Sorted(maps.Keys(c.Sources)) {
		spec := c.MappingSpec(name, false)
		if spec.Table.Name != "" && (len(spec.Expressions()) > 0 || slices.ContainsFunc(slices.Collect(maps.Values(spec.Fields)),
			func(f mapping.Field) bool { return f.Format != "" })) {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		return
	}
	ctx := context.Background()
	scratch, err := warehouse.OpenScratch(ctx)
	var checker *mapping.SQLChecker
	if err == nil {
		defer scratch.Close()
		checker, err = mapping.NewSQLChecker(ctx, scratch.DB())
	}
	for _, name := range names {
		var problems []connectors.FieldProblem
		if err == nil {
			problems, err = checker.Check(ctx, c.MappingSpec(name, false))
		}
		if err != nil {
			add("sources."+name, "could not check its SQL: "+err.Error(), "")
			return
		}
		for _, p := range problems {
			add("sources."+name+"."+p.Key, p.Msg, p.Hint)
		}
	}
}

// connectorBlock lets a source hold one block named after a registered connector kind.
func connectorBlock(path, key string) (reflect.Type, bool, []string) {
	if !regexp.MustCompile(`^sources\.[^.]+$`).MatchString(path) {
		return nil, false, nil
	}
	k, ok := connectors.Lookup(key)
	if !ok {
		kinds := connectors.Kinds()
		for i, kind := range kinds {
			kinds[i] = kind + " (connector)"
		}
		return nil, false, kinds
	}
	return reflect.TypeOf(k.NewConfig()), true, nil
}

func (c *Config) decodeConnectors(body ast.Node, lines map[string]int) []Problem {
	var problems []Problem
	for name, s := range c.Sources {
		p, err := yaml.PathString("$.sources." + quotePathKey(name))
		if err != nil {
			continue
		}
		node, err := p.FilterNode(body)
		if err != nil || node == nil {
			continue
		}
		m, ok := asMapping(node)
		if !ok {
			continue
		}
		for _, kv := range m.Values {
			k, ok := connectors.Lookup(kv.Key.String())
			if !ok {
				continue
			}
			if s.Kind != "" {
				problems = append(problems, Problem{File: c.File, Line: line(kv.Key), Path: "sources." + name,
					Msg: fmt.Sprintf("has two connector blocks (%s and %s)", s.Kind, kv.Key.String()), Hint: "a source reads from one connector"})
				continue
			}
			opts := k.NewConfig()
			if err := yaml.NodeToValue(kv.Value, opts); err != nil {
				problems = append(problems, Problem{File: c.File, Line: line(kv.Value), Path: "sources." + name + "." + kv.Key.String(),
					Msg: yaml.FormatError(err, false, false)})
			}
			s.Kind, s.Options = kv.Key.String(), opts
		}
		if s.Kind == "" {
			problems = append(problems, Problem{File: c.File, Line: lines["sources."+name], Path: "sources." + name,
				Msg: "no connector block", Hint: "add one of: " + strings.Join(connectors.Kinds(), ", ") + " (e.g. file: {paths: [data/x.csv]})"})
		}
	}
	return problems
}

func quotePathKey(k string) string {
	if regexp.MustCompile(`^[A-Za-z0-9_-]+$`).MatchString(k) {
		return k
	}
	return "'" + k + "'"
}

func (c *Config) applyDefaults() {
	c.Timezone = cmp.Or(c.Timezone, "UTC")
	c.Warehouse.Path = cmp.Or(c.Warehouse.Path, "data/ckm.duckdb")
	if !filepath.IsAbs(c.Warehouse.Path) {
		c.Warehouse.Path = filepath.Join(c.BaseDir, c.Warehouse.Path)
	}
	c.Warehouse.TempDirectory = cmp.Or(c.Warehouse.TempDirectory, warehouse.DefaultTempDirectory(c.Warehouse.Path))
	if !filepath.IsAbs(c.Warehouse.TempDirectory) {
		c.Warehouse.TempDirectory = filepath.Join(c.BaseDir, c.Warehouse.TempDirectory)
	}
	c.Scoring.LookbackDays = cmp.Or(c.Scoring.LookbackDays, 365)
	if len(c.Scoring.RFM.Segments) == 0 {
		c.Scoring.RFM.Segments = rfm.DefaultSegments()
	}
	c.Scoring.CLV = c.Scoring.CLV.WithDefaults()
	c.Scoring.Value = c.Scoring.Value.WithDefaults()
	c.Scoring.Knowledge = c.Scoring.Knowledge.WithDefaults()
	for _, s := range c.Sources {
		for name, l := range s.Lookups {
			if l.File != "" && !filepath.IsAbs(l.File) {
				l.File = filepath.Join(c.BaseDir, l.File)
				s.Lookups[name] = l
			}
		}
	}
	if len(c.Pipelines) == 0 {
		c.Pipelines = map[string]*Pipeline{"nightly": {}}
	}
	for _, p := range c.Pipelines {
		if len(p.Transforms) == 0 {
			p.Transforms = append([]string(nil), Transforms...)
		}
		p.Overlap = cmp.Or(p.Overlap, string(scheduler.OverlapSkip))
		p.CatchUp = cmp.Or(p.CatchUp, string(scheduler.CatchUpLatest))
	}
	c.Serve.Listen = cmp.Or(c.Serve.Listen, "127.0.0.1:9464")
	c.Serve.GracePeriod = cmp.Or(c.Serve.GracePeriod, "5m")
	c.Warehouse.LockWait = cmp.Or(c.Warehouse.LockWait, "10m")
	c.Publish.Dir = cmp.Or(c.Publish.Dir, filepath.Join(filepath.Dir(c.Warehouse.Path), "publish"))
	if !filepath.IsAbs(c.Publish.Dir) {
		c.Publish.Dir = filepath.Join(c.BaseDir, c.Publish.Dir)
	}
	for _, b := range []**bool{&c.Publish.Parquet, &c.Publish.Snapshot, &c.Publish.Report} {
		if *b == nil {
			*b = new(true)
		}
	}
}

func (c *Config) validate(lines map[string]int) []Problem {
	var out []Problem
	add := func(path, msg, hint string) {
		l := lines[path]
		for p := path; l == 0 && strings.Contains(p, "."); {
			p = p[:strings.LastIndex(p, ".")]
			l = lines[p]
		}
		out = append(out, Problem{File: c.File, Line: l, Path: path, Msg: msg, Hint: hint})
	}
	if _, err := time.LoadLocation(c.Timezone); err != nil {
		add("timezone", fmt.Sprintf("unknown time zone %q", c.Timezone), "an IANA name such as Europe/Berlin or UTC")
	}
	if c.Warehouse.Threads < 0 {
		add("warehouse.threads", "must be 0 (all cores) or more", "")
	}
	if m := c.Warehouse.MemoryLimit; m != "" && !regexp.MustCompile(`(?i)^\d+(\.\d+)?\s*(b|kb|mb|gb|tb|kib|mib|gib|tib|%)$`).MatchString(m) {
		add("warehouse.memory_limit", fmt.Sprintf("cannot read %q as a size", m), "e.g. 4GB or 512MB")
	}
	checkRatio := func(path string, r *float64) {
		if r != nil && (*r < 0 || *r > 1) {
			add(path, fmt.Sprintf("%g is not a ratio between 0 and 1", *r), "0.05 allows 5% bad records")
		}
	}
	checkRatio("max_bad_ratio", c.MaxBadRatio)
	if len(c.Sources) == 0 {
		add("sources", "no sources configured", "add a source under sources:, see the README")
	}
	for name, s := range c.Sources {
		base := "sources." + name
		checkRatio(base+".max_bad_ratio", s.MaxBadRatio)
		t, ok := mapping.TableNamed(s.Table)
		if !ok {
			add(base+".table", fmt.Sprintf("unknown table %q", s.Table), "one of "+strings.Join(mapping.TableNames(), ", "))
		}
		if ok && s.RollupLines && !t.Additive() {
			add(base+".rollup_lines", "table "+t.Name+" has no columns that lines add up in", "rollup_lines is for order lines (orders)")
		}
		if s.UnknownFields != "" && !slices.Contains(mapping.UnknownFieldPolicies, s.UnknownFields) {
			add(base+".unknown_fields", "unknown policy "+s.UnknownFields, "one of "+strings.Join(mapping.UnknownFieldPolicies, ", "))
		}
		if s.DecimalSeparator != "" && s.DecimalSeparator != "." && s.DecimalSeparator != "," {
			add(base+".decimal_separator", fmt.Sprintf("unknown decimal separator %q", s.DecimalSeparator), `"." or ","`)
		}
		if s.Timezone != "" {
			if _, err := time.LoadLocation(s.Timezone); err != nil {
				add(base+".timezone", fmt.Sprintf("unknown time zone %q", s.Timezone), "an IANA name such as Europe/Berlin")
			}
		}
		if ok {
			spec := mapping.Spec{Table: t, Fields: s.Mapping}
			problems := spec.Validate()
			cols := make([]string, 0, len(problems))
			for col := range problems {
				cols = append(cols, col)
			}
			sort.Strings(cols)
			for _, col := range cols {
				add(base+".mapping."+col, problems[col], "")
			}
		}
		for _, name := range slices.Sorted(maps.Keys(s.Lookups)) {
			problems := mapping.ValidateLookup(s.Lookups[name])
			for _, key := range slices.Sorted(maps.Keys(problems)) {
				add(base+".lookups."+name+"."+key, problems[key], "")
			}
		}
		if _, err := mapping.OrderLookups(s.Lookups); err != nil {
			add(base+".lookups", err.Error(), "a lookup may match on an earlier lookup's column, not on its own")
		}
		kind, known := connectors.Lookup(s.Kind)
		if known && kind.Spec.Rereads && s.RollupLines {
			add(base+".rollup_lines", "the "+s.Kind+" connector reads a changed record again, and a line read twice would add to its order twice",
				"roll the lines up in the source, e.g. query: SELECT order_id, min(customer_id) AS customer_id, …, sum(amount) AS amount, max(updated_at) AS updated_at FROM lines GROUP BY order_id; its rows then replace the order as its lines change")
		}
		if known && s.Options != nil {
			for _, p := range kind.Check(s.Options, c.BaseDir) {
				add(base+"."+s.Kind+"."+p.Key, p.Msg, p.Hint)
			}
		}
	}
	c.checkSQL(add)
	names := make([]string, 0, len(c.Sources))
	for n := range c.Sources {
		names = append(names, n)
	}
	sort.Strings(names)
	for name, p := range c.Pipelines {
		base := "pipelines." + name
		for i, s := range p.Sources {
			if _, ok := c.Sources[s]; !ok {
				hint := "configured sources: " + strings.Join(names, ", ")
				if cl := closest(s, names); cl != "" {
					hint = "did you mean " + cl + "?"
				}
				add(fmt.Sprintf("%s.sources[%d]", base, i), "unknown source "+s, hint)
			}
		}
		for i, t := range p.Transforms {
			if !slices.Contains(Transforms, t) {
				add(fmt.Sprintf("%s.transforms[%d]", base, i), "unknown transform "+t, "one of "+strings.Join(Transforms, ", "))
			}
			if need, ok := transformNeeds[t]; ok && !slices.Contains(p.Transforms, need) {
				add(fmt.Sprintf("%s.transforms[%d]", base, i), fmt.Sprintf("transform %s needs %s", t, need), "add "+need+" to the list")
			}
		}
		loc, err := time.LoadLocation(cmp.Or(p.Timezone, c.Timezone))
		if err != nil && p.Timezone != "" {
			add(base+".timezone", fmt.Sprintf("unknown time zone %q", p.Timezone), "an IANA name such as Europe/Berlin")
		}
		if p.Schedule != "" && err == nil {
			if _, err := scheduler.Parse(p.Schedule, loc); err != nil {
				add(base+".schedule", err.Error(), `five fields (minute hour day month weekday), e.g. "30 2 * * *", an optional leading seconds field, or @daily`)
			}
		}
		if !slices.Contains([]string{string(scheduler.OverlapSkip), string(scheduler.OverlapQueue)}, p.Overlap) {
			add(base+".overlap", fmt.Sprintf("unknown overlap policy %q", p.Overlap), "skip or queue")
		}
		if !slices.Contains([]string{string(scheduler.CatchUpNone), string(scheduler.CatchUpLatest), string(scheduler.CatchUpAll)}, p.CatchUp) {
			add(base+".catch_up", fmt.Sprintf("unknown catch-up policy %q", p.CatchUp), "none, latest or all")
		}
	}
	durations := []struct{ key, value string }{{"warehouse.lock_wait", c.Warehouse.LockWait},
		{"serve.grace_period", c.Serve.GracePeriod}, {"serve.ingest_interval", cmp.Or(c.Serve.IngestInterval, "0s")}}
	if pg := c.Publish.Postgres; pg != nil {
		durations = append(durations, struct{ key, value string }{"publish.postgres.reader_wait", cmp.Or(pg.ReaderWait, "0s")})
	}
	for _, d := range durations {
		if v, err := time.ParseDuration(d.value); err != nil || v < 0 {
			add(d.key, fmt.Sprintf("cannot read %q as a duration", d.value), "e.g. 30s, 5m, 1h")
		}
	}
	if c.Scoring.LookbackDays < 1 {
		add("scoring.lookback_days", "must be at least 1", "")
	}
	if _, err := c.Scoring.CLV.UnitDays(); err != nil {
		add("scoring.clv.time_unit", err.Error(), "")
	}
	if h := c.Scoring.CLV.HoldoutEnd; h != "" {
		if _, err := time.Parse(time.DateOnly, h); err != nil {
			add("scoring.clv.holdout_end", fmt.Sprintf("cannot read %q as a date", h), "YYYY-MM-DD")
		}
	}
	if c.Scoring.CLV.HorizonMonths < 1 {
		add("scoring.clv.horizon_months", "must be at least 1", "")
	}
	if err := c.Scoring.Value.Validate(); err != nil {
		add("scoring.value", err.Error(), "")
	}
	problems := c.Scoring.Knowledge.Validate()
	feedback, _ := mapping.TableNamed("feedback")
	kinds, _ := feedback.Column("kind")
	for _, key := range slices.Sorted(maps.Keys(problems)) {
		add("scoring.knowledge."+key, problems[key], "")
	}
	for _, kind := range slices.Sorted(maps.Keys(c.Scoring.Knowledge.KindWeights)) {
		if !slices.Contains(kinds.Allowed, kind) {
			hint := "one of " + strings.Join(kinds.Allowed, ", ")
			if cl := closest(kind, kinds.Allowed); cl != "" {
				hint = "did you mean " + cl + "?"
			}
			add("scoring.knowledge.kind_weights."+kind, "unknown feedback kind "+kind, hint)
		}
	}
	if m := c.Publish.Mode; m != "" {
		if v, err := strconv.ParseUint(m, 8, 32); err != nil || v > 0o777 || v&0o600 != 0o600 {
			add("publish.mode", fmt.Sprintf("%q is not a file permission ckm can write and read", m), "octal, e.g. 0600 (default) or 0640")
		}
	}
	if pg := c.Publish.Postgres; pg != nil {
		if pg.DSNEnv != "" && !envName.MatchString(pg.DSNEnv) {
			add("publish.postgres.dsn_env", fmt.Sprintf("%q is not an environment variable's name", pg.DSNEnv), "e.g. CKM_PG_DSN (the default)")
		}
		if len(pg.Schema) > 63 || strings.ContainsRune(pg.Schema, 0) {
			add("publish.postgres.schema", fmt.Sprintf("%q is not a PostgreSQL schema name", pg.Schema), "at most 63 bytes, e.g. ckm (the default)")
		}
	}
	customers, _ := mapping.TableNamed("customers")
	for i, col := range c.Publish.CustomerColumns {
		if _, ok := customers.Column(col); !ok {
			add(fmt.Sprintf("publish.customer_columns[%d]", i), "customers has no column "+col, "one of "+strings.Join(customers.ColumnNames(), ", "))
		}
	}
	if err := rfm.ValidateSegments(c.Scoring.RFM.Segments); err != nil {
		add("scoring.rfm.segments", err.Error(), "patterns match the two-digit R,F score string, e.g. 5[4-5]")
	}
	bins := c.Scoring.RFM.Bins.Validate()
	for _, dim := range slices.Sorted(maps.Keys(bins)) {
		add("scoring.rfm.bins."+dim, bins[dim], "four ascending inclusive upper bounds, e.g. frequency: [1, 2, 3, 5]; recency in days: [30, 90, 180, 270] for scores 5–2")
	}
	return out
}

// ErrProblems reports whether err lists config problems.
func ErrProblems(err error) (Problems, bool) {
	var p Problems
	ok := errors.As(err, &p)
	return p, ok
}
