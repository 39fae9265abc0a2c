package connectors

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
)

// Spec describes a connector kind for people and tools: what it reads, and each key of its
// config block. The keys are read from the config struct's tags, so the struct that decodes a
// block is also the one place its documentation lives:
//
//	Paths []string `yaml:"paths" required:"true" doc:"files or globs, relative to the config file" example:"[data/orders*.csv.gz]"`
//
// Tags: yaml (the key), doc (one line, required), default, example, required:"true",
// secret:"true" (the value names where a secret is, never the secret), enum:"a,b,c", and
// type:"duration"|"size" for strings read as a duration or a byte size.
type Spec struct {
	Summary string // one line: what the connector reads
	// Streaming says the source can follow its input (ckm ingest --follow); others read what
	// is there and stop.
	Streaming bool
	// Rereads says the source hands a record over again once it changes (a cursor over rows
	// that are updated, a lookback window): its records replace stored ones, but lines of one
	// order cannot add up (rollup_lines), as a line read twice would count twice.
	Rereads bool
	// Reloads says the source can read its streams again from their start when Env.Reload asks,
	// each replacing what it loaded (files, which are still there; a topic's retention is not).
	Reloads bool
	Fields  []Field // filled in by Register from the config struct
}

// Field is one key of a connector's config block.
type Field struct {
	Name     string   `json:"name"`
	Type     string   `json:"type"` // string, integer, number, boolean, duration, size, list of string, object
	Doc      string   `json:"doc"`
	Default  string   `json:"default,omitempty"`
	Example  string   `json:"example,omitempty"`
	Required bool     `json:"required,omitempty"`
	Secret   bool     `json:"secret,omitempty"`
	Enum     []string `json:"enum,omitempty"`
	Fields   []Field  `json:"fields,omitempty"` // of an object
}

// fieldsOf reads the documented keys of a config struct, or says which key is not documented.
func fieldsOf(t reflect.Type) ([]Field, error) {
	if t.Kind() != reflect.Struct {
		return nil, fmt.Errorf("config is a %s, not a struct", t.Kind())
	}
	var out []Field
	for i := range t.NumField() {
		sf := t.Field(i)
		key, _, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
		if !sf.IsExported() || key == "-" {
			continue
		}
		if key == "" {
			return nil, fmt.Errorf("field %s has no yaml key", sf.Name)
		}
		f := Field{Name: key, Doc: sf.Tag.Get("doc"), Default: sf.Tag.Get("default"), Example: sf.Tag.Get("example"),
			Required: sf.Tag.Get("required") == "true", Secret: sf.Tag.Get("secret") == "true"}
		if f.Doc == "" {
			return nil, fmt.Errorf("key %s has no doc tag", key)
		}
		if e := sf.Tag.Get("enum"); e != "" {
			f.Enum = strings.Split(e, ",")
		}
		ft := sf.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		switch {
		case sf.Tag.Get("type") != "":
			f.Type = sf.Tag.Get("type")
		case ft.Kind() == reflect.String:
			f.Type = "string"
		case ft.Kind() == reflect.Bool:
			f.Type = "boolean"
		case ft.Kind() >= reflect.Int && ft.Kind() <= reflect.Uint64:
			f.Type = "integer"
		case ft.Kind() == reflect.Float64 || ft.Kind() == reflect.Float32:
			f.Type = "number"
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.String:
			f.Type = "list of string"
		case ft.Kind() == reflect.Struct:
			f.Type = "object"
			sub, err := fieldsOf(ft)
			if err != nil {
				return nil, fmt.Errorf("%s.%w", key, err)
			}
			f.Fields = sub
		default:
			return nil, fmt.Errorf("key %s: type %s has no config type", key, ft)
		}
		out = append(out, f)
	}
	return out, nil
}

// JSONSchema is the config block as a JSON Schema (draft 2020-12), for editors and linters.
func (s Spec) JSONSchema(kind string) map[string]any {
	schema := objectSchema(s.Fields)
	schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
	schema["$id"] = "https://ckm.dev/schemas/connectors/" + kind + ".json"
	schema["title"] = kind + " connector"
	schema["description"] = s.Summary
	return schema
}

func objectSchema(fields []Field) map[string]any {
	props := map[string]any{}
	var required []string
	for _, f := range fields {
		props[f.Name] = fieldSchema(f)
		if f.Required {
			required = append(required, f.Name)
		}
	}
	out := map[string]any{"type": "object", "properties": props, "additionalProperties": false}
	if len(required) > 0 {
		out["required"] = required
	}
	return out
}

// sizePattern and durationPattern are what ParseBytes and time.ParseDuration read.
const (
	sizePattern     = `^[0-9]+ *([KkMmGg][Ii]?[Bb]|[Bb])?$`
	durationPattern = `^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
)

func fieldSchema(f Field) map[string]any {
	var out map[string]any
	switch f.Type {
	case "object":
		out = objectSchema(f.Fields)
	case "list of string":
		out = map[string]any{"type": "array", "items": map[string]any{"type": "string"}}
	case "size":
		out = map[string]any{"type": []string{"string", "integer"}, "pattern": sizePattern}
	case "duration":
		out = map[string]any{"type": "string", "pattern": durationPattern}
	default:
		out = map[string]any{"type": f.Type}
	}
	out["description"] = f.Doc
	if len(f.Enum) > 0 {
		out["enum"] = f.Enum
	}
	if f.Default != "" {
		out["default"] = typedValue(f, f.Default)
	}
	if f.Example != "" {
		out["examples"] = []any{typedValue(f, f.Example)}
	}
	if f.Secret {
		out["writeOnly"] = true
	}
	return out
}

// typedValue is a tag's default or example as the JSON value of the field's type: YAML flow
// syntax ([a, b]) for lists, a number for integers.
func typedValue(f Field, v string) any {
	switch f.Type {
	case "integer", "number", "boolean":
		var out any
		if json.Unmarshal([]byte(v), &out) == nil {
			return out
		}
	case "list of string":
		items := strings.Split(strings.Trim(v, "[]"), ",")
		for i := range items {
			items[i] = strings.TrimSpace(items[i])
		}
		return items
	}
	return v
}

// specProblems lists what a decoded config breaks of its spec: required keys left out and
// values not among their enum's, with dotted keys.
func specProblems(fields []Field, v reflect.Value, prefix string) []FieldProblem {
	if v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	var out []FieldProblem
	t := v.Type()
	for i := range t.NumField() {
		key, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		at := slices.IndexFunc(fields, func(f Field) bool { return f.Name == key })
		if at < 0 {
			continue
		}
		f, fv := fields[at], v.Field(i)
		if f.Required && fv.IsZero() {
			hint := f.Doc
			if f.Example != "" {
				hint = fmt.Sprintf("%s: %s (%s)", f.Name, f.Example, f.Doc)
			}
			out = append(out, FieldProblem{Key: prefix + key, Msg: "is required", Hint: hint})
		}
		if len(f.Enum) > 0 && fv.Kind() == reflect.String && fv.String() != "" && !slices.Contains(f.Enum, fv.String()) {
			out = append(out, FieldProblem{Key: prefix + key, Msg: fmt.Sprintf("%q is not a known value", fv.String()), Hint: "one of " + strings.Join(f.Enum, ", ")})
		}
		if f.Type == "object" {
			out = append(out, specProblems(f.Fields, fv, prefix+key+".")...)
		}
	}
	return out
}
