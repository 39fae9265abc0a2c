package mapping

import (
	"cmp"
	"fmt"
	"maps"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ckm-dev/ckm/connectors"
	"github.com/ckm-dev/ckm/warehouse"
)

// Field says where one canonical column comes from. Exactly one of From, Expr, Const or Hash is set;
// a bare string in YAML is shorthand for From.
type Field struct {
	From     string   `yaml:"from"`     // source field; for JSON a dotted path (a.b.c) or a JSONPath ($.a[0].b)
	Expr     string   `yaml:"expr"`     // DuckDB SQL over the source fields (text for CSV/JSON: TRY_CAST them)
	Const    *string  `yaml:"const"`    // the same value for every row
	Hash     []string `yaml:"hash"`     // a deterministic id from these source fields
	Format   string   `yaml:"format"`   // strptime format for dates and timestamps, e.g. %d/%m/%Y %H:%M, or a UnixFormats word
	Timezone string   `yaml:"timezone"` // IANA zone of timestamps written without an offset
	// Min and Max bound a number, date or timestamp column's values, inclusive: a value outside
	// is a dead letter. Min replaces the column's Earliest.
	Min string `yaml:"min"`
	Max string `yaml:"max"`
}

// straight says the field's value is a source field's as it is (From), not a constant, an
// expression or a hash.
func (f Field) straight() bool { return f.Const == nil && f.Expr == "" && len(f.Hash) == 0 }

// AcceptsScalar lets config accept `order_id: InvoiceNo` for `order_id: {from: InvoiceNo}`.
func (*Field) AcceptsScalar() {}

// UnmarshalYAML accepts the scalar shorthand or the full mapping.
func (f *Field) UnmarshalYAML(unmarshal func(any) error) error {
	var s string
	if err := unmarshal(&s); err == nil {
		*f = Field{From: s}
		return nil
	}
	type plain Field
	return unmarshal((*plain)(f))
}

// Spec is a source's mapping onto one canonical table.
type Spec struct {
	Table    Table
	Fields   map[string]Field
	JSON     bool   // records are JSON documents in a `payload` column
	Timezone string // zone for timestamps without an offset, when a field sets none
	Filter   string // SQL condition; rows where it is not true are skipped on purpose (not dead letters)
	// RollupLines treats records sharing a key within a batch as lines of one record: additive
	// columns are summed, the others come from the first line.
	RollupLines bool
	Lookups     map[string]Lookup // enrich tabular records from other files before mapping
	// UnknownFields is what happens to source fields the mapping does not read: a JSON
	// document's top-level keys, a file's columns. See UnknownFieldPolicies.
	UnknownFields string
	// DecimalComma reads numbers written with a decimal comma (1,5): European spreadsheets'
	// exports. A thousands separator (1.234,56) still fails the record.
	DecimalComma bool
	// Guarded are the expressions (by Expressions' keys) whose error on one record (a CAST of
	// 'n/a') dead-letters that record instead of failing its whole batch (SQLChecker.Guardable).
	Guarded map[string]bool
}

// The policies for fields the mapping does not read, for sources whose records drift.
const (
	UnknownIgnore = "ignore" // drop them (the default)
	UnknownKeep   = "keep"   // keep them as a JSON object in the table's _extra column
	UnknownFail   = "fail"   // dead-letter the record, naming them
)

// UnknownFieldPolicies lists the values unknown_fields accepts.
var UnknownFieldPolicies = []string{UnknownIgnore, UnknownKeep, UnknownFail}

// ReadsOrdinals says whether the compiled mapping reads records' numbers itself, or only passes
// them through: a table without a mapped key is deduplicated by whole record, the first kept,
// and a lookup's join does not keep the records' order, so such records must come numbered.
func (s Spec) ReadsOrdinals() bool {
	_, hasKey := s.Fields[s.Table.Key]
	return !hasKey || len(s.Lookups) > 0
}

// MissingFields lists the source fields the mapping reads that a columnar source does not have.
// (JSON documents are free-form: a missing path is a missing value, reported per record.)
func (s Spec) MissingFields(have []string) []string {
	if s.JSON {
		return nil
	}
	set := map[string]bool{}
	for _, h := range have {
		set[h] = true
	}
	var missing []string
	for _, name := range s.Table.ColumnNames() {
		f, ok := s.Fields[name]
		if !ok {
			continue
		}
		for _, ref := range append([]string{f.From}, f.Hash...) {
			if ref != "" && !set[ref] {
				missing = append(missing, ref)
			}
		}
	}
	return missing
}

// NameHint tells, of the fields a mapping reads that the source does not have, those it has
// under other capitals (names match exactly: a header's ID is not the mapping's id), as
// "; names match exactly, and id is ID there", and those it names more than once, by position
// (connectors.DistinctNames), as "; the source names id more than once: read "id (column 1)" or
// "id (column 3)""; "" when none.
func NameHint(missing, have []string) string {
	var cased, repeated []string
	for _, m := range missing {
		var at []string
		for _, h := range have {
			if connectors.NamedAtColumn(h, m) {
				at = append(at, strconv.Quote(h))
			}
		}
		if len(at) > 0 {
			repeated = append(repeated, "the source names "+connectors.Printable(m)+" more than once: read "+strings.Join(at, " or "))
			continue
		}
		for _, h := range have {
			if h != m && strings.EqualFold(h, m) {
				cased = append(cased, connectors.Printable(m)+" is "+connectors.Printable(h)+" there")
				break
			}
		}
	}
	var hint string
	if len(cased) > 0 {
		hint = "; names match exactly, and " + strings.Join(cased, ", ")
	}
	for _, r := range repeated {
		hint += "; " + r
	}
	return hint
}

// SessionZone is the DuckDB TimeZone setting Compile's SQL must run under: timestamps
// without an offset are read in it.
func (s Spec) SessionZone() string {
	if s.Timezone == "" {
		return "UTC"
	}
	return s.Timezone
}

