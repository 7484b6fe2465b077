package store

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Connect opens a connection pool to databaseURL and pings it, so that a wrong address or
// a missing database is reported at start rather than on the first query. Errors name
// the host, port and database, never the password.
func Connect(ctx context.Context, databaseURL string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	where := describe(cfg.ConnConfig)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to postgres at %s: %w", where, missingDatabase(scrub(err, cfg.ConnConfig.Password), cfg.ConnConfig))
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to postgres at %s: %w", where, missingDatabase(scrub(err, cfg.ConnConfig.Password), cfg.ConnConfig))
	}
	return pool, nil
}

// connectOne opens a single connection; migrations need one session for tern's
// session-level advisory lock.
func connectOne(ctx context.Context, databaseURL string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(databaseURL)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to postgres at %s: %w", describe(cfg), missingDatabase(scrub(err, cfg.Password), cfg))
	}
	return conn, nil
}

// MissingDatabaseError says the database a URL names does not exist on its server. Services never
// create it (a typo in DATABASE_URL would otherwise become a new, empty database that exports
// nothing); `producer migrate --create-database` does, when asked.
type MissingDatabaseError struct {
	Database string
	Where    string // host:port/database (user ...)
	Err      error
}

func (e *MissingDatabaseError) Error() string {
	return fmt.Sprintf("database %q does not exist at %s", e.Database, e.Where)
}

func (e *MissingDatabaseError) Unwrap() error { return e.Err }

// missingDatabase turns Postgres's invalid_catalog_name (3D000) into a *MissingDatabaseError.
func missingDatabase(err error, cfg *pgx.ConnConfig) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "3D000" {
		return &MissingDatabaseError{Database: cfg.Database, Where: describe(cfg), Err: err}
	}
	return err
}

// EnsureDatabase creates the database named in databaseURL when it does not exist, by
// connecting to the server's "postgres" maintenance database with the same credentials.
// Two processes doing this at once both succeed.
func EnsureDatabase(ctx context.Context, databaseURL string) error {
	cfg, err := pgx.ParseConfig(databaseURL)
	if err != nil {
		return fmt.Errorf("ensure database: parse database url: %w", err)
	}
	name := cfg.Database
	if name == "" {
		return errors.New("ensure database: the database url names no database")
	}
	admin := cfg.Copy()
	admin.Database = "postgres"
	conn, err := pgx.ConnectConfig(ctx, admin)
	if err != nil {
		return fmt.Errorf("ensure database %s: connect to postgres at %s: %w", name, describe(admin), scrub(err, cfg.Password))
	}
	defer conn.Close(context.WithoutCancel(ctx))

	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return fmt.Errorf("ensure database %s: %w", name, err)
	}
	if exists {
		return nil
	}
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	var pgErr *pgconn.PgError
	// duplicate_database: another process created it between our check and our CREATE;
	// unique_violation: the same race caught by the pg_database catalog index.
	if errors.As(err, &pgErr) && (pgErr.Code == "42P04" || pgErr.Code == "23505") {
		return nil
	}
	if err != nil {
		return fmt.Errorf("ensure database %s: create: %w", name, err)
	}
	return nil
}

// WithDatabase returns databaseURL pointing at database name instead, keeping host,
// credentials and options. It accepts both URL and keyword/value connection strings.
func WithDatabase(databaseURL, name string) (string, error) {
	if strings.HasPrefix(databaseURL, "postgres://") || strings.HasPrefix(databaseURL, "postgresql://") {
		u, err := url.Parse(databaseURL)
		if err != nil {
			// url.Parse errors quote the input, password included; say only what failed.
			return "", errors.New("parse database url: invalid URL")
		}
		u.Path = "/" + name
		u.RawPath = ""
		return u.String(), nil
	}
	// In keyword/value form a later keyword overrides an earlier one.
	quoted := strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(name)
	return strings.TrimSpace(databaseURL) + " dbname='" + quoted + "'", nil
}

// describe names where a connection goes, for error messages: host:port/database as user.
func describe(cfg *pgx.ConnConfig) string {
	return fmt.Sprintf("%s:%d/%s (user %s)", cfg.Host, cfg.Port, cfg.Database, cfg.User)
}

// scrub guards against a driver error that quotes the password: pgx redacts it today,
// but the promise that no error carries a password is ours, so it is enforced here.
func scrub(err error, password string) error {
	if err == nil || password == "" || !strings.Contains(err.Error(), password) {
		return err
	}
	return errors.New(strings.ReplaceAll(err.Error(), password, "xxxxx"))
}
