package store_test

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nhs-dps/dps-pipeline/pkg/pgtest"
	"github.com/nhs-dps/dps-pipeline/pkg/store"
)

func TestMigrateTwice(t *testing.T) {
	url := pgtest.NewDatabase(t)
	ctx := t.Context()
	for i := range 2 {
		if err := store.Migrate(ctx, url); err != nil {
			t.Fatalf("migrate run %d: %v", i+1, err)
		}
	}
	pool, err := store.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	assertOneSchema(t, pool)
}

// TestMigratePool migrates a fresh database on a pooled connection, then again on an up-to-date one,
// and leaves the connection in the pool, usable and without tern's session lock; a migration that
// fails closes its connection instead of giving it back.
func TestMigratePool(t *testing.T) {
	url := pgtest.NewDatabase(t)
	ctx := t.Context()
	pool, err := store.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	for i := range 2 {
		if err := store.MigratePool(ctx, pool); err != nil {
			t.Fatalf("migrate run %d: %v", i+1, err)
		}
	}
	assertOneSchema(t, pool)
	if got := pool.Stat().TotalConns(); got != 1 {
		t.Errorf("%d connections after migrating, want the one the pool had", got)
	}
	var locks int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&locks); err != nil {
		t.Fatal(err)
	}
	if locks != 0 {
		t.Errorf("%d advisory locks held after migrating", locks)
	}

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := store.MigratePool(cancelled, pool); err == nil {
		t.Fatal("migrating with a cancelled context succeeded")
	}
	if err := pool.Ping(ctx); err != nil {
		t.Fatalf("the pool after a failed migration: %v", err)
	}
}

// TestMigrateConcurrently starts many migrations on a fresh database at the same moment,
// each on its own connection, as several processes starting together would.
func TestMigrateConcurrently(t *testing.T) {
	url := pgtest.NewDatabase(t)
	ctx := t.Context()
	const n = 8
	var (
		start sync.WaitGroup
		done  sync.WaitGroup
		errs  = make([]error, n)
	)
	start.Add(1)
	for i := range n {
		done.Add(1)
		go func() {
			defer done.Done()
			start.Wait()
			errs[i] = store.Migrate(ctx, url)
		}()
	}
	start.Done()
	done.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("migration %d: %v", i, err)
		}
	}
	pool, err := store.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	assertOneSchema(t, pool)
}

func assertOneSchema(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	ctx := t.Context()
	v, err := store.CurrentVersion(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	if want := store.LatestVersion(); v != want || want < 2 {
		t.Errorf("schema version = %d, want %d (>= 2)", v, want)
	}
	var rows int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM "+store.VersionTable).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != 1 {
		t.Errorf("version table has %d rows, want 1", rows)
	}
	var tables []string
	r, err := pool.Query(ctx, `SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	tables, err = pgx.CollectRows(r, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"teams", "locations", "programmes", "vaccines", "batches", "patients",
		"vaccinators", "vaccination_records", "dps_pending_records", "dps_exports", "dps_export_records",
		"dps_export_attempts", "dps_export_requests", "schema_version"} {
		if !contains(tables, want) {
			t.Errorf("table %s missing; have %v", want, tables)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestCurrentVersionOfEmptyDatabase(t *testing.T) {
	url := pgtest.NewDatabase(t)
	pool, err := store.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	v, err := store.CurrentVersion(t.Context(), pool)
	if err != nil || v != 0 {
		t.Errorf("CurrentVersion = %d, %v; want 0, nil", v, err)
	}
}

func TestConnectErrorNamesHostNotPassword(t *testing.T) {
	const password = "Sup3r-s3cret-pw"
	server := pgtest.ServerURL()
	missingDB, err := store.WithDatabase(server, "dps_no_such_database_for_test")
	if err != nil {
		t.Fatal(err)
	}
	withPassword := func(u string) string {
		// Trust auth ignores the password, so a real server still answers.
		return strings.Replace(u, "postgres://postgres@", "postgres://postgres:"+password+"@", 1)
	}
	tests := []struct {
		name, url, wantHost string
	}{
		{"nothing listening", "postgres://dps:" + password + "@127.0.0.1:1/dps?sslmode=disable&connect_timeout=2", "127.0.0.1:1"},
		{"missing database", withPassword(missingDB), "dps_no_such_database_for_test"},
		{"unparsable", "postgres://dps:" + password + "@127.0.0.1:notaport/dps", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pool, err := store.Connect(t.Context(), tt.url)
			if err == nil {
				pool.Close()
				t.Fatal("Connect succeeded, want an error")
			}
			msg := err.Error()
			if strings.Contains(msg, password) {
				t.Errorf("error reveals the password: %s", msg)
			}
			if !strings.Contains(msg, tt.wantHost) {
				t.Errorf("error %q does not name %q", msg, tt.wantHost)
			}
		})
	}
}

func TestEnsureDatabase(t *testing.T) {
	// Borrow a unique name (and its cleanup) from pgtest, then drop the database so that
	// EnsureDatabase has to create it.
	url := pgtest.NewDatabase(t)
	ctx := t.Context()
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	adminURL, err := store.WithDatabase(url, "postgres")
	if err != nil {
		t.Fatal(err)
	}
	admin, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	if _, err := admin.Exec(ctx, "DROP DATABASE "+pgx.Identifier{cfg.Database}.Sanitize()); err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { errs[i] = store.EnsureDatabase(ctx, url) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("EnsureDatabase %d: %v", i, err)
		}
	}
	if err := store.EnsureDatabase(ctx, url); err != nil {
		t.Errorf("EnsureDatabase on an existing database: %v", err)
	}
	if err := store.Migrate(ctx, url); err != nil {
		t.Errorf("migrate the ensured database: %v", err)
	}
}

func TestWithDatabase(t *testing.T) {
	tests := []struct{ in, name, want string }{
		{"postgres://u:p@h:5432/postgres?sslmode=disable", "dps", "postgres://u:p@h:5432/dps?sslmode=disable"},
		{"postgresql://h/x", "dps_test", "postgresql://h/dps_test"},
		{"host=h user=u dbname=postgres", "dps", "host=h user=u dbname=postgres dbname='dps'"},
	}
	for _, tt := range tests {
		got, err := store.WithDatabase(tt.in, tt.name)
		if err != nil || got != tt.want {
			t.Errorf("WithDatabase(%q, %q) = %q, %v; want %q", tt.in, tt.name, got, err, tt.want)
		}
		cfg, err := pgx.ParseConfig(got)
		if err != nil || cfg.Database != tt.name {
			t.Errorf("parsed %q: database %q, %v; want %q", got, cfg.Database, err, tt.name)
		}
	}
}
