package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/nhs-dps/dps-pipeline/pkg/pgtest"
	"github.com/nhs-dps/dps-pipeline/pkg/store"
)

// TestClassifyRealErrors: errors Postgres really returns are classified by their SQLSTATE class, also
// when wrapped.
func TestClassifyRealErrors(t *testing.T) {
	_, pool := pgtest.NewMigratedDatabase(t)
	ctx := t.Context()
	if _, err := pool.Exec(ctx, `CREATE TABLE classify_t (id int PRIMARY KEY, v text NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO classify_t VALUES (1, 'a')`); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		sql   string
		args  []any
		class store.ErrorClass
		state string
	}{
		{"NUL in text", `INSERT INTO classify_t VALUES (2, $1)`, []any{"a\x00b"}, store.Permanent, "22021"},
		{"division by zero", `SELECT 1/0`, nil, store.Permanent, "22012"},
		{"unique violation", `INSERT INTO classify_t VALUES (1, 'b')`, nil, store.Permanent, "23505"},
		{"not null", `INSERT INTO classify_t VALUES (3, NULL)`, nil, store.Permanent, "23502"},
		{"undefined table", `SELECT * FROM no_such_table`, nil, store.Permanent, "42P01"},
		{"serialization failure", `DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = '40001'; END $$`, nil, store.Transient, "40001"},
		{"deadlock", `DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = '40P01'; END $$`, nil, store.Transient, "40P01"},
		{"too many connections", `DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = '53300'; END $$`, nil, store.Transient, "53300"},
		{"admin shutdown", `DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = '57P01'; END $$`, nil, store.Transient, "57P01"},
		{"connection failure", `DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = '08006'; END $$`, nil, store.Transient, "08006"},
		{"insufficient privilege", `DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = '42501'; END $$`, nil, store.Transient, "42501"},
		{"query cancelled", `SELECT pg_sleep(1)`, nil, store.Transient, "57014"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := pool.Acquire(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Release()
			// Only the cancellation case needs a timeout; a fresh setting per case keeps the others clear.
			timeout := "0"
			if tt.state == "57014" {
				timeout = "1"
			}
			if _, err := conn.Exec(ctx, "SET statement_timeout = "+timeout); err != nil {
				t.Fatal(err)
			}
			_, err = conn.Exec(ctx, tt.sql, tt.args...)
			if err == nil {
				t.Fatal("no error")
			}
			wrapped := fmt.Errorf("record request: %w", err)
			class, state := store.Classify(wrapped)
			if class != tt.class || state != tt.state {
				t.Fatalf("Classify = %v %q, want %v %q (%v)", class, state, tt.class, tt.state, err)
			}
			dbErr, permanent := store.IsPermanent(wrapped)
			if permanent != (tt.class == store.Permanent) {
				t.Fatalf("IsPermanent = %v", permanent)
			}
			if permanent && (dbErr.SQLState != tt.state || !errors.Is(dbErr, err)) {
				t.Fatalf("DatabaseError %+v", dbErr)
			}
		})
	}
}

// TestClassifyWithoutSQLState: failures with no Postgres error behind them are transient.
func TestClassifyWithoutSQLState(t *testing.T) {
	for _, err := range []error{
		context.DeadlineExceeded,
		&pgconn.ConnectError{},
		errors.New("dial tcp 127.0.0.1:5432: connect: connection refused"),
	} {
		if class, state := store.Classify(err); class != store.Transient || state != "" {
			t.Errorf("%v: %v %q, want transient", err, class, state)
		}
	}
}