// Validate reports mapping problems by canonical column name ("" for the mapping as a whole).
func (s Spec) Validate() map[string]string {
	problems := map[string]string{}
	for name, f := range s.Fields {
		if _, ok := s.Table.Column(name); !ok {
			problems[name] = fmt.Sprintf("%s has no column %s (columns: %s)", s.Table.Name, name, strings.Join(s.Table.ColumnNames(), ", "))
			continue
		}
		set := 0
		for _, b := range []bool{f.From != "", f.Expr != "", f.Const != nil, len(f.Hash) > 0} {
			if b {
				set++
			}
		}
		if set != 1 {
			problems[name] = "set exactly one of from, expr, const, hash"
		}
		if f.Timezone != "" {
			if _, err := time.LoadLocation(f.Timezone); err != nil {
				problems[name] = fmt.Sprintf("unknown time zone %q", f.Timezone)
			}
		}
		if c, _ := s.Table.Column(name); f.Format != "" {
			_, unix := UnixFormats[f.Format]
			switch {
			case c.Type != Date && c.Type != Timestamp:
				problems[name] = fmt.Sprintf("format reads dates and timestamps; %s is %s", name, c.Type.word())
			case !unix && !strings.Contains(f.Format, "%"):
				problems[name] = fmt.Sprintf("format %q is neither strptime codes (%%d/%%m/%%Y %%H:%%M) nor Unix time (%s)",
					f.Format, strings.Join(slices.Sorted(maps.Keys(UnixFormats)), ", "))
			}
		}
		if _, err := s.bounds(name, f); err != nil {
			problems[name] = err.Error()
		}
	}
	for _, c := range s.Table.Columns {
		if _, ok := s.Fields[c.Name]; !ok && c.Required && !(c.Name == s.Table.Key && s.Table.Version == "") {
			problems[c.Name] = fmt.Sprintf("required column %s is not mapped", c.Name)
		}
	}
	return problems
}

// Batch is what Compile maps: a relation and how to name each of its records.
type Batch struct {
	// Relation is a table function or subquery whose columns are the source's fields followed by
	// one last column, the record's 1-based number within the batch (in source order; any name).
	// Fields names the source's fields, in order (every column but the last).
	Relation string
	Fields   []string
	// Stream and Seq are SQL over the relation's columns giving where each record came from (a
	// file, a topic/partition) and its number there (a line, a row, an offset); {ordinal} stands
	// for the record's number within the batch. The record's _position is
	// Stream || PositionSep || Seq, e.g. orders.csv:12.
	Stream, Seq, PositionSep string
	// NumberedLater leaves the lineage columns (_position, _stream, _seq, _ordinal) out, and
	// Stream and Seq unread: the caller numbers the mapped records itself, by the order they
	// were stored in (the relation's last column is then a placeholder).
	NumberedLater bool
	// Unreadable maps a source field to an SQL condition over the relation that holds when the
	// field's value on a record could not be read (e.g. a Kafka key that is not UTF-8; {ordinal}
	// stands for the record's number within the batch); a record whose mapping reads such a
	// field is dead-lettered, naming it.
	Unreadable map[string]string
	// Skip, when set, is an SQL condition over the source's fields marking rows that are not
	// records (connectors.Batch.LineMarker): they are numbered, then skipped.
	Skip string
	// Header is the header line Fields were named from, which the records could repeat
	// (connectors.Batch.Header).
	Header []string
	// Nested names the fields whose values are lists, structs or maps (a Parquet file's), with
	// their types: a column mapped straight from one is a dead letter, not the value's text.
	Nested map[string]string
	// Binary names the fields typed as bytes, not text (a Parquet byte array its writer did not
	// mark as a string, as older Spark and Hive did): a column mapped straight from one reads the
	// bytes as UTF-8 text, and bytes that are not UTF-8 are a dead letter.
	Binary map[string]bool
}

// Nested tells whether a DuckDB type holds several values (a list, an array, a struct, a map or
// a union).
func Nested(typ string) bool {
	return strings.HasSuffix(typ, "]") || strings.HasPrefix(typ, "STRUCT(") || strings.HasPrefix(typ, "MAP(") || strings.HasPrefix(typ, "UNION(")
}

// InternalPrefix is where the names of the generated SQL start; FreshPrefix picks another when
// a source field starts with it.
const InternalPrefix = "_ckm_"

// FreshPrefix returns a prefix for the generated SQL's names that no source field starts with
// (DuckDB's names are case-insensitive), so that no column of an untrusted file, whatever its
// name, can stand in for a value the mapping computes.
func FreshPrefix(fields []string) string {
	for n := 0; ; n++ {
		p := InternalPrefix
		if n > 0 {
			p = fmt.Sprintf("_ckm%d_", n)
		}
		clash := false
		for _, f := range fields {
			if strings.HasPrefix(strings.ToLower(f), p) {
				clash = true
				break
			}
		}
		if !clash {
			return p
		}
	}
}

// renameByPosition selects a batch relation's columns under the names fields gives them and,
// last, the record's number as ord: a column's name in the source never matters.
func renameByPosition(relation string, fields []string, ord string) string {
	cols := make([]string, 0, len(fields)+1)
	for i, f := range fields {
		cols = append(cols, fmt.Sprintf("#%d AS %s", i+1, warehouse.Ident(f)))
	}
	cols = append(cols, fmt.Sprintf("#%d AS %s", len(fields)+1, ord))
	return "(SELECT " + strings.Join(cols, ", ") + " FROM " + relation + ")"
}

// jsonDoc is a JSON record's document as expressions read it: NULL when it is not valid JSON.
const jsonDoc = "CASE WHEN json_valid(s.payload) THEN s.payload END AS _doc"

// Mapped lists the columns of Compile's result besides the table's own: lineage, the record's
// number in its batch, why it cannot be loaded (NULL when it can), its raw form and, for a JSON
// record, its other fields as a JSON object (both only with a reason), whether it is skipped on
// purpose (a filter, a blank record), and _extra.
var Mapped = []string{"_position", "_stream", "_seq", "_ordinal", "_reason", "_payload", "_meta", "_skip", "_extra"}

