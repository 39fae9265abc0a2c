//go:build !duckdb_arrow

package warehouse

// ckm uses DuckDB's Arrow interface, which duckdb-go only compiles with the build tag
// duckdb_arrow. Build with `make build`, or pass `-tags duckdb_arrow` to go build/test.
var _ = ckm_must_be_built_with_tag_duckdb_arrow__use_make_build_or_go_build_tags_duckdb_arrow
