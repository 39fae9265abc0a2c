// Package all registers every built-in connector kind; import it for its side effect.
package all

import (
	_ "github.com/ckm-dev/ckm/connectors/file"     // file: CSV, JSON Lines, Parquet
	_ "github.com/ckm-dev/ckm/connectors/kafka"    // kafka: JSON messages from topics
	_ "github.com/ckm-dev/ckm/connectors/postgres" // postgres: tables and queries, by a cursor column
)
