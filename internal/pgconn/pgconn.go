// Package pgconn connects to PostgreSQL the one way ckm does, for its output and its source.
package pgconn

import (
	"cmp"
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Connect connects with dsn (libpq keyword/value or URL form, TLS options included), waiting at
// most 15 s unless the DSN sets connect_timeout. Its errors never hold the password.
func Connect(ctx context.Context, dsn string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse the DSN: %w", err) // pgx leaves the password out
	}
	cfg.ConnectTimeout = cmp.Or(cfg.ConnectTimeout, 15*time.Second)
	pg, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	return pg, nil
}
