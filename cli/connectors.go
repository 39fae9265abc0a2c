package cli

import (
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/ckm-dev/ckm/connectors"
)

func (a *app) connectorsCmd() *cobra.Command {
	var asJSON, markdown bool
	cmd := &cobra.Command{
		Use:   "connectors [KIND] [--json | --markdown]",
		Short: "List the connector kinds; with a kind, its config keys; --json prints JSON Schema",
		Long: `List the connector kinds this binary has, or one kind's config keys with their types,
defaults and docs. --json prints the JSON Schema (draft 2020-12) of a kind's config block, or an
object of every kind's schema, for editors and linters; --markdown prints the README's connector
reference.`,
		Example: `  ckm connectors
  ckm connectors file
  ckm connectors kafka --json > kafka.schema.json`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			kinds := connectors.Kinds()
			if len(args) == 1 {
				if _, ok := connectors.Lookup(args[0]); !ok {
					return fmt.Errorf("no connector kind %q (this binary has %s)", args[0], strings.Join(kinds, ", "))
				}
				kinds = args[:1]
			}
			switch {
			case markdown:
				_, err := fmt.Fprint(a.stdout, connectors.Reference())
				return err
			case asJSON:
				schemas := map[string]any{}
				for _, name := range kinds {
					k, _ := connectors.Lookup(name)
					schemas[name] = k.Spec.JSONSchema(name)
				}
				var out any = schemas
				if len(args) == 1 {
					out = schemas[args[0]]
				}
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(out)
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			if len(args) == 0 {
				for _, name := range kinds {
					k, _ := connectors.Lookup(name)
					fmt.Fprintf(tw, "%s\t%s\n", name, k.Spec.Summary)
				}
				return tw.Flush()
			}
			k, _ := connectors.Lookup(args[0])
			fmt.Fprintf(a.stdout, "%s: %s\n\n", args[0], k.Spec.Summary)
			fmt.Fprintln(tw, "KEY\tTYPE\tDEFAULT\tDESCRIPTION")
			printFields(tw, k.Spec.Fields, "")
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON Schema")
	cmd.Flags().BoolVar(&markdown, "markdown", false, "print the Markdown reference")
	cmd.MarkFlagsMutuallyExclusive("json", "markdown")
	return cmd
}

func printFields(tw *tabwriter.Writer, fields []connectors.Field, prefix string) {
	for _, f := range fields {
		doc := f.Doc
		if f.Required {
			doc = "required: " + doc
		}
		fmt.Fprintf(tw, "%s%s\t%s\t%s\t%s\n", prefix, f.Name, f.Type, f.Default, doc)
		if f.Type == "object" {
			printFields(tw, f.Fields, prefix+f.Name+".")
		}
	}
}
