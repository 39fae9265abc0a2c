package config

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
)

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}`)

// tokenPrefix starts the tokens standing for values in the shadow text (see interpolate).
const tokenPrefix = "ckmenvsubstitution"

// substitution is one ${VAR} interpolate replaced: the value, and the token that stands for it
// in the shadow text.
type substitution struct {
	name, value, token string
	line               int
}

// interpolate replaces ${VAR} and ${VAR:-default} line by line, so line numbers stay
// true for every later error. `$${` escapes a literal "${". shadow is the same text with each
// value replaced by a token of letters and digits, which cannot change how YAML reads the
// document around it (see checkSubstitutions).
func interpolate(file string, text []byte, lookup func(string) (string, bool)) (out, shadow []byte, subs []substitution, problems []Problem) {
	lines := strings.Split(string(text), "\n")
	shadowLines := slices.Clone(lines)
	for i, line := range lines {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		const escaped = "\x00ESCAPED\x00"
		line = strings.ReplaceAll(line, "$${", escaped)
		var tokens []string
		line = envRef.ReplaceAllStringFunc(line, func(ref string) string {
			m := envRef.FindStringSubmatch(ref)
			value, ok := lookup(m[1])
			if !ok || (value == "" && m[2] != "") { // unset, or empty where a default is given
				if m[2] == "" {
					problems = append(problems, Problem{File: file, Line: i + 1, Path: "",
						Msg:  fmt.Sprintf("environment variable %s is not set", m[1]),
						Hint: fmt.Sprintf("export %s, or write ${%s:-default}", m[1], m[1])})
				}
				value = m[3]
			}
			s := substitution{name: m[1], value: value, token: fmt.Sprintf("%s%dx", tokenPrefix, len(subs)), line: i + 1}
			subs, tokens = append(subs, s), append(tokens, s.token)
			return value
		})
		lines[i] = strings.ReplaceAll(line, escaped, "${")
		shadowLine := strings.ReplaceAll(shadowLines[i], "$${", escaped)
		n := 0
		shadowLine = envRef.ReplaceAllStringFunc(shadowLine, func(string) string { n++; return tokens[n-1] })
		shadowLines[i] = strings.ReplaceAll(shadowLine, escaped, "${")
	}
	return []byte(strings.Join(lines, "\n")), []byte(strings.Join(shadowLines, "\n")), subs, problems
}

func osLookup(name string) (string, bool) { return os.LookupEnv(name) }

// checkSubstitutions says which values changed how YAML reads the document: a value holding a
// line break, " #", ": ", a quote or a backslash can end a scalar, start a comment or a key, or
// be unescaped inside quotes (a path with " #1" in it was cut at the #). Read with the tokens
// in place of the values, the document must have the same scalars, and each the text of the
// shadow's with the values put back. The values are not shown: they may be secrets. real is
// the interpolated text as parsed, or why it did not parse (parseErr).
func checkSubstitutions(file string, real *ast.File, parseErr error, shadow []byte, subs []substitution) []Problem {
	if len(subs) == 0 {
		return nil
	}
	shadowed, err := parser.ParseBytes(shadow, 0)
	if err != nil {
		return nil // the file does not parse whatever the values: that is reported as it is
	}
	if parseErr != nil {
		return substitutionProblems(file, subs, yamlInValue)
	}
	got, want := scalars(real), scalars(shadowed)
	for i := range max(len(got), len(want)) {
		if i < len(got) && i < len(want) && got[i] == putBack(want[i], subs) {
			continue
		}
		if i < len(want) && strings.Contains(want[i], tokenPrefix) {
			return substitutionProblems(file, subs, func(s substitution) bool { return strings.Contains(want[i], s.token) })
		}
		return substitutionProblems(file, subs, yamlInValue)
	}
	return nil
}

// yamlInValue tells whether a value holds a character that can mean something to YAML where it
// stands: the suspects when the document changed away from the scalars the values are in.
func yamlInValue(s substitution) bool {
	return strings.ContainsAny(s.value, "\n\r#:\"'\\{}[],&*!|>%@`")
}

// substitutionProblems names the substitutions which picks, or all of them when it picks none.
func substitutionProblems(file string, subs []substitution, which func(substitution) bool) []Problem {
	var out []Problem
	for _, s := range subs {
		if which(s) {
			out = append(out, Problem{File: file, Line: s.line, Msg: fmt.Sprintf("the value of environment variable %s changes how the config reads here", s.name),
				Hint: fmt.Sprintf("a line break, \" #\", \": \", a quote or a backslash in it is YAML; write '${%s}' in single quotes, or change the value", s.name)})
		}
	}
	if len(out) == 0 && len(subs) > 0 {
		return substitutionProblems(file, subs, func(substitution) bool { return true })
	}
	return out
}

// putBack is a shadow scalar with each token replaced by its value.
func putBack(s string, subs []substitution) string {
	for _, sub := range subs {
		s = strings.ReplaceAll(s, sub.token, sub.value)
	}
	return s
}

// scalars lists a document's scalars, keys and values, in order, as text: a string as read
// (quotes and escapes resolved), anything else as written.
func scalars(f *ast.File) []string {
	var out []string
	for _, doc := range f.Docs {
		if doc.Body != nil {
			ast.Walk(scalarVisitor{&out}, doc.Body)
		}
	}
	return out
}

type scalarVisitor struct{ out *[]string }

func (v scalarVisitor) Visit(n ast.Node) ast.Visitor {
	switch n := n.(type) {
	case *ast.StringNode:
		*v.out = append(*v.out, n.Value)
	case *ast.NullNode:
		*v.out = append(*v.out, "")
	case ast.ScalarNode:
		*v.out = append(*v.out, n.GetToken().Value)
	}
	return v
}
