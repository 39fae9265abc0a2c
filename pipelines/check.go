package pipelines

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/ckm-dev/ckm/connectors"
	"github.com/ckm-dev/ckm/connectors/mapping"
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
		if len(spec.Lookups) > 0 && len(streams) > 0 {
			w := newBatchWriter(conn, r.Config, name, "check", r.Log, false)
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
		for _, stream := range slices.Sorted(maps.Keys(streams)) {
			have := append(slices.Clone(streams[stream]), lookups...)
			if missing := spec.MissingFields(have); len(missing) > 0 {
				problems = append(problems, fmt.Sprintf("source %s: %s has no column %s, which the mapping reads (it has %s%s)",
					name, connectors.Printable(stream), connectors.NameList(missing), connectors.NameList(streams[stream]), mapping.NameHint(missing, streams[stream])))
			}
			// An expression names columns as DuckDB reads names: in any capitals.
			for _, key := range slices.Sorted(maps.Keys(read)) {
				var missing []string
				for _, col := range read[key] {
					if !slices.ContainsFunc(have, func(h string) bool { return strings.EqualFold(h, col) }) {
						missing = append(missing, col)
					}
				}
				if len(missing) > 0 {
					problems = append(problems, fmt.Sprintf("source %s: %s has no column %s, which %s reads (it has %s)",
						name, connectors.Printable(stream), connectors.NameList(missing), key, connectors.NameList(streams[stream])))
				}
			}
		}
	}
	return problems, nil
}