// Compile returns a SELECT over the batch yielding the table's columns (converted to their types)
// and the Mapped columns. It relies on DuckDB's lateral column aliases so each raw value and
// each conversion is computed once.
//
// The source's fields are untrusted names: they are renamed by position at the boundary, and
// every name the generated SQL introduces starts with a prefix no field starts with, so that the
// only names a source can bring into scope are its own fields, which mapping expressions and
// filters read.
func (s Spec) Compile(b Batch) string {
	p := FreshPrefix(b.Fields)
	ord := p + "ord"
	renamed := renameByPosition(b.Relation, b.Fields, ord)

	record := "s.payload"
	if !s.JSON {
		parts := make([]string, len(b.Fields))
		for i, f := range b.Fields {
			parts[i] = warehouse.Ident(f) + " := s." + warehouse.Ident(f)
		}
		record = "struct_pack(" + strings.Join(parts, ", ") + ")"
	}
	var sel []string
	var checks, undecodable, failed []check
	// try evaluates a guarded expression as the column tried, its failure on a record that
	// record's reason, naming what; it returns the expression's value.
	try := func(expr, tried, what string) string {
		sel = append(sel, guarded(expr, ord)+" AS "+tried)
		failed = append(failed, check{tried + " IS NULL", warehouse.Quote(what + FailsHere)})
		return "struct_extract(" + tried + ", 'v')"
	}
	objects := s.jsonObjects()
	ambiguous := s.ambiguousKeys(objects, p)
	for _, c := range s.Table.Columns {
		raw, val := p+"r_"+c.Name, p+"v_"+c.Name
		f, mapped := s.Fields[c.Name]
		rawExpr := "NULL"
		if mapped {
			rawExpr = s.rawExpr(f, p)
			if f.straight() && b.Binary[f.From] {
				// A cast would write é as \xC3\xA9: decode reads the bytes as UTF-8 text.
				undecodable = append(undecodable, check{rawExpr + " IS NOT NULL AND " + raw + " IS NULL",
					warehouse.Quote(c.Name + ": field " + f.From + " holds bytes that are not UTF-8 text")})
				rawExpr = "TRY(decode(" + rawExpr + "))"
			}
			if key := "mapping." + c.Name + ".expr"; f.Expr != "" && s.Guarded[key] {
				rawExpr = try(rawExpr, p+"t_"+c.Name, c.Name+": "+key)
			}
		} else if c.Name == s.Table.Key {
			// A source without ids gets a deterministic hash of the record; identical records
			// are told apart by their occurrence number so none collapse.
			rawExpr = "md5(concat(" + record + ", '#', " + p + "dup_seq))"
		}
		sel = append(sel, rawExpr+" AS "+raw)
		if c.Type == Integer {
			sel = append(sel, s.number(raw)+" AS "+p+"d_"+c.Name)
		}
		sel = append(sel, s.convert(c, f, raw, p)+" AS "+val)
		if typ, nested := b.Nested[f.From]; mapped && nested && f.straight() {
			checks = append(checks, check{"true", warehouse.Quote(c.Name + ": field " + f.From + " is a " + typ + " in the source, not a single value")})
		}
		if s.JSON && mapped && c.Type == Text && len(c.Allowed) == 0 && f.straight() {
			// A JSON array or object where a text belongs would load as its JSON text (elsewhere
			// the cast or the vocabulary fails it). Its type is asked only of values that read as
			// one would ('[' or '{' first): asking every document cost a sixth of mapping it.
			typ := "json_type(_doc, " + warehouse.Quote(jsonPath(f.From)) + ")"
			checks = append(checks, check{"ascii(" + raw + ") IN (91, 123) AND " + typ + " IN ('ARRAY', 'OBJECT')",
				fmt.Sprintf("%s || lower(%s) || ', not a single value'", warehouse.Quote(c.Name+": field "+f.From+" is a JSON "), typ)})
		}
		checks = append(checks, s.checks(c, f, mapped, raw, val)...)
	}
	unknown, extra := s.unknownFields(b.Fields, p)
	if unknown != "" {
		sel = append(sel, unknown+" AS "+p+"unknown")
		if s.UnknownFields == UnknownFail {
			checks = append(checks, check{"len(" + p + "unknown) > 0", "'unknown fields: ' || array_to_string(" + p + "unknown, ', ')"})
		}
	}
	known := s.knownFields()
	for _, field := range slices.Sorted(maps.Keys(b.Unreadable)) {
		if known[field] {
			cond := strings.ReplaceAll(b.Unreadable[field], "{ordinal}", ord)
			checks = append(checks, check{"(" + cond + ")", warehouse.Quote(field + " could not be read as text")})
		}
	}
	payload, meta := record, "NULL"
	if !s.JSON {
		payload = "to_json(" + record + ")"
	} else if others := slices.DeleteFunc(slices.Clone(b.Fields), func(f string) bool { return f == "payload" }); len(others) > 0 {
		parts := make([]string, len(others))
		for i, f := range others {
			parts[i] = warehouse.Ident(f) + " := s." + warehouse.Ident(f)
		}
		meta = "to_json(struct_pack(" + strings.Join(parts, ", ") + "))"
	}
	reason := reasonExpr(checks)
	filter := ""
	if s.Filter != "" {
		filter = embedded(s.Filter)
		if s.Guarded["filter"] {
			// A record the filter fails on is not skipped: it is a dead letter.
			filter = "coalesce(" + try(filter, p+"tfilter", "filter") + ", " + p + "tfilter IS NULL)"
		}
	}
	if len(undecodable) > 0 {
		// Bytes that are not text are the record's reason, not the value missing they leave.
		reason = "coalesce(" + reasonExpr(undecodable) + ", " + reason + ")"
	}
	if len(failed) > 0 {
		// So is an expression that fails on the record: the value it could not give is no news.
		reason = "coalesce(" + reasonExpr(failed) + ", " + reason + ")"
	}
	if len(ambiguous) > 0 {
		// So is a key named twice: whatever else is wrong with the value read, it may not be the one meant.
		reason = "coalesce(" + reasonExpr(ambiguous) + ", " + reason + ")"
	}
	if len(b.Header) > 0 && len(b.Header) <= len(b.Fields) && !s.JSON {
		// contains() first: it allocates nothing, and rules out nearly every record alone.
		same := []string{"contains(s." + warehouse.Ident(b.Fields[0]) + ", " + warehouse.Quote(b.Header[0]) + ")"}
		for i, h := range b.Header {
			same = append(same, "trim(s."+warehouse.Ident(b.Fields[i])+") = "+warehouse.Quote(h))
		}
		reason = "CASE WHEN " + strings.Join(same, " AND ") + " THEN 'the header line again (files joined end to end?)' ELSE " + reason + " END"
	}
	var skip []string
	if s.JSON {
		// A record that is not a JSON object gets that one reason, not a reason per column.
		reason = "CASE WHEN _doc IS NULL THEN 'not valid JSON' " +
			"WHEN " + p + "type <> 'OBJECT' THEN 'not a JSON object' ELSE " + reason + " END"
		// Blank records are skipped. Only a record starting with a blank is trimmed: trimming
		// every whole document cost more than parsing it.
		skip = append(skip, "payload IS NULL OR (ascii(payload) <= 32 AND trim(payload) = '')")
	}
	switch {
	case filter != "" && s.JSON:
		// A document that is not valid JSON cannot be told apart by a filter: it stays, to be dead-lettered.
		skip = append(skip, "(_doc IS NOT NULL AND NOT coalesce("+filter+", false))")
	case filter != "":
		skip = append(skip, "NOT coalesce("+filter+", false)")
	}
	if b.Skip != "" {
		skip = append(skip, "("+b.Skip+")")
	}
	skipExpr := "false"
	if len(skip) > 0 {
		skipExpr = "coalesce(" + strings.Join(skip, " OR ") + ", false)"
	}
	doc := ""
	if s.JSON {
		// Fields are read only from valid documents: DuckDB's JSON functions abort on malformed input.
		// Each document is parsed three times, not once per field: to validate it, for its
		// type, and once for all the paths the mapping reads (a list-valued extract).
		doc = ", " + jsonDoc + ", json_type(_doc) AS " + p + "type"
		if paths := s.jsonPaths(); len(paths) > 0 {
			lits := make([]string, len(paths))
			for i, path := range paths {
				lits[i] = warehouse.Quote(path)
			}
			doc += ", json_extract_string(_doc, [" + strings.Join(lits, ", ") + "]) AS " + p + "fields"
		}
		for i, object := range objects {
			doc += fmt.Sprintf(", json_keys(_doc, %s) AS %skeys%d", warehouse.Quote(object), p, i)
		}
	}
	inner := fmt.Sprintf("SELECT s.*%s FROM %s s", doc, renamed)
	if len(objects) > 0 {
		// Whether an object names a key twice: a key found at a position other than its own.
		// The lambda runs over all documents' keys at once; list_unique, a hash table per
		// document, cost three times as much. But the lambda's work grows with the square of
		// the keys: an object of more (a hostile one of 100,000 keys took seconds) is hashed.
		// The keys are a column of the query below, as the lambda would evaluate an expression
		// it captures once per key.
		var keys, repeats []string
		for i := range objects {
			k := fmt.Sprintf("%skeys%d", p, i)
			keys = append(keys, k)
			repeats = append(repeats, fmt.Sprintf("CASE WHEN len(%[1]s) <= 64 THEN len(list_filter(%[1]s, (x, i) -> list_position(%[1]s, x) <> i)) > 0 "+
				"ELSE list_unique(%[1]s) < len(%[1]s) END AS %[2]srepeats%[3]d", k, p, i))
		}
		inner = fmt.Sprintf("SELECT s.* EXCLUDE (%s), %s FROM (%s) s", strings.Join(keys, ", "), strings.Join(repeats, ", "), inner)
	}
	if _, hasKey := s.Fields[s.Table.Key]; !hasKey { // see ReadsOrdinals
		inner = fmt.Sprintf("SELECT s.*, row_number() OVER (PARTITION BY %s ORDER BY %s) AS %sdup_seq FROM (%s) s", record, ord, p, inner)
	}
	lineage := func(expr string) string { return "(" + strings.ReplaceAll(expr, "{ordinal}", ord) + ")" }
	out := make([]string, 0, len(s.Table.Columns)+len(Mapped))
	for _, c := range s.Table.Columns {
		out = append(out, p+"v_"+c.Name+" AS "+c.Name)
	}
	if !b.NumberedLater {
		out = append(out, p+"stream || "+warehouse.Quote(b.PositionSep)+" || "+p+"seq AS _position", p+"stream AS _stream", p+"seq AS _seq",
			ord+" AS _ordinal")
		sel = append(sel, "CAST("+lineage(b.Stream)+" AS VARCHAR) AS "+p+"stream", "CAST("+lineage(b.Seq)+" AS BIGINT) AS "+p+"seq")
	}
	// The raw record is assembled in the outer query, where the subquery's columns include the
	// source's fields, and only for rows with a reason: as a column of its own DuckDB would
	// build it for every row (it cost a third of mapping a large file).
	out = append(out, p+"reason AS _reason", "CASE WHEN "+p+"reason IS NOT NULL THEN "+payload+" END AS _payload",
		"CASE WHEN "+p+"reason IS NOT NULL THEN "+meta+" END AS _meta",
		p+"skip AS _skip", extra+" AS _extra")
	sel = append(sel, reason+" AS "+p+"reason", skipExpr+" AS "+p+"skip")
	return fmt.Sprintf("SELECT %s\nFROM (SELECT s.*, %s FROM (%s) s) s", strings.Join(out, ", "), strings.Join(sel, ", "), inner)
}

