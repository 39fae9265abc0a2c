package publish

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/ckm-dev/ckm/warehouse"
)

// CopyToNewPostgresTable creates table in PostgreSQL with the PostgreSQL types of query's
// DuckDB columns (pgTypes) and fills it with query's rows through binaryCopy; it returns the
// rows PostgreSQL says it copied.
func CopyToNewPostgresTable(ctx context.Context, duck *warehouse.Conn, pg *pgx.Conn, table, query string) (int64, error) {
	rows, err := duck.QueryContext(ctx, `SELECT column_name, column_type FROM (DESCRIBE `+query+`)`)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	var cols []pgColumn
	var defs []string
	for rows.Next() {
		var name, duckType string
		if err := rows.Scan(&name, &duckType); err != nil {
			return 0, err
		}
		pgType, ok := pgTypes[duckType]
		if !ok {
			return 0, fmt.Errorf("no PostgreSQL type for %s", duckType)
		}
		cols = append(cols, pgColumn{name, pgType})
		defs = append(defs, name+" "+pgType)
	}
	if err := rows.Err(); err != nil {
		return 0, err
	}
	if _, err := pg.Exec(ctx, fmt.Sprintf(`CREATE TABLE %s (%s)`, table, strings.Join(defs, ", "))); err != nil {
		return 0, err
	}
	rr, err := duck.ArrowQuery(ctx, query)
	if err != nil {
		return 0, err
	}
	defer rr.Release()
	src := &binaryCopy{rr: rr, table: table, columns: cols}
	tag, err := pg.PgConn().CopyFrom(ctx, src, `COPY `+table+` FROM STDIN (FORMAT binary)`)
	if src.err != nil {
		return 0, src.err
	}
	return tag.RowsAffected(), err
}
