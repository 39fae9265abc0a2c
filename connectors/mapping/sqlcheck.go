package mapping

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/ckm-dev/ckm/connectors"
)

// SQLChecker asks DuckDB's own parser about the SQL a mapping embeds (each expr, the filter, each
// strptime format), so that `ckm validate` names the config line of a mistake a run would
// otherwise stop on, in generated SQL the operator never wrote. It parses and looks functions
// up; it binds nothing, so it needs neither the source's columns nor their types.
type SQLChecker struct {
	db connectors.Querier
	// perRecord tells, for every function DuckDB has, whether it can be called on one record
	// (a scalar function or macro) rather than only over many (an aggregate).
	perRecord map[string]bool
	// volatile are the functions whose result may differ between calls (random, nextval).
	volatile map[string]bool
}

// NewSQLChecker reads the function catalogue of db, a DuckDB (an empty in-memory one will do).
func NewSQLChecker(ctx context.Context, db connectors.Querier) (*SQLChecker, error) {
	rows, err := db.QueryContext(ctx, `SELECT function_name, bool_or(function_type NOT IN ('aggregate', 'table', 'table_macro')),
		coalesce(bool_or(stability = 'VOLATILE'), false) FROM duckdb_functions() GROUP BY function_name`)
	if err != nil {
		return nil, fmt.Errorf("read DuckDB's functions: %w", err)
	}
	defer rows.Close()
	c := &SQLChecker{db: db, perRecord: map[string]bool{}, volatile: map[string]bool{}}
	for rows.Next() {
		var name string
		var scalar, volatile bool
		if err := rows.Scan(&name, &scalar, &volatile); err != nil {
			return nil, fmt.Errorf("read DuckDB's functions: %w", err)
		}
		c.perRecord[name], c.volatile[name] = scalar, volatile
	}
	return c, rows.Err()
}

// Guardable lists, by config key (mapping.<column>.expr, filter), the expressions of s whose
// errors on one record can be caught for that record alone (Spec.Guarded): DuckDB's TRY takes
// neither a subquery (a filter may hold one) nor a volatile function (random, nextval), and an
// expression Check refuses is not listed.
func (c *SQLChecker) Guardable(ctx context.Context, s Spec) (map[string]bool, error) {
	out := map[string]bool{}
	for key, expr := range s.Expressions() {
		p, calls, err := c.expression(ctx, key, expr)
		if err != nil {
			return nil, err
		}
		if p == nil && !calls.subquery && !slices.ContainsFunc(calls.functions, func(f string) bool { return c.volatile[f] }) {
			out[key] = true
		}
	}
	return out, nil
}

