package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

func TestParseFlags(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		check   func(t *testing.T, c Config)
		wantErr string
	}{
		{name: "defaults", check: func(t *testing.T, c Config) {
			if c.Once || c.Records != 2000 || c.Senders != 2 || c.DataDir != "" || !c.RecreateDatabase {
				t.Errorf("defaults %+v", c)
			}
			if c.DatabaseURL != "postgres://postgres@127.0.0.1:5432/dps_devstack?sslmode=disable" {
				t.Errorf("database %s", c.DatabaseURL)
			}
		}},
		{name: "flags", args: []string{"--once", "--records", "50", "--senders", "3", "--data", "/tmp/x", "--db", "mine", "--keep-db", "--timeout", "1m"},
			env: map[string]string{"DATABASE_URL": "postgres://u:p@db.example:6543/other?sslmode=require"},
			check: func(t *testing.T, c Config) {
				if !c.Once || c.Records != 50 || c.Senders != 3 || c.DataDir != "/tmp/x" || c.RecreateDatabase || c.Timeout != time.Minute {
					t.Errorf("parsed %+v", c)
				}
				// The server comes from DATABASE_URL; the database is always the devstack's own.
				if c.DatabaseURL != "postgres://u:p@db.example:6543/mine?sslmode=require" {
					t.Errorf("database %s", c.DatabaseURL)
				}
			}},
		{name: "no senders", args: []string{"--senders", "0"}, wantErr: "--senders"},
		{name: "negative records", args: []string{"--records", "-1"}, wantErr: "--records"},
		{name: "stray argument", args: []string{"now"}, wantErr: "unexpected argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseFlags(tt.args, env(tt.env), io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
		})
	}
}

// TestNoPostgresIsOneClearLine: a new user without Postgres gets one line saying how to get one,
// before anything is built or started.
func TestNoPostgresIsOneClearLine(t *testing.T) {
	var stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	err := run(ctx, Config{Once: true, Timeout: time.Minute, Records: 1, Senders: 1,
		DatabaseURL: "postgres://postgres@127.0.0.1:1/dps_devstack?sslmode=disable", Stdout: io.Discard, Stderr: &stderr})
	var np *errNoPostgres
	if !errors.As(err, &np) {
		t.Fatalf("err = %v, want errNoPostgres", err)
	}
	want := "no PostgreSQL at 127.0.0.1:1: start one (docker compose up -d postgres) or set DATABASE_URL"
	if err.Error() != want {
		t.Fatalf("message %q, want %q", err.Error(), want)
	}
	if stderr.Len() != 0 {
		t.Errorf("printed before failing: %s", stderr.String())
	}
}
