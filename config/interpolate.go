package config

import (
	"fmt"
	"os"
	"regexp"
	"strings"
)

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}`)

// interpolate replaces ${VAR} and ${VAR:-default} line by line, so line numbers stay
// true for every later error. `$${` escapes a literal "${".
func interpolate(file string, text []byte, lookup func(string) (string, bool)) ([]byte, []Problem) {
	var problems []Problem
	lines := strings.Split(string(text), "\n")
	for i, line := range lines {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		const escaped = "\x00ESCAPED\x00"
		line = strings.ReplaceAll(line, "$${", escaped)
		line = envRef.ReplaceAllStringFunc(line, func(ref string) string {
			m := envRef.FindStringSubmatch(ref)
			if v, ok := lookup(m[1]); ok && (v != "" || m[2] == "") {
				return v
			}
			if m[2] != "" {
				return m[3]
			}
			problems = append(problems, Problem{File: file, Line: i + 1, Path: "",
				Msg:  fmt.Sprintf("environment variable %s is not set", m[1]),
				Hint: fmt.Sprintf("export %s, or write ${%s:-default}", m[1], m[1])})
			return ""
		})
		lines[i] = strings.ReplaceAll(line, escaped, "${")
	}
	return []byte(strings.Join(lines, "\n")), problems
}

func osLookup(name string) (string, bool) { return os.LookupEnv(name) }
