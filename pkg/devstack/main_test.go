package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nhs-dps/dps-pipeline/pkg/meshsandbox"
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
			if c.MESH != (ExternalMESH{}) {
				t.Errorf("without --mesh-url the stack starts its own sandbox, got %+v", c.MESH)
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

func TestParseMESHFlags(t *testing.T) {
	dir := t.TempDir()
	ca, err := meshsandbox.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.pem")
	notPEM := filepath.Join(dir, "not.pem")
	for name, data := range map[string][]byte{caFile: ca.CertPEM(), notPEM: []byte("hello")} {
		if err := os.WriteFile(name, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	official := func(url string) ExternalMESH {
		return ExternalMESH{URL: url, SharedKey: "TestKey", Password: "password", OurMailbox: "X26ABC1", DPSMailbox: "X26ABC2"}
	}
	tests := []struct {
		name    string
		args    []string
		want    ExternalMESH
		wantErr string
	}{
		{name: "our sandbox by default", args: nil, want: ExternalMESH{}},
		{name: "official sandbox over http with its defaults", args: []string{"--mesh-url", "http://127.0.0.1:8700"}, want: official("http://127.0.0.1:8700")},
		{name: "trailing slash dropped", args: []string{"--mesh-url", "http://localhost:8700/"}, want: official("http://localhost:8700")},
		{name: "insecure tls", args: []string{"--mesh-url", "https://localhost:8701", "--mesh-insecure"},
			want: func() ExternalMESH { m := official("https://localhost:8701"); m.Insecure = true; return m }()},
		{name: "tls with a CA file", args: []string{"--mesh-url", "https://localhost:8701", "--mesh-ca", caFile},
			want: func() ExternalMESH { m := official("https://localhost:8701"); m.CAFile = caFile; return m }()},
		{name: "every setting, mailboxes upper-cased",
			args: []string{"--mesh-url", "https://sandbox.example:443", "--mesh-shared-key", "k", "--mesh-password", "p", "--mesh-ours", "x26abc3", "--mesh-dps", " x26abc1 "},
			want: ExternalMESH{URL: "https://sandbox.example:443", SharedKey: "k", Password: "p", OurMailbox: "X26ABC3", DPSMailbox: "X26ABC1"}},
		{name: "mesh flag without --mesh-url", args: []string{"--mesh-insecure", "--mesh-password", "x"}, wantErr: "--mesh-insecure, --mesh-password given without --mesh-url"},
		{name: "default value given without --mesh-url", args: []string{"--mesh-ours", "X26ABC1"}, wantErr: "--mesh-ours given without --mesh-url"},
		{name: "not http", args: []string{"--mesh-url", "ftp://localhost:8700"}, wantErr: "must be http(s)://host[:port]"},
		{name: "no scheme", args: []string{"--mesh-url", "localhost:8700"}, wantErr: "must be http(s)://host[:port]"},
		{name: "path", args: []string{"--mesh-url", "http://localhost:8700/messageexchange"}, wantErr: "must be http(s)://host[:port]"},
		{name: "credentials in the url", args: []string{"--mesh-url", "http://u:p@localhost:8700"}, wantErr: "must be http(s)://host[:port]"},
		{name: "live MESH refused", args: []string{"--mesh-url", "https://mesh-sync.spineservices.nhs.uk"}, wantErr: "NHS MESH environment"},
		{name: "integration MESH refused", args: []string{"--mesh-url", "https://MSG.intspineservices.nhs.uk."}, wantErr: "NHS MESH environment"},
		{name: "same mailbox twice", args: []string{"--mesh-url", "http://localhost:8700", "--mesh-dps", "x26abc1"}, wantErr: "both X26ABC1"},
		{name: "empty mailbox", args: []string{"--mesh-url", "http://localhost:8700", "--mesh-ours", ""}, wantErr: "--mesh-ours"},
		{name: "mailbox with a slash", args: []string{"--mesh-url", "http://localhost:8700", "--mesh-dps", "X26/ABC2"}, wantErr: "--mesh-dps"},
		{name: "empty shared key", args: []string{"--mesh-url", "http://localhost:8700", "--mesh-shared-key", ""}, wantErr: "--mesh-shared-key"},
		{name: "empty password", args: []string{"--mesh-url", "http://localhost:8700", "--mesh-password", ""}, wantErr: "--mesh-password"},
		{name: "ca and insecure", args: []string{"--mesh-url", "https://localhost:8701", "--mesh-ca", caFile, "--mesh-insecure"}, wantErr: "exclude each other"},
		{name: "insecure over http", args: []string{"--mesh-url", "http://localhost:8700", "--mesh-insecure"}, wantErr: "need an https --mesh-url"},
		{name: "ca over http", args: []string{"--mesh-url", "http://localhost:8700", "--mesh-ca", caFile}, wantErr: "need an https --mesh-url"},
		{name: "missing ca file", args: []string{"--mesh-url", "https://localhost:8701", "--mesh-ca", filepath.Join(dir, "absent.pem")}, wantErr: "--mesh-ca"},
		{name: "ca file without a certificate", args: []string{"--mesh-url", "https://localhost:8701", "--mesh-ca", notPEM}, wantErr: "no PEM certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseFlags(tt.args, func(string) string { return "" }, io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.MESH != tt.want {
				t.Errorf("MESH = %+v\nwant   %+v", c.MESH, tt.want)
			}
		})
	}
}

// TestChildEnvMESH: the children and DPS reach an external sandbox with the settings the flags gave,
// and the default stack's environment is what it always was.
func TestChildEnvMESH(t *testing.T) {
	ours := &Stack{meshURL: "https://localhost:1234", ourMailbox: ourMailbox, dpsMailbox: dpsMailbox, caFile: "/w/mesh-ca.pem", sharedKey: "k", ourPassword: "p"}
	official := func(m ExternalMESH) *Stack { s := &Stack{}; s.useExternalMESH(m); return s }
	tests := []struct {
		name          string
		stack         *Stack
		want, without []string
	}{
		{name: "our sandbox", stack: ours,
			want:    []string{"MESH_BASE_URL=https://localhost:1234", "MESH_MAILBOX=X26ABC1", "MESH_DPS_MAILBOX=X26ABC2", "MESH_CA_BUNDLE=/w/mesh-ca.pem", "MESH_SHARED_KEY=k", "MESH_PASSWORD=p"},
			without: []string{"MESH_DISABLE_SSL_VERIFICATION"}},
		{name: "external over http", stack: official(ExternalMESH{URL: "http://127.0.0.1:8700", SharedKey: "TestKey", Password: "password", OurMailbox: "X26ABC3", DPSMailbox: "X26ABC1"}),
			want:    []string{"MESH_BASE_URL=http://127.0.0.1:8700", "MESH_MAILBOX=X26ABC3", "MESH_DPS_MAILBOX=X26ABC1", "MESH_SHARED_KEY=TestKey", "MESH_PASSWORD=password"},
			without: []string{"MESH_CA_BUNDLE", "MESH_DISABLE_SSL_VERIFICATION"}},
		{name: "external insecure", stack: official(ExternalMESH{URL: "https://localhost:8701", SharedKey: "TestKey", Password: "password", OurMailbox: "X26ABC1", DPSMailbox: "X26ABC2", Insecure: true}),
			want:    []string{"MESH_DISABLE_SSL_VERIFICATION=true"},
			without: []string{"MESH_CA_BUNDLE"}},
		{name: "external with a CA", stack: official(ExternalMESH{URL: "https://localhost:8701", SharedKey: "TestKey", Password: "password", OurMailbox: "X26ABC1", DPSMailbox: "X26ABC2", CAFile: "/etc/sandbox-ca.pem"}),
			want:    []string{"MESH_CA_BUNDLE=/etc/sandbox-ca.pem"},
			without: []string{"MESH_DISABLE_SSL_VERIFICATION"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.stack.cfg = Config{DatabaseURL: "postgres://x/y", LogLevel: "info"}
			env := tt.stack.childEnv()
			for _, kv := range tt.want {
				if !slices.Contains(env, kv) {
					t.Errorf("missing %s in %q", kv, env)
				}
			}
			for _, name := range tt.without {
				if slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, name+"=") }) {
					t.Errorf("%s set in %q", name, env)
				}
			}
		})
	}
}
