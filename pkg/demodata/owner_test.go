package demodata_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/nhs-dps/dps-pipeline/pkg/demodata"
	"github.com/nhs-dps/dps-pipeline/pkg/pgtest"
	"github.com/nhs-dps/dps-pipeline/pkg/store"
)

// TestSeedAsTableOwner covers the path for a role that owns the tables but is not a
// superuser (as in a managed Postgres): the seed cannot skip triggers wholesale, so it
// disables the queue trigger for its transaction and must still queue every record and
// leave the trigger on.
func TestSeedAsTableOwner(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	ctx := t.Context()
	cfg, err := pgx.ParseConfig(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	if u, err := url.Parse(dbURL); err != nil || u.Scheme == "" {
		t.Skip("needs DATABASE_URL in URL form")
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	role := "dps_test_owner_" + hex.EncodeToString(b[:])

	admin, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	for _, sql := range []string{
		"CREATE ROLE " + role + " LOGIN NOSUPERUSER",
		"ALTER DATABASE " + pgx.Identifier{cfg.Database}.Sanitize() + " OWNER TO " + role,
		"ALTER SCHEMA public OWNER TO " + role,
	} {
		if _, err := admin.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	t.Cleanup(func() {
		// Runs before pgtest drops the database (cleanups run last-in first-out), so
		// reassign what the role owns to the admin first.
		c, err := pgx.Connect(context.Background(), dbURL)
		if err != nil {
			t.Errorf("drop role %s: %v", role, err)
			return
		}
		defer c.Close(context.Background())
		for _, sql := range []string{"REASSIGN OWNED BY " + role + " TO CURRENT_USER", "DROP OWNED BY " + role} {
			if _, err := c.Exec(context.Background(), sql); err != nil {
				t.Errorf("%s: %v", sql, err)
			}
		}
		if _, err := c.Exec(context.Background(), "DROP ROLE "+role); err != nil {
			t.Errorf("drop role %s: %v", role, err)
		}
	})

	u, _ := url.Parse(dbURL)
	u.User = url.User(role)
	ownerURL := u.String()
	if err := store.Migrate(ctx, ownerURL); err != nil {
		t.Fatal(err)
	}
	pool, err := store.Connect(ctx, ownerURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()

	sum, err := demodata.Seed(ctx, pool, demodata.Options{Records: 2000, Seed: 5, Now: seedNow})
	if err != nil {
		t.Fatal(err)
	}
	if n := count(t, pool, "SELECT count(*) FROM dps_pending_records"); n != sum.Records {
		t.Errorf("pending = %d, want %d", n, sum.Records)
	}
	var enabled string
	if err := pool.QueryRow(ctx, `SELECT tgenabled FROM pg_trigger WHERE tgname = 'vaccination_records_dps_queue'`).Scan(&enabled); err != nil {
		t.Fatal(err)
	}
	if enabled != "O" {
		t.Errorf("queue trigger state after the seed = %q, want O (enabled)", enabled)
	}
}
