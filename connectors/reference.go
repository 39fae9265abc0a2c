package connectors

import (
	"fmt"
	"strings"
)

// Reference is the Markdown reference of every registered kind's config block, as the README
// carries it between its "connector reference" markers.
func Reference() string {
	var b strings.Builder
	for _, name := range Kinds() {
		k, _ := Lookup(name)
		fmt.Fprintf(&b, "#### `%s`\n\n%s.", name, k.Spec.Summary)
		if k.Spec.Streaming {
			b.WriteString(" Streaming: follows its input with `ckm ingest --follow`.")
		}
		if k.Spec.Rereads {
			b.WriteString(" Reads a changed record again, so `rollup_lines` is refused: roll lines up in the source.")
		}
		b.WriteString("\n\n| key | type | default | description |\n|---|---|---|---|\n")
		writeRows(&b, k.Spec.Fields, "")
		b.WriteString("\n")
	}
	return b.String()
}

func writeRows(b *strings.Builder, fields []Field, prefix string) {
	for _, f := range fields {
		doc := f.Doc
		if f.Required {
			doc = "**required.** " + doc
		}
		if len(f.Enum) > 0 {
			doc += "; one of " + strings.Join(f.Enum, ", ")
		}
		if f.Secret {
			doc += " (the secret itself is never in config or logs)"
		}
		if f.Example != "" {
			doc += fmt.Sprintf("; e.g. `%s`", f.Example)
		}
		def := ""
		if f.Default != "" {
			def = "`" + f.Default + "`"
		}
		fmt.Fprintf(b, "| `%s%s` | %s | %s | %s |\n", prefix, f.Name, f.Type, def, strings.ReplaceAll(doc, "|", `\|`))
		if f.Type == "object" {
			writeRows(b, f.Fields, prefix+f.Name+".")
		}
	}
}