// unknownFields returns an SQL list of the record's fields the mapping does not read ("" when the
// policy ignores them) and the _extra column's expression: those fields as a JSON object under
// the keep policy, NULL otherwise. A JSON document's unknown fields differ per record; a
// file's are its columns, the same for every row.
func (s Spec) unknownFields(fields []string, p string) (list, extra string) {
	if s.UnknownFields == "" || s.UnknownFields == UnknownIgnore {
		return "", "NULL::JSON"
	}
	known := s.knownFields()
	if s.JSON {
		lits := make([]string, 0, len(known))
		for _, k := range slices.Sorted(maps.Keys(known)) {
			lits = append(lits, warehouse.Quote(k))
		}
		known := "[" + strings.Join(lits, ", ") + "]::VARCHAR[]"
		list = "CASE WHEN " + p + "type = 'OBJECT' THEN list_filter(json_keys(_doc), k -> NOT list_contains(" + known + ", k)) END"
		// Built as text from the keys and values in document order, not as a MAP: a key the
		// document names twice is kept twice, as sent (a MAP refuses it, failing the whole batch).
		extra = `CASE WHEN len(` + p + `unknown) > 0 THEN ('{' || array_to_string(list_transform(list_filter(
			list_zip(json_keys(_doc), json_extract(_doc, '$.*')), e -> NOT list_contains(` + known + `, e[1])),
			e -> to_json(e[1]) || ':' || e[2]), ',') || '}')::JSON END`
	} else {
		var names, pack []string
		for _, f := range fields {
			if known[f] || s.fromLookup(f) {
				continue
			}
			names = append(names, warehouse.Quote(f))
			pack = append(pack, warehouse.Ident(f)+" := s."+warehouse.Ident(f))
		}
		if len(names) == 0 {
			return "[]::VARCHAR[]", "NULL::JSON"
		}
		list = "[" + strings.Join(names, ", ") + "]"
		extra = "to_json(struct_pack(" + strings.Join(pack, ", ") + "))"
	}
	if s.UnknownFields != UnknownKeep {
		extra = "NULL::JSON"
	}
	return list, extra
}