// Check returns every problem with s's SQL, each keyed by its place in the source's config
// block: mapping.<column>.expr, mapping.<column>.format or filter.
func (c *SQLChecker) Check(ctx context.Context, s Spec) ([]connectors.FieldProblem, error) {
	var problems []connectors.FieldProblem
	exprs := s.Expressions()
	for _, key := range slices.Sorted(maps.Keys(exprs)) {
		p, _, err := c.expression(ctx, key[strings.LastIndexByte(key, '.')+1:], exprs[key])
		if err != nil {
			return nil, err
		}
		if p != nil {
			p.Key = key
			problems = append(problems, *p)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(s.Fields)) {
		format := s.Fields[name].Format
		if _, unix := UnixFormats[format]; format == "" || unix || !strings.Contains(format, "%") {
			continue // Spec.Validate judges these
		}
		var ignored sql.NullTime
		if err := c.db.QueryRowContext(ctx, `SELECT try_strptime('', CAST(? AS VARCHAR))`, format).Scan(&ignored); err != nil {
			_, reason, _ := strings.Cut(err.Error(), format+": ")
			problems = append(problems, connectors.FieldProblem{Key: "mapping." + name + ".format",
				Msg:  fmt.Sprintf("format %q is not one DuckDB reads: %s", format, cmp.Or(reason, err.Error())),
				Hint: "strptime codes such as %d/%m/%Y %H:%M:%S (DuckDB's documentation: Date Format)"})
		}
	}
	return problems, nil
}

// exprPrefix opens the statement an expression is parsed in; the closing parenthesis follows a
// line break, as in Compile, so that a trailing -- comment ends inside it.
const exprPrefix = "SELECT ("

// embedded is how Compile places an operator's expression in its SQL.
func embedded(expr string) string { return "(" + expr + "\n)" }

// Expressions lists s's SQL expressions (each expr, the filter) by their key in the source's
// config block: mapping.<column>.expr, filter.
func (s Spec) Expressions() map[string]string {
	exprs := map[string]string{}
	if s.Filter != "" {
		exprs["filter"] = s.Filter
	}
	for name, f := range s.Fields {
		if f.Expr != "" {
			exprs["mapping."+name+".expr"] = f.Expr
		}
	}
	return exprs
}

// Probe returns a query evaluating expr, one of Expressions, over b's records where Compile's
// query does, or only binding it there (records false): when that query fails, the probe that
// fails too names the expression to blame, in SQL its author wrote.
func (s Spec) Probe(b Batch, expr string, records bool) string {
	doc := ""
	if s.JSON {
		doc = ", " + jsonDoc
	}
	limit := ""
	if !records {
		limit = " LIMIT 0"
	}
	return fmt.Sprintf("SELECT count(%s) FROM (SELECT s.*%s FROM %s s) s%s", embedded(expr), doc, renameByPosition(b.Relation, b.Fields, FreshPrefix(b.Fields)+"ord"), limit)
}

// ColumnsRead lists, by config key (mapping.<column>.expr, filter), the columns each expr and the
// filter of s read by a bare name (outside subqueries and lambdas): for `ckm validate --connect`
// to check against a tabular source's columns. An expression Check refuses lists none.
func (c *SQLChecker) ColumnsRead(ctx context.Context, s Spec) (map[string][]string, error) {
	read := map[string][]string{}
	for key, expr := range s.Expressions() {
		p, calls, err := c.expression(ctx, key, expr)
		if err != nil {
			return nil, err
		}
		if p == nil {
			read[key] = calls.columns()
		}
	}
	return read, nil
}

// expression checks one expr or filter: one SQL expression over one record, calling functions
// DuckDB has. what names it in messages: "filter" for the filter, the one that may hold a subquery.
func (c *SQLChecker) expression(ctx context.Context, what, expr string) (*connectors.FieldProblem, *exprCalls, error) {
	var text string
	if err := c.db.QueryRowContext(ctx, `SELECT CAST(json_serialize_sql(CAST(? AS VARCHAR)) AS VARCHAR)`, "SELECT "+embedded(expr)).Scan(&text); err != nil {
		return nil, nil, fmt.Errorf("parse %s: %w", what, err)
	}
	var parsed struct {
		Error      bool   `json:"error"`
		ErrorType  string `json:"error_type"`
		Message    string `json:"error_message"`
		Position   string `json:"position"`
		Statements []struct {
			Node map[string]any `json:"node"`
		} `json:"statements"`
	}
	if err := json.Unmarshal([]byte(text), &parsed); err != nil {
		return nil, nil, fmt.Errorf("parse %s: %w", what, err)
	}
	notOne := &connectors.FieldProblem{Msg: what + " is not one SQL expression",
		Hint: "it is placed in ckm's SQL as the value of each record: a parenthesis closed early, a second value, a clause or a statement breaks out of that"}
	switch {
	case parsed.Error && parsed.ErrorType == "parser":
		return &connectors.FieldProblem{Msg: fmt.Sprintf("%s is not valid SQL: %s", what, syntaxError(expr, parsed.Message, parsed.Position))}, nil, nil
	case parsed.Error, len(parsed.Statements) != 1 || !oneValue(parsed.Statements[0].Node):
		return notOne, nil, nil
	}
	calls := &exprCalls{}
	calls.walk(parsed.Statements[0].Node["select_list"], false)
	if calls.parameter {
		return &connectors.FieldProblem{Msg: what + " holds a parameter (? or $1), which nothing gives a value to",
			Hint: "write the value itself, or ${VAR} for one from the environment"}, calls, nil
	}
	if calls.subquery && what != "filter" {
		// DuckDB refuses a subquery in a value that other values of the same SELECT read, as
		// the mapping's checks read each column's (a filter is read once: it may hold one).
		return &connectors.FieldProblem{Msg: what + " holds a subquery, which a mapping cannot evaluate: it reads one record at a time",
			Hint: "values from another file join onto each record with lookups; a fixed list is written inline: x IN ('a', 'b')"}, calls, nil
	}
	for _, name := range calls.functions {
		scalar, known := c.perRecord[name]
		switch {
		case !known:
			p := &connectors.FieldProblem{Msg: fmt.Sprintf("%s calls %s, a function DuckDB does not have", what, name)}
			var like string
			err := c.db.QueryRowContext(ctx, `SELECT function_name FROM duckdb_functions() WHERE levenshtein(function_name, $1) <= greatest(2, length($1) // 3)
				ORDER BY levenshtein(function_name, $1), function_name LIMIT 1`, name).Scan(&like)
			if err == nil {
				p.Hint = "did you mean " + like + "?"
			}
			return p, calls, nil
		case !scalar && !calls.inSubquery[name]:
			return &connectors.FieldProblem{Msg: fmt.Sprintf("%s calls %s, which aggregates many records; a mapping reads one record at a time", what, name),
				Hint: "order lines add up into their order with rollup_lines: true; other sums belong in the source's query"}, calls, nil
		}
	}
	if calls.window != "" {
		return &connectors.FieldProblem{Msg: fmt.Sprintf("%s calls %s over a window of records; a mapping reads one record at a time", what, calls.window)}, calls, nil
	}
	return nil, calls, nil
}

// syntaxError says where in expr DuckDB's parser stopped, given its message and its position
// in the statement expr was parsed in.
func syntaxError(expr, msg, position string) string {
	at, err := strconv.Atoi(position)
	at -= len(exprPrefix)
	if err != nil || at < 0 {
		return msg
	}
	if at >= len(strings.TrimRight(expr, " \t\r\n")) {
		return "it ends where more must follow"
	}
	near := expr[at:]
	if len(near) > 24 {
		near = near[:24] + "…"
	}
	return fmt.Sprintf("%s, at character %d: %s", msg, at+1, connectors.Printable(near))
}

// oneValue tells whether a parsed SELECT node is nothing but one value: no FROM, WHERE, GROUP BY,
// HAVING, QUALIFY, ORDER BY, LIMIT, CTE or set operation came with it.
func oneValue(node map[string]any) bool {
	list, _ := node["select_list"].([]any)
	from, _ := node["from_table"].(map[string]any)
	mods, _ := node["modifiers"].([]any)
	groups, _ := node["group_expressions"].([]any)
	ctes, _ := node["cte_map"].(map[string]any)
	cteList, _ := ctes["map"].([]any)
	return node["type"] == "SELECT_NODE" && len(list) == 1 && from["type"] == "EMPTY" && node["where_clause"] == nil &&
		node["having"] == nil && node["qualify"] == nil && len(mods) == 0 && len(groups) == 0 && len(cteList) == 0
}

// exprCalls collects the functions a parsed expression calls (operators aside), whether each
// is called only inside a subquery (where an aggregate is fine), a window function, whether it
// holds a subquery or a prepared statement's parameter, and the columns it reads by a bare name
// outside subqueries, lambdas' parameters aside.
type exprCalls struct {
	functions           []string
	inSubquery          map[string]bool
	window              string
	subquery, parameter bool
	refs, params        []string
}

func (e *exprCalls) columns() []string {
	var cols []string
	for _, r := range e.refs {
		if !slices.ContainsFunc(e.params, func(p string) bool { return strings.EqualFold(p, r) }) && !slices.Contains(cols, r) {
			cols = append(cols, r)
		}
	}
	return cols
}

func (e *exprCalls) walk(n any, inSubquery bool) {
	switch n := n.(type) {
	case []any:
		for _, v := range n {
			e.walk(v, inSubquery)
		}
	case map[string]any:
		switch n["class"] {
		case "FUNCTION":
			if op, _ := n["is_operator"].(bool); !op {
				e.call(strings.ToLower(fmt.Sprint(n["function_name"])), inSubquery)
			}
		case "WINDOW":
			if !inSubquery && e.window == "" {
				e.window = fmt.Sprint(n["function_name"])
			}
		case "COLUMN_REF":
			if names, _ := n["column_names"].([]any); len(names) == 1 && !inSubquery {
				e.refs = append(e.refs, fmt.Sprint(names[0]))
			}
		case "LAMBDA":
			var params exprCalls
			params.walk(n["lhs"], inSubquery)
			e.params = append(e.params, params.refs...)
		case "SUBQUERY":
			inSubquery, e.subquery = true, true
		case "PARAMETER":
			e.parameter = true
		}
		for _, k := range slices.Sorted(maps.Keys(n)) {
			e.walk(n[k], inSubquery)
		}
	}
}

func (e *exprCalls) call(name string, inSubquery bool) {
	if e.inSubquery == nil {
		e.inSubquery = map[string]bool{}
	}
	if seen, ok := e.inSubquery[name]; ok {
		e.inSubquery[name] = seen && inSubquery
		return
	}
	e.functions = append(e.functions, name)
	e.inSubquery[name] = inSubquery
}
