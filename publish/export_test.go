package publish

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/ckm-dev/ckm/warehouse"
)

// CopyToNewPostgresTable creates table in PostgreSQL with the PostgreSQL types of query's
// DuckDB columns and fills it with query's rows as the publish does; it returns the rows
// PostgreSQL says it copied.
func CopyToNewPostgresTable(ctx context.Context, duck *warehouse.Conn, pg *pgx.Conn, table, query string) (int64, error) {
	cols, err := duckColumns(ctx, duck, table, query)
	if err != nil {
		return 0, err
	}
	defs := make([]string, len(cols))
	for i, c := range cols {
		defs[i] = c.name + " " + c.pgType
	}
	if _, err := pg.Exec(ctx, fmt.Sprintf(`CREATE TABLE %s (%s)`, table, strings.Join(defs, ", "))); err != nil {
		return 0, err
	}
	rr, err := duck.ArrowQuery(ctx, query)
	if err != nil {
		return 0, err
	}
	defer rr.Release()
	return copyArrow(ctx, pg.PgConn(), pgx.Identifier{table}, cols, rr, table)
}

// ViewBody and ScopedScores are the query of a view, and customer_scores' query with each
// output it joins filtered to one as_of before the joins.
var ViewBody, ScopedScores = viewBody, scopedScores
