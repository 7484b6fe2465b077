package main

import (
	"context"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/nhs-dps/dps-pipeline/pkg/pgtest"
	"github.com/nhs-dps/dps-pipeline/pkg/store"
)

// TestConfigurationThatMisleads: an empty DATABASE_URL and a mistyped database name stop the producer
// with exit 2 naming DATABASE_URL, and the mistyped database is not created; `migrate
// --create-database` creates it when asked.
func TestConfigurationThatMisleads(t *testing.T) {
	s := newStack(t)
	if _, errOut, code := s.run(s.env("DATABASE_URL="), "export", "--programme", "HPV"); code != 2 || !strings.Contains(errOut, "DATABASE_URL") {
		t.Fatalf("DATABASE_URL empty: exit %d, %q; want 2 naming DATABASE_URL", code, errOut)
	}

	name := "dps_typo_" + strings.ReplaceAll(uuid.NewString()[:8], "-", "")
	typo, err := store.WithDatabase(pgtest.ServerURL(), name)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := store.WithDatabase(pgtest.ServerURL(), "postgres")
	if err != nil {
		t.Fatal(err)
	}
	exists := func() bool {
		conn, err := pgx.Connect(t.Context(), admin)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		var ok bool
		if err := conn.QueryRow(t.Context(), `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&ok); err != nil {
			t.Fatal(err)
		}
		return ok
	}
	t.Cleanup(func() {
		conn, err := pgx.Connect(context.Background(), admin)
		if err == nil {
			_, _ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize())
			conn.Close(context.Background())
		}
	})
	for _, args := range [][]string{{"export", "--programme", "HPV"}, {"migrate"}, {"seed", "--records", "1"}} {
		_, errOut, code := s.run(s.env("DATABASE_URL="+typo), args...)
		if code != 2 || !strings.Contains(errOut, "DATABASE_URL") || !strings.Contains(errOut, "does not exist") ||
			!strings.Contains(errOut, "--create-database") {
			t.Fatalf("producer %v against a missing database: exit %d, %q; want 2 naming DATABASE_URL", args, code, errOut)
		}
	}
	if exists() {
		t.Fatal("a command created the mistyped database")
	}
	if _, errOut, code := s.run(s.env("DATABASE_URL="+typo), "migrate", "--create-database"); code != 0 {
		t.Fatalf("migrate --create-database: exit %d, %s", code, errOut)
	}
	if !exists() {
		t.Fatal("migrate --create-database did not create the database")
	}
}
