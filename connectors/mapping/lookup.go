package mapping

import (
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ckm-dev/ckm/warehouse"
)

// Lookup enriches each record of a tabular source with the columns of the one row of another
// file whose key matches one of the record's fields: a review carries an order id, the orders
// file gives the customer. The columns are then fields named <lookup>.<column>, which the
// mapping reads like any other (e.g. customer_id: person.customer_unique_id).
type Lookup struct {
	File string `yaml:"file"` // CSV (optionally .gz) or Parquet; relative to the config file
	Key  string `yaml:"key"`  // the lookup file's column to match; must be unique in the file
	On   string `yaml:"on"`   // the record's field to match it with: a source field or <lookup>.<column>
}

// Parquet tells whether the lookup file is Parquet (otherwise CSV).
func (l Lookup) Parquet() bool { return strings.HasSuffix(strings.ToLower(l.File), ".parquet") }

// Relation is how DuckDB reads the lookup file, every column as text like CSV sources.
func (l Lookup) Relation() string {
	if l.Parquet() {
		return "read_parquet(" + warehouse.Quote(l.File) + ")"
	}
	return "read_csv(" + warehouse.Quote(l.File) + ", all_varchar = true, header = true)"
}

// dependsOn names the lookup whose column l matches on, if any.
func (l Lookup) dependsOn(lookups map[string]Lookup) string {
	if i := strings.Index(l.On, "."); i > 0 {
		if _, ok := lookups[l.On[:i]]; ok {
			return l.On[:i]
		}
	}
	return ""
}

// OrderLookups lists lookups so that each comes after the one it matches on, or says why it cannot.
func OrderLookups(lookups map[string]Lookup) ([]string, error) {
	var order []string
	placed := map[string]bool{}
	for len(order) < len(lookups) {
		progress := false
		for _, name := range slices.Sorted(maps.Keys(lookups)) {
			dep := lookups[name].dependsOn(lookups)
			if !placed[name] && (dep == "" || placed[dep]) {
				order, placed[name], progress = append(order, name), true, true
			}
		}
		if !progress {
			var stuck []string
			for _, name := range slices.Sorted(maps.Keys(lookups)) {
				if !placed[name] {
					stuck = append(stuck, name)
				}
			}
			return nil, fmt.Errorf("lookups %s match on each other in a cycle", strings.Join(stuck, ", "))
		}
	}
	return order, nil
}

// ValidateLookup checks one lookup's settings (its file already resolved against the config's directory).
func ValidateLookup(l Lookup) map[string]string {
	out := map[string]string{}
	if l.File == "" {
		out["file"] = "missing: the file to look up in"
	} else if matches, _ := filepath.Glob(l.File); len(matches) == 0 {
		out["file"] = fmt.Sprintf("no file %s", l.File)
	}
	if l.Key == "" {
		out["key"] = "missing: the lookup file's column to match"
	}
	if l.On == "" {
		out["on"] = "missing: the record's field to match the key with"
	}
	return out
}

// WithLookups wraps a batch's relation so each record also has its lookups' columns, named
// <lookup>.<column> (NULL when no row matches), as fields after the source's own. columns
// lists each lookup file's columns. A source field with a lookup column's name is refused: the
// mapping could not tell the two apart.
func WithLookups(b Batch, lookups map[string]Lookup, order []string, columns map[string][]string) (Batch, error) {
	var added []string
	for _, name := range order {
		for _, c := range columns[name] {
			added = append(added, name+"."+c)
		}
	}
	for _, a := range added {
		for _, f := range b.Fields {
			if strings.EqualFold(a, f) {
				return b, fmt.Errorf("the source has a field %q, which is also the name of a lookup column: rename the lookup", f)
			}
		}
	}
	p := FreshPrefix(append(slices.Clone(b.Fields), added...))
	ord := p + "ord"
	sel := make([]string, 0, len(b.Fields)+len(added)+1)
	for _, f := range b.Fields {
		sel = append(sel, "s."+warehouse.Ident(f))
	}
	alias := map[string]string{}
	var joins []string
	for i, name := range order {
		l := lookups[name]
		a := fmt.Sprintf("%sl%d", p, i)
		alias[name] = a
		on := "s." + warehouse.Ident(l.On)
		if dep := l.dependsOn(lookups); dep != "" {
			on = alias[dep] + "." + warehouse.Ident(l.On[len(dep)+1:])
		}
		for _, c := range columns[name] {
			sel = append(sel, a+"."+warehouse.Ident(c)+" AS "+warehouse.Ident(name+"."+c))
		}
		joins = append(joins, fmt.Sprintf("LEFT JOIN %s %s ON CAST(%s.%s AS VARCHAR) = CAST(%s AS VARCHAR)", l.Relation(), a, a, warehouse.Ident(l.Key), on))
	}
	sel = append(sel, "s."+ord)
	b.Relation = "(SELECT " + strings.Join(sel, ", ") + " FROM " + renameByPosition(b.Relation, b.Fields, ord) + " s " + strings.Join(joins, " ") + ")"
	b.Fields = append(slices.Clone(b.Fields), added...)
	return b, nil
}
