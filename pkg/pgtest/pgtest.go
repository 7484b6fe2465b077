// Package pgtest gives tests a real, fresh Postgres database of their own on the server
// named by DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable),
// dropped when the test ends. It must not be imported by non-test code.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nhs-dps/dps-pipeline/pkg/store"
)

// DefaultURL is the server used when DATABASE_URL is not set: a local Postgres with trust auth.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// ServerURL returns DATABASE_URL, or DefaultURL when it is unset.
func ServerURL() string {
	if u := os.Getenv("DATABASE_URL"); u != "" {
		return u
	}
	return DefaultURL
}

// NewDatabase creates an empty database with a unique name (dps_test_<package>_<random>)
// on ServerURL's server and returns its URL. The database is dropped, with any sessions
// still open on it, when the test and its subtests finish.
func NewDatabase(t testing.TB) (url string) {
	t.Helper()
	return createDatabase(t, "")
}

// CopyDatabase creates a database like NewDatabase's, as a copy of the one at templateURL (on the same
// server), and returns its URL. Nothing may be connected to the template while it is copied. On
// PostgreSQL 15 and later the files are copied as they are (STRATEGY FILE_COPY, checkpointed), not
// written again through the WAL: a copy of several gigabytes then leaves no WAL and no dirty pages
// behind to slow what runs next.
func CopyDatabase(t testing.TB, templateURL string) (url string) {
	t.Helper()
	cfg, err := pgx.ParseConfig(templateURL)
	if err != nil {
		t.Fatalf("pgtest: template: %v", err)
	}
	return createDatabase(t, cfg.Database)
}

// createDatabase creates the database, from template unless it is "", and drops it at cleanup.
func createDatabase(t testing.TB, template string) (url string) {
	t.Helper()
	timeout := 30 * time.Second
	if template != "" {
		timeout = 10 * time.Minute // copying a benchmark's 10,000,000 records takes about a minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	adminURL, err := store.WithDatabase(ServerURL(), "postgres")
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	admin, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		t.Fatalf("pgtest: connect to the test Postgres server (set DATABASE_URL): %v", err)
	}
	defer admin.Close(context.Background())

	name := databaseName()
	create := "CREATE DATABASE " + pgx.Identifier{name}.Sanitize()
	if template != "" {
		create += " TEMPLATE " + pgx.Identifier{template}.Sanitize()
		var fileCopy bool
		if err := admin.QueryRow(ctx, `SELECT current_setting('server_version_num')::int >= 150000`).Scan(&fileCopy); err != nil {
			t.Fatalf("pgtest: server version: %v", err)
		}
		if fileCopy {
			create += " STRATEGY FILE_COPY"
		}
	}
	if _, err := admin.Exec(ctx, create); err != nil {
		t.Fatalf("pgtest: create database %s: %v", name, err)
	}
	t.Cleanup(func() { dropDatabase(t, adminURL, name) })

	url, err = store.WithDatabase(ServerURL(), name)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return url
}

// NewMigratedDatabase is NewDatabase plus store.Migrate and a pool on it, closed at cleanup
// (before the database is dropped).
func NewMigratedDatabase(t testing.TB) (url string, pool *pgxpool.Pool) {
	t.Helper()
	url = NewDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := store.Migrate(ctx, url); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	pool, err := store.Connect(ctx, url)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(pool.Close)
	return url, pool
}

// DropDatabase drops the database at url now, with any sessions still open on it, instead of when the
// test ends (a large copy's disk and page cache are then free for the next one).
func DropDatabase(t testing.TB, url string) {
	t.Helper()
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	adminURL, err := store.WithDatabase(ServerURL(), "postgres")
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	dropDatabase(t, adminURL, cfg.Database)
}

func dropDatabase(t testing.TB, adminURL, name string) {
	// The test's own context is already cancelled when cleanups run.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		t.Errorf("pgtest: drop database %s: %v", name, err)
		return
	}
	defer admin.Close(context.Background())
	if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		t.Errorf("pgtest: drop database %s: %v", name, err)
	}
}

var notIdent = regexp.MustCompile(`[^a-z0-9_]+`)

// databaseName is dps_test_<package>_<random>: the package comes from the test binary's
// name (store.test → store) so a leaked database says who left it.
func databaseName() string {
	pkg := strings.TrimSuffix(filepath.Base(os.Args[0]), ".test")
	pkg = notIdent.ReplaceAllString(strings.ToLower(pkg), "_")
	if len(pkg) > 24 {
		pkg = pkg[:24]
	}
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms.
	return "dps_test_" + pkg + "_" + hex.EncodeToString(b[:])
}
