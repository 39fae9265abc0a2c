package pipelines

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/ckm-dev/ckm/connectors"
	"github.com/ckm-dev/ckm/connectors/mapping"
	"github.com/ckm-dev/ckm/warehouse"
)

// Check opens every source the way a run would, loading nothing, and returns every problem that
// would stop a run, each naming its source: brokers that cannot be reached, topics that do not
// exist, files that are damaged or lack a column the mapping reads. The warehouse is only
// DuckDB to sniff files with: it may be a scratch one.
func (r *Runner) Check(ctx context.Context) ([]string, error) {
	conn, err := r.Warehouse.Conn(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	sqlChecker, err := mapping.NewSQLChecker(ctx, r.Warehouse.DB())
	if err != nil {
		return nil, err
	}
	var problems []string
	for _, name := range r.Config.SourceNames(nil) {
		src, err := r.openSource(ctx, connectors.Env{Source: name, DB: conn, Log: r.Log.With("source", name)})
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		checker, ok := src.(connectors.Checker)
		if !ok {
			continue
		}
		streams, found := checker.Check(ctx)
		for _, p := range found {
			problems = append(problems, fmt.Sprintf("source %s: %s", name, p))
		}
		spec := r.Config.MappingSpec(name, false)
		var lookups []string
		w := newBatchWriter(conn, r.Config, name, "check", r.Log, false)
		if err := w.guard(ctx, sqlChecker); err != nil {
			return nil, err
		}
		if len(spec.Lookups) > 0 && len(streams) > 0 {
			if err := w.resolveLookups(ctx, spec.Lookups); err != nil {
				problems = append(problems, fmt.Sprintf("source %s: %v", name, err))
				continue
			}
			for _, l := range w.lookupOrder {
				for _, c := range w.lookupColumns[l] {
					lookups = append(lookups, l+"."+c)
				}
			}
		}
		read, err := sqlChecker.ColumnsRead(ctx, spec)
		if err != nil {
			return nil, err
		}
		var documents []string // streams of JSON documents
		for _, stream := range slices.Sorted(maps.Keys(streams)) {
			if streams[stream] == nil {
				documents = append(documents, connectors.Printable(stream))
				continue
			}
			fields := connectors.FieldNames(streams[stream])
			have := append(slices.Clone(fields), lookups...)
			found := len(problems)
			if missing := spec.MissingFields(have); len(missing) > 0 {
				problems = append(problems, fmt.Sprintf("source %s: %s has no column %s, which the mapping reads (it has %s%s)",
					name, connectors.Printable(stream), connectors.NameList(missing), connectors.NameList(fields), mapping.NameHint(missing, fields)))
			}
			for _, u := range unread(read, have) {
				problems = append(problems, fmt.Sprintf("source %s: %s has no column %s, which %s reads (it has %s)",
					name, connectors.Printable(stream), connectors.NameList(u.columns), u.key, connectors.NameList(fields)))
			}
			if len(problems) == found && len(read) > 0 {
				if p := w.bindFields(ctx, spec, streams[stream]); p != "" {
					problems = append(problems, fmt.Sprintf("source %s: %s: %s", name, connectors.Printable(stream), p))
				}
			}
		}
		// JSON documents have one shape, whatever their stream: the source says what it is
		// without reading any record, and the mapping is bound over it as over a file's fields.
		if shaper, ok := src.(connectors.DocumentShaper); ok && len(documents) > 0 && len(read) > 0 {
			problems = append(problems, w.checkDocuments(ctx, shaper.DocumentShape(), read, fmt.Sprintf("source %s: %s", name, strings.Join(documents, ", ")))...)
		}
	}
	return problems, nil
}

// bindFields binds the mapping (bindExpressions) over a relation of no rows with the stream's
// fields and types, as a run binds it over its records; "" also when the connector could not
// tell every field's type.
func (w *batchWriter) bindFields(ctx context.Context, spec mapping.Spec, fields []connectors.StreamField) string {
	if slices.ContainsFunc(fields, func(f connectors.StreamField) bool { return f.Type == "" }) {
		return ""
	}
	cols := make([]string, 0, len(fields)+1)
	types := make([]string, len(fields))
	for i, f := range fields {
		cols = append(cols, "CAST(NULL AS "+f.Type+") AS "+warehouse.Ident(f.Name))
		types[i] = f.Type
	}
	cols = append(cols, "CAST(NULL AS BIGINT) AS ord")
	mb := mapping.Batch{Relation: "(SELECT " + strings.Join(cols, ", ") + " LIMIT 0)", Fields: connectors.FieldNames(fields), NumberedLater: true}
	if _, err := w.conn.ExecContext(ctx, "SELECT * FROM "+mb.Relation); err != nil {
		return "" // a type DuckDB names but cannot cast to: the run's own relation decides
	}
	typeFields(&mb, types, nil)
	if len(spec.Lookups) > 0 {
		var err error
		if mb, err = mapping.WithLookups(mb, spec.Lookups, w.lookupOrder, w.lookupColumns); err != nil {
			return err.Error()
		}
	}
	return w.bindExpressions(ctx, spec, mb)
}

// checkDocuments checks the JSON mapping's expressions against b, a batch of no documents: the
// columns they read by name (read, by expression), then binding them (bindExpressions). Each
// problem starts with where.
func (w *batchWriter) checkDocuments(ctx context.Context, b connectors.Batch, read map[string][]string, where string) []string {
	mb, err := w.mappingBatch(ctx, b, w.jsonSpec)
	if err != nil {
		return []string{where + ": " + err.Error()}
	}
	var problems []string
	for _, u := range unread(read, append(slices.Clone(mb.Fields), "_doc")) {
		problems = append(problems, fmt.Sprintf("%s: %s reads %s, which JSON documents do not have as columns: their fields are read from _doc, as in json_extract_string(_doc, '$.%s')",
			where, u.key, connectors.NameList(u.columns), u.columns[0]))
	}
	if len(problems) == 0 {
		if p := w.bindExpressions(ctx, w.jsonSpec, mb); p != "" {
			problems = append(problems, where+": "+p)
		}
	}
	return problems
}

// unreadColumns are the columns an expression (by key) reads that a stream lacks.
type unreadColumns struct {
	key     string
	columns []string
}

// unread lists, by expression key in order, the columns of read (ColumnsRead's) that have lacks,
// in any capitals as DuckDB reads names.
func unread(read map[string][]string, have []string) []unreadColumns {
	var out []unreadColumns
	for _, key := range slices.Sorted(maps.Keys(read)) {
		var missing []string
		for _, col := range read[key] {
			if !slices.ContainsFunc(have, func(h string) bool { return strings.EqualFold(h, col) }) {
				missing = append(missing, col)
			}
		}
		if len(missing) > 0 {
			out = append(out, unreadColumns{key, missing})
		}
	}
	return out
}

// bindExpressions has DuckDB bind the mapping over mb, a batch of no records, and names the
// expressions it refuses (text times a number: CSV fields are text); "" when it binds. Only the
// operator's expressions are named: the rest of the mapping is ckm's, and what fails there fails
// the run as before.
func (w *batchWriter) bindExpressions(ctx context.Context, spec mapping.Spec, mb mapping.Batch) string {
	_, err := w.conn.ExecContext(ctx, "SELECT * FROM ("+spec.Compile(mb)+") LIMIT 0")
	if err == nil {
		return ""
	}
	probe := func(ctx context.Context, expr string, records bool) error {
		_, err := w.conn.ExecContext(ctx, spec.Probe(mb, expr, records))
		return err
	}
	if blamed := blameExpression(ctx, probe, spec, err); blamed != err {
		return blamed.Error()
	}
	return ""
}