// exprField finds the source fields an SQL expression names: quoted identifiers, bare words
// and the first key of JSON paths ('$.key...').
var exprField = regexp.MustCompile(`\$\.?"?([A-Za-z_][A-Za-z0-9_ -]*)|"([^"]+)"|\b([A-Za-z_][A-Za-z0-9_]*)\b`)

// knownFields are the fields the mapping reads: for JSON, the first key of each path.
func (s Spec) knownFields() map[string]bool {
	known := map[string]bool{}
	add := func(ref string) {
		if !s.JSON {
			known[ref] = true
		} else if steps := jsonSteps(jsonPath(ref)); len(steps) > 0 && steps[0].object == "$" {
			known[steps[0].key] = true
		}
	}
	for _, f := range s.Fields {
		if f.From != "" {
			add(f.From)
		}
		for _, h := range f.Hash {
			add(h)
		}
		for _, m := range exprField.FindAllStringSubmatch(f.Expr, -1) {
			known[m[1]+m[2]+m[3]] = true
		}
	}
	for _, m := range exprField.FindAllStringSubmatch(s.Filter, -1) {
		known[m[1]+m[2]+m[3]] = true
	}
	return known
}

// fromLookup tells whether a field was joined from a lookup file (named lookup.column).
func (s Spec) fromLookup(field string) bool {
	for name := range s.Lookups {
		if strings.HasPrefix(field, name+".") {
			return true
		}
	}
	return false
}

// rawExpr is the value before conversion to the column type.
func (s Spec) rawExpr(f Field, p string) string {
	switch {
	case f.Const != nil:
		return warehouse.Quote(*f.Const)
	case f.Expr != "":
		return embedded(f.Expr)
	case len(f.Hash) > 0:
		parts := make([]string, len(f.Hash))
		for i, h := range f.Hash {
			parts[i] = "coalesce(CAST(" + s.ref(h, p) + " AS VARCHAR), '')"
		}
		return "md5(concat_ws(chr(31), " + strings.Join(parts, ", ") + "))"
	}
	return s.ref(f.From, p)
}

// ref reads one source field: a column, or a path into the JSON payload (an element of the
// fields list Compile extracts).
func (s Spec) ref(field, p string) string {
	if !s.JSON {
		return "s." + warehouse.Ident(field)
	}
	i, _ := slices.BinarySearch(s.jsonPaths(), jsonPath(field))
	return fmt.Sprintf("s.%sfields[%d]", p, i+1)
}

// jsonPaths lists, sorted, the JSON paths of every field the mapping reads.
func (s Spec) jsonPaths() []string {
	var paths []string
	for _, f := range s.Fields {
		for _, ref := range append([]string{f.From}, f.Hash...) {
			if ref != "" {
				paths = append(paths, jsonPath(ref))
			}
		}
	}
	slices.Sort(paths)
	return slices.Compact(paths)
}

// jsonObjects lists the JSON objects a JSON mapping reads keys from, as JSON paths ("$" is
// the document itself).
func (s Spec) jsonObjects() []string {
	if !s.JSON {
		return nil
	}
	var objects []string
	for _, path := range s.jsonPaths() {
		for _, step := range jsonSteps(path) {
			if !slices.Contains(objects, step.object) {
				objects = append(objects, step.object)
			}
		}
	}
	return objects
}

