package config

import (
	"fmt"
	"reflect"
	"sort"
	"strings"

	"github.com/goccy/go-yaml/ast"
)

// Shorthand is implemented by config types that may also be written as a single scalar
// (a mapping field written as just the source field's name, for example).
type Shorthand interface{ AcceptsScalar() }

// schemaWalker checks a YAML tree against Go config types before decoding, so that every
// unknown key and mistyped value is reported at once, each with its line, and it records
// the line of every path for later semantic checks.
type schemaWalker struct {
	file     string
	lines    map[string]int
	problems []Problem
	// extra resolves keys a struct does not declare itself (a source's connector block).
	extra func(path, key string) (reflect.Type, bool, []string)
}

func (w *schemaWalker) add(n ast.Node, path, msg, hint string) {
	w.problems = append(w.problems, Problem{File: w.file, Line: line(n), Path: path, Msg: msg, Hint: hint})
}

func line(n ast.Node) int {
	if n == nil || n.GetToken() == nil {
		return 0
	}
	return n.GetToken().Position.Line
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func (w *schemaWalker) walk(n ast.Node, t reflect.Type, path string) {
	if n == nil {
		return
	}
	if a, ok := n.(*ast.AnchorNode); ok {
		n = a.Value
	}
	if _, ok := n.(*ast.AliasNode); ok {
		return // resolved by the decoder
	}
	if w.lines[path] == 0 {
		w.lines[path] = line(n)
	}
	if _, isNull := n.(*ast.NullNode); isNull {
		return
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() == reflect.Interface {
		return
	}
	if reflect.PointerTo(t).Implements(reflect.TypeOf((*Shorthand)(nil)).Elem()) && isScalar(n) {
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		m, ok := asMapping(n)
		if !ok {
			w.add(n, path, "expected a mapping of keys, found "+describe(n), "")
			return
		}
		fields := structFields(t)
		for _, kv := range m.Values {
			key := kv.Key.String()
			if ft, ok := fields[key]; ok {
				w.walk(kv.Value, ft, join(path, key))
				continue
			}
			if w.extra != nil {
				if et, ok, _ := w.extra(path, key); ok {
					w.lines[join(path, key)] = line(kv.Key)
					if et != nil {
						w.walk(kv.Value, et, join(path, key))
					}
					continue
				}
			}
			known := make([]string, 0, len(fields))
			for k := range fields {
				known = append(known, k)
			}
			if w.extra != nil {
				_, _, more := w.extra(path, key)
				known = append(known, more...)
			}
			sort.Strings(known)
			hint := "known keys: " + strings.Join(known, ", ")
			if len(known) == 0 {
				hint = ""
			}
			names := make([]string, len(known))
			for i, k := range known {
				names[i], _, _ = strings.Cut(k, " ")
			}
			if c := closest(key, names); c != "" {
				hint = "did you mean " + c + "?"
			}
			w.add(kv.Key, join(path, key), "unknown key "+key, hint)
		}
	case reflect.Map:
		m, ok := asMapping(n)
		if !ok {
			w.add(n, path, "expected a mapping, found "+describe(n), "")
			return
		}
		for _, kv := range m.Values {
			key := kv.Key.String()
			w.lines[join(path, key)] = line(kv.Key)
			w.walk(kv.Value, t.Elem(), join(path, key))
		}
	case reflect.Slice:
		s, ok := n.(*ast.SequenceNode)
		if !ok {
			w.add(n, path, "expected a list, found "+describe(n), "write it as [a, b] or one `- item` per line")
			return
		}
		for i, v := range s.Values {
			w.walk(v, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
	case reflect.Bool:
		if _, ok := n.(*ast.BoolNode); !ok {
			w.add(n, path, "expected true or false, found "+describe(n), "")
		}
	case reflect.Int, reflect.Int64, reflect.Int32:
		if _, ok := n.(*ast.IntegerNode); !ok {
			w.add(n, path, "expected a whole number, found "+describe(n), "")
		}
	case reflect.Float64, reflect.Float32:
		switch n.(type) {
		case *ast.IntegerNode, *ast.FloatNode:
		default:
			w.add(n, path, "expected a number, found "+describe(n), "")
		}
	case reflect.String:
		if !isScalar(n) {
			w.add(n, path, "expected a single value, found "+describe(n), "quote it if it contains ': ' or starts with [ or {")
		}
	}
}

func asMapping(n ast.Node) (*ast.MappingNode, bool) {
	switch m := n.(type) {
	case *ast.MappingNode:
		return m, true
	case *ast.MappingValueNode:
		return ast.Mapping(m.GetToken(), false, m), true
	}
	return nil, false
}

func isScalar(n ast.Node) bool {
	switch n.(type) {
	case *ast.MappingNode, *ast.MappingValueNode, *ast.SequenceNode:
		return false
	}
	return true
}

func describe(n ast.Node) string {
	switch n.(type) {
	case *ast.MappingNode, *ast.MappingValueNode:
		return "a mapping"
	case *ast.SequenceNode:
		return "a list"
	}
	return fmt.Sprintf("%q", n.String())
}

// structFields maps yaml keys to field types, following inline (embedded) structs.
func structFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if strings.Contains(opts, "inline") {
			for k, v := range structFields(f.Type) {
				out[k] = v
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out[name] = f.Type
	}
	return out
}
