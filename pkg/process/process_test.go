package process

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nhs-dps/dps-pipeline/pkg/config"
	"github.com/nhs-dps/dps-pipeline/pkg/logging"
	"github.com/nhs-dps/dps-pipeline/pkg/meshsandbox"
)

func TestExitCode(t *testing.T) {
	tests := []struct {
		err  error
		want int
	}{
		{nil, ExitOK},
		{&config.Error{Var: "MESH_JOBS_ENABLED", Problem: "must be true or false"}, ExitUsage},
		{fmt.Errorf("load: %w", &config.Error{Var: "X", Problem: "y"}), ExitUsage},
		{Usagef("unknown flag %s", "--x"), ExitUsage},
		{errors.New("connect nats: refused"), ExitFailure},
	}
	for _, tt := range tests {
		if got := ExitCode(tt.err); got != tt.want {
			t.Errorf("ExitCode(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
}

func TestFatalPrintsOneScrubbedLine(t *testing.T) {
	var buf bytes.Buffer
	code := Fatal(&buf, "sender", errors.New("connect postgres://u:hunter2@db/dps:\nrefused"))
	if code != ExitFailure {
		t.Errorf("code = %d", code)
	}
	out := buf.String()
	if strings.Count(out, "\n") != 1 || strings.Contains(out, "hunter2") || !strings.HasPrefix(out, "sender: ") {
		t.Errorf("Fatal printed %q", out)
	}
	buf.Reset()
	if code := Fatal(&buf, "tracker", &config.Error{Var: "MESH_JOBS_ENABLED", Problem: "must be true or false"}); code != ExitUsage {
		t.Errorf("config error code = %d", code)
	}
	if got := buf.String(); got != "tracker: configuration: MESH_JOBS_ENABLED: must be true or false\n" {
		t.Errorf("config error line = %q", got)
	}
}

func TestNewMESHClientReadsPEMTextOrFiles(t *testing.T) {
	ca, err := meshsandbox.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.IssueClient("X26ABC1")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "key.pem")
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(caFile, ca.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	base := config.MESH{BaseURL: "https://localhost:8700", Mailbox: "X26ABC1", Password: "password",
		SharedKey: "TestKey", ChunkSize: 20 << 20, RetryBudget: 1e9}

	tests := []struct {
		name    string
		mutate  func(*config.MESH)
		wantVar string
		wantLog string
	}{
		{"pem text and files", func(m *config.MESH) { m.Certificate, m.PrivateKey, m.CABundle = string(certPEM), keyFile, caFile }, "", ""},
		{"no client certificate", func(m *config.MESH) {}, "", ""},
		{"missing key file", func(m *config.MESH) { m.Certificate, m.PrivateKey = string(certPEM), filepath.Join(dir, "nope") }, "MESH_PRIVATE_KEY", ""},
		{"ca is not pem", func(m *config.MESH) { m.CABundle = keyFile }, "MESH_CERTIFICATE", ""},
		{"verification off warns", func(m *config.MESH) { m.DisableSSLVerification = true }, "", "verification is DISABLED"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base
			tt.mutate(&cfg)
			var logs bytes.Buffer
			log, _ := logging.New(&logs, slog.LevelInfo, logging.FormatJSON)
			_, err := NewMESHClient(cfg, log)
			var ce *config.Error
			switch {
			case tt.wantVar == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.wantVar != "" && (!errors.As(err, &ce) || ce.Var != tt.wantVar):
				t.Fatalf("error %v, want one naming %s", err, tt.wantVar)
			}
			if !strings.Contains(logs.String(), tt.wantLog) {
				t.Errorf("log %q lacks %q", logs.String(), tt.wantLog)
			}
		})
	}
}