// ambiguousKeys checks that no key on the way to a field the mapping reads is named twice in
// its object: DuckDB reads the first such value, most JSON libraries the last, so the producer
// may have meant either. objects are jsonObjects; Compile selects whether each one names any
// key twice, and only such documents are looked at further.
func (s Spec) ambiguousKeys(objects []string, p string) []check {
	if !s.JSON {
		return nil
	}
	var out []check
	for _, c := range s.Table.Columns {
		f, mapped := s.Fields[c.Name]
		if !mapped {
			continue
		}
		for _, ref := range append([]string{f.From}, f.Hash...) {
			if ref == "" {
				continue
			}
			for _, step := range jsonSteps(jsonPath(ref)) {
				i := slices.Index(objects, step.object)
				holder := "the JSON document"
				if step.object != "$" {
					holder = "its JSON object"
				}
				out = append(out, check{
					fmt.Sprintf("CASE WHEN %srepeats%d THEN len(list_filter(json_keys(_doc, %s), k -> k = %s)) > 1 ELSE false END",
						p, i, warehouse.Quote(step.object), warehouse.Quote(step.key)),
					warehouse.Quote(fmt.Sprintf("%s: field %s is ambiguous: %s names %q more than once", c.Name, ref, holder, step.key))})
			}
		}
	}
	return out
}

// jsonStep is one key a JSON path reads, and the object (a JSON path) it is read from.
type jsonStep struct{ object, key string }

// jsonSteps lists the keys a JSON path reads, outermost first: $."customer"."id" reads customer
// from $ and id from $."customer". It stops at a step that is no key or array index (a wildcard).
func jsonSteps(path string) []jsonStep {
	var steps []jsonStep
	for i := 1; i < len(path); {
		switch {
		case path[i] == '[':
			end := strings.IndexByte(path[i:], ']')
			if end < 2 || strings.Trim(path[i+1:i+end], "0123456789") != "" {
				return steps
			}
			i += end + 1
		case strings.HasPrefix(path[i:], `."`):
			var key strings.Builder
			j := i + 2
			for ; j < len(path) && path[j] != '"'; j++ {
				if path[j] == '\\' && j+1 < len(path) {
					j++
				}
				key.WriteByte(path[j])
			}
			if j == len(path) {
				return steps
			}
			steps = append(steps, jsonStep{path[:i], key.String()})
			i = j + 1
		case path[i] == '.':
			j := i + 1
			for j < len(path) && path[j] != '.' && path[j] != '[' {
				j++
			}
			if key := path[i+1 : j]; key != "" && key != "*" {
				steps = append(steps, jsonStep{path[:i], key})
			} else {
				return steps
			}
			i = j
		default:
			return steps
		}
	}
	return steps
}

// jsonPath turns a dotted field (a.b.c) into a JSONPath; a JSONPath ($.a[0].b) stays as it is.
func jsonPath(field string) string {
	if strings.HasPrefix(field, "$") {
		return field
	}
	parts := strings.Split(field, ".")
	for i, p := range parts {
		parts[i] = `"` + strings.ReplaceAll(p, `"`, `\"`) + `"`
	}
	return "$." + strings.Join(parts, ".")
}

// MaxMagnitude bounds the numbers ckm takes: amounts are summed as exact decimals with 6 places
// and 38 digits, which any sum of values below ±1e15 fits; beyond it a value is a unit or
// parsing mistake, not an amount.
const MaxMagnitude = 1e15

// nonFinite is an SQL condition over val, a value of the column, that holds when it is not a
// finite number within ±MaxMagnitude, date or timestamp ("" for other types).
func (c Column) nonFinite(val string) string {
	switch c.Type {
	case Double:
		return fmt.Sprintf("NOT isfinite(%[1]s) OR abs(%[1]s) > %[2]g", val, MaxMagnitude)
	case Date, Timestamp:
		return "NOT isfinite(" + val + ")"
	}
	return ""
}

// outOfRange is an SQL condition over val that holds when it is outside the column's range.
func (c Column) outOfRange(val string) string {
	return fmt.Sprintf("%s NOT BETWEEN %g AND %g", val, c.Min, c.Max)
}

// Unusable is an SQL condition over the stored column that holds for a value no score can use,
// which ingest refuses (not finite, too large, outside the column's range); "" when the
// column's type has no such values.
func (c Column) Unusable() string {
	var conds []string
	if cond := c.nonFinite(c.Name); cond != "" {
		conds = append(conds, cond)
	}
	if c.Max > c.Min {
		conds = append(conds, c.outOfRange(c.Name))
	}
	return strings.Join(conds, " OR ")
}

// number reads a raw value as a double.
func (s Spec) number(raw string) string {
	if s.DecimalComma {
		return "TRY_CAST(replace(CAST(" + raw + " AS VARCHAR), ',', '.') AS DOUBLE)"
	}
	return "TRY_CAST(" + raw + " AS DOUBLE)"
}

