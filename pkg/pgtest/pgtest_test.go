package pgtest_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/nhs-dps/dps-pipeline/pkg/pgtest"
	"github.com/nhs-dps/dps-pipeline/pkg/store"
)

func TestNewMigratedDatabaseIsFreshAndDropped(t *testing.T) {
	var name string
	t.Run("use", func(t *testing.T) {
		url, pool := pgtest.NewMigratedDatabase(t)
		other := pgtest.NewDatabase(t)
		if url == other {
			t.Fatalf("two databases share the url %s", url)
		}
		cfg, err := pgx.ParseConfig(url)
		if err != nil {
			t.Fatal(err)
		}
		name = cfg.Database
		v, err := store.CurrentVersion(t.Context(), pool)
		if err != nil || v != store.LatestVersion() {
			t.Fatalf("version = %d, %v; want %d", v, err, store.LatestVersion())
		}
		// A connection left open must not stop the drop.
		conn, err := pgx.Connect(t.Context(), url)
		if err != nil {
			t.Fatal(err)
		}
		_ = conn
	})

	adminURL, err := store.WithDatabase(pgtest.ServerURL(), "postgres")
	if err != nil {
		t.Fatal(err)
	}
	admin, err := pgx.Connect(t.Context(), adminURL)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	var exists bool
	if err := admin.QueryRow(t.Context(), "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if exists {
		t.Errorf("database %s still exists after the subtest's cleanup", name)
	}
}

// TestCopyDatabase: a copy holds what the template held, is a database of its own, and leaves the
// template as it was.
func TestCopyDatabase(t *testing.T) {
	ctx := t.Context()
	template := pgtest.NewDatabase(t)
	conn, err := pgx.Connect(ctx, template)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `CREATE TABLE kept AS SELECT generate_series(1, 1000) AS n`); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx) // nothing may be connected to a template while it is copied

	copyURL := pgtest.CopyDatabase(t, template)
	if copyURL == template {
		t.Fatal("the copy is the template")
	}
	cp, err := pgx.Connect(ctx, copyURL)
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Close(context.Background())
	var n int
	if err := cp.QueryRow(ctx, `SELECT count(*) FROM kept`).Scan(&n); err != nil || n != 1000 {
		t.Fatalf("the copy holds %d rows (%v), want 1000", n, err)
	}
	if _, err := cp.Exec(ctx, `DELETE FROM kept`); err != nil {
		t.Fatal(err)
	}
	orig, err := pgx.Connect(ctx, template)
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close(context.Background())
	if err := orig.QueryRow(ctx, `SELECT count(*) FROM kept`).Scan(&n); err != nil || n != 1000 {
		t.Fatalf("the template holds %d rows after the copy changed (%v), want 1000", n, err)
	}
}
