// Command ckm is the customer-knowledge scoring pipeline. The commands live in package cli.
package main

import (
	"os"

	"github.com/ckm-dev/ckm/cli"
	_ "github.com/ckm-dev/ckm/connectors/all" // registers the built-in connectors
)

func main() { os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr)) }