// convert casts a raw value to the column type; a value that cannot be read becomes NULL, which checks() reports.
func (s Spec) convert(c Column, f Field, raw, p string) string {
	text := "CAST(" + raw + " AS VARCHAR)"
	switch c.Type {
	case Double:
		return s.number(raw)
	case Integer:
		// A whole number only: 4.6 is not a rating (a cast would round it to 5).
		d := p + "d_" + c.Name
		return fmt.Sprintf("CASE WHEN isfinite(%[1]s) AND %[1]s = floor(%[1]s) AND abs(%[1]s) < 2147483648 THEN CAST(%[1]s AS INTEGER) END", d)
	case Boolean:
		return fmt.Sprintf("CASE lower(trim(%s)) WHEN 'true' THEN true WHEN 't' THEN true WHEN 'yes' THEN true WHEN 'y' THEN true WHEN '1' THEN true "+
			"WHEN 'false' THEN false WHEN 'f' THEN false WHEN 'no' THEN false WHEN 'n' THEN false WHEN '0' THEN false END", text)
	case Date:
		if _, unix := UnixFormats[f.Format]; unix {
			return fmt.Sprintf("CAST(timezone(%s, %s) AS DATE)", warehouse.Quote(s.zone(f)), unixTime(text, f.Format))
		}
		if f.Format != "" {
			return fmt.Sprintf("CAST(try_strptime(%s, %s) AS DATE)", text, warehouse.Quote(f.Format))
		}
		return fmt.Sprintf("coalesce(TRY_CAST(%s AS DATE), CAST(TRY_CAST(%s AS TIMESTAMP) AS DATE))", text, text)
	case Timestamp:
		zone := s.zone(f)
		if _, unix := UnixFormats[f.Format]; unix {
			return unixTime(text, f.Format)
		}
		if f.Format != "" {
			if strings.Contains(f.Format, "%z") || strings.Contains(f.Format, "%Z") {
				return fmt.Sprintf("CAST(try_strptime(%s, %s) AS TIMESTAMPTZ)", text, warehouse.Quote(f.Format))
			}
			return fmt.Sprintf("timezone(%s, try_strptime(%s, %s))", warehouse.Quote(zone), text, warehouse.Quote(f.Format))
		}
		if f.Timezone == "" || f.Timezone == s.Timezone {
			// An explicit offset or Z wins; a bare local time is read in the session time zone,
			// which the caller sets to s.Timezone (SessionZone): one cast, no per-row parsing of the suffix.
			return "TRY_CAST(" + text + " AS TIMESTAMPTZ)"
		}
		return fmt.Sprintf("CASE WHEN regexp_matches(%s, '(Z|z|[+-]\\d\\d(:?\\d\\d)?)$') THEN TRY_CAST(%s AS TIMESTAMPTZ) "+
			"ELSE timezone(%s, TRY_CAST(%s AS TIMESTAMP)) END", text, text, warehouse.Quote(zone), text)
	}
	return "nullif(trim(" + text + "), '')"
}

// zone is the time zone a field's local times are read in.
func (s Spec) zone(f Field) string { return cmp.Or(f.Timezone, s.Timezone, "UTC") }

// UnixFormats are the formats that read a date or timestamp as a count of seconds (or
// milliseconds, …) since 1970-01-01 00:00 UTC, as event streams often write times: the
// microseconds in one of each.
var UnixFormats = map[string]float64{"unix": 1e6, "unix_ms": 1e3, "unix_us": 1, "unix_ns": 1e-3}

// unixTime reads text, a number in a UnixFormats format, as a TIMESTAMPTZ: a whole number
// exactly (nanoseconds past 2^53 would not be as a DOUBLE), a fraction to the microsecond. A
// time past the year 9999 is no time: most likely milliseconds read as seconds.
func unixTime(text, format string) string {
	const limit = 253402300800e6 // 10000-01-01, in microseconds
	whole, number := "TRY_CAST(trim("+text+") AS HUGEINT)", "TRY_CAST(trim("+text+") AS DOUBLE)"
	perUnit := UnixFormats[format]
	exact := fmt.Sprintf("%s * %d", whole, int64(perUnit))
	if perUnit < 1 {
		exact = fmt.Sprintf("%s // %d", whole, int64(1/perUnit))
	}
	// A cast to HUGEINT rounds 1.5 to 2: only digits are read as a whole number.
	micros := fmt.Sprintf("coalesce(CASE WHEN regexp_full_match(trim(%s), '[+-]?[0-9]+') AND abs(%s) < %.0f THEN %s END, TRY_CAST(round(%s * %g) AS HUGEINT))",
		text, whole, limit/perUnit, exact, number, perUnit)
	return fmt.Sprintf("CASE WHEN abs(%[1]s) < %.0[2]f THEN make_timestamptz(CAST(%[1]s AS BIGINT)) END", micros, limit)
}

// check is one way a value can be wrong: an SQL condition and the message naming the problem.
type check struct{ cond, msg string }

// FailsHere ends the reason of a record a guarded expression fails on, after its key.
const FailsHere = " fails on this record (DuckDB raised an error; the log gives it)"

// guarded evaluates expr so that an error on one record is NULL for that record alone, where
// DuckDB would fail the query: TRY, around a struct so that a NULL tells the error from a NULL
// value. DuckDB's common subexpression elimination would move a part expr shares with another
// expression (two fields' CAST(amt AS DOUBLE)) out of the TRY, failing the query again; it
// leaves the inside of a CASE alone, hence a CASE whose branches are alike. ord is any column.
func guarded(expr, ord string) string {
	v := "struct_pack(v := " + expr + ")"
	return "TRY(CASE WHEN " + ord + " IS NULL THEN " + v + " ELSE " + v + " END)"
}

