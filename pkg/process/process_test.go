package process

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nhs-dps/dps-pipeline/pkg/config"
	"github.com/nhs-dps/dps-pipeline/pkg/logging"
	"github.com/nhs-dps/dps-pipeline/pkg/meshsandbox"
)

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