// checks lists what can be wrong with a column's value.
func (s Spec) checks(c Column, f Field, mapped bool, raw, val string) []check {
	var out []check
	text := "CAST(" + raw + " AS VARCHAR)"
	shown := func(v string) string { return "left(" + v + ", 80)" } // a value quoted in a reason, bounded
	if c.Required {
		what := "missing " + c.Name
		if f.From != "" {
			what += " (field " + f.From + ")"
		}
		out = append(out, check{fmt.Sprintf("%s IS NULL AND (%s IS NULL OR trim(%s) = '')", val, raw, text), warehouse.Quote(what)})
	}
	if mapped && c.Type != Text {
		how := c.Type.word()
		if f.Format != "" {
			how += " in format " + f.Format
		}
		out = append(out, check{fmt.Sprintf("%s IS NULL AND trim(%s) <> ''", val, text),
			fmt.Sprintf("%s || %s || %s", warehouse.Quote(c.Name+": cannot read '"), shown(text), warehouse.Quote("' as "+how))})
	}
	switch c.Type {
	case Double:
		// NaN, ±Inf and absurd magnitudes would load, then fail every later run's exact sums.
		out = append(out, check{c.nonFinite(val),
			fmt.Sprintf("%s || %s || %s", warehouse.Quote(c.Name+": '"), shown(text), warehouse.Quote(fmt.Sprintf("' is not a finite number within ±%g", MaxMagnitude)))})
	case Date, Timestamp:
		out = append(out, check{c.nonFinite(val),
			fmt.Sprintf("%s || %s || %s", warehouse.Quote(c.Name+": '"), shown(text), warehouse.Quote("' is not a finite "+c.Type.word()[2:]))})
	case Text:
		out = append(out, check{"strpos(" + val + ", chr(0)) > 0", warehouse.Quote(c.Name + ": contains a NUL byte")})
	}
	if len(c.Allowed) > 0 {
		list := make([]string, len(c.Allowed))
		for i, a := range c.Allowed {
			list[i] = warehouse.Quote(a)
		}
		// Not NOT IN: DuckDB plans an IN list of more than a few values as a join, one per
		// column, which cost a quarter of mapping a feedback batch. Both are NULL for NULL.
		out = append(out, check{fmt.Sprintf("NOT list_contains([%s], %s)", strings.Join(list, ", "), val),
			fmt.Sprintf("%s || %s || %s", warehouse.Quote(c.Name+": '"), shown(val), warehouse.Quote("' is not one of "+strings.Join(c.Allowed, ", ")))})
	}
	if c.Max > c.Min {
		out = append(out, check{c.outOfRange(val),
			fmt.Sprintf("%s || %s || %s", warehouse.Quote(c.Name+": "), val, warehouse.Quote(fmt.Sprintf(" is outside %g..%g", c.Min, c.Max)))})
	}
	ends, _ := s.bounds(c.Name, f) // Validate reported a bound that cannot be read
	words := [2]string{"before", "after"}
	if c.Type == Double || c.Type == Integer {
		words = [2]string{"below", "above"}
	}
	for i, e := range ends {
		if e.sql != "" {
			out = append(out, check{val + [...]string{" < ", " > "}[i] + e.sql,
				fmt.Sprintf("%s || %s || %s", warehouse.Quote(c.Name+": '"), shown(text), warehouse.Quote("' is "+words[i]+" "+e.shown+", "+e.by))})
		}
	}
	return out
}

// bound is one end of the values a column accepts: an SQL literal of the column's type, the
// bound as written, and what set it.
type bound struct{ sql, shown, by string }

// bounds are the least and greatest values column name accepts (a zero bound: none): the
// mapping's min and max, and the column's Earliest where the mapping sets no min.
func (s Spec) bounds(name string, f Field) ([2]bound, error) {
	var out [2]bound
	c, ok := s.Table.Column(name)
	if !ok {
		return out, nil
	}
	if (f.Min != "" || f.Max != "") && c.Type != Double && c.Type != Integer && c.Type != Date && c.Type != Timestamp {
		return out, fmt.Errorf("min and max bound numbers, dates and timestamps; %s is %s", name, c.Type.word())
	}
	ends := [2]bound{{shown: f.Min, by: "the mapping's min"}, {shown: f.Max, by: "the mapping's max"}}
	if f.Min == "" && c.Earliest != "" {
		ends[0] = bound{shown: c.Earliest, by: "the earliest " + name + " taken unless the mapping sets min (a placeholder date?)"}
	}
	var at [2]float64
	for i := range ends {
		e := &ends[i]
		if e.shown = strings.TrimSpace(e.shown); e.shown == "" {
			continue
		}
		var err error
		if e.sql, at[i], err = s.literal(c, f, e.shown); err != nil {
			return out, fmt.Errorf("%s: %w", [...]string{"min", "max"}[i], err)
		}
	}
	if ends[0].sql != "" && ends[1].sql != "" && at[0] > at[1] {
		if f.Min == "" {
			return out, fmt.Errorf("max %s is before %s, the earliest %s taken unless min is set", ends[1].shown, ends[0].shown, name)
		}
		return out, fmt.Errorf("min %s is after max %s", ends[0].shown, ends[1].shown)
	}
	return ends, nil
}

// literal reads a bound of column c as the SQL literal it compares with, and where it falls
// (a number, or seconds since 1970) to check that min is not after max. A timestamp without an
// offset is read in the field's time zone, as the values are.
func (s Spec) literal(c Column, f Field, text string) (string, float64, error) {
	switch c.Type {
	case Date:
		d, err := time.Parse(time.DateOnly, text)
		if err != nil {
			return "", 0, fmt.Errorf("cannot read %q as a date (YYYY-MM-DD)", text)
		}
		return "DATE '" + d.Format(time.DateOnly) + "'", float64(d.Unix()), nil
	case Timestamp:
		zone, err := time.LoadLocation(cmp.Or(f.Timezone, s.Timezone, "UTC"))
		if err != nil {
			zone = time.UTC // Validate reports the zone
		}
		for _, layout := range []string{time.RFC3339Nano, "2006-01-02 15:04:05Z07:00", "2006-01-02T15:04:05", "2006-01-02 15:04:05", time.DateOnly} {
			if ts, err := time.ParseInLocation(layout, text, zone); err == nil {
				return "TIMESTAMPTZ '" + ts.UTC().Format("2006-01-02 15:04:05.999999") + "+00'", float64(ts.Unix()), nil
			}
		}
		return "", 0, fmt.Errorf("cannot read %q as a timestamp (YYYY-MM-DD, YYYY-MM-DD HH:MM:SS or RFC 3339)", text)
	default:
		v, err := strconv.ParseFloat(text, 64)
		if err != nil || math.IsInf(v, 0) || math.IsNaN(v) {
			return "", 0, fmt.Errorf("cannot read %q as a finite number", text)
		}
		return strconv.FormatFloat(v, 'g', -1, 64), v, nil
	}
}

// reasonExpr names every failed check of a row, or yields NULL. The message strings are only
// built for rows where some condition holds: most rows pay for the conditions alone.
func reasonExpr(checks []check) string {
	if len(checks) == 0 {
		return "NULL"
	}
	conds := make([]string, len(checks))
	msgs := make([]string, len(checks))
	for i, c := range checks {
		conds[i] = "(" + c.cond + ")"
		msgs[i] = "CASE WHEN " + c.cond + " THEN " + c.msg + " END"
	}
	return "CASE WHEN " + strings.Join(conds, " OR ") + " THEN concat_ws('; ', " + strings.Join(msgs, ", ") + ") END"
}
