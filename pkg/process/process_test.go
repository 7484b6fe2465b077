package process

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/youmark/pkcs8"

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
		{"ca is not pem", func(m *config.MESH) { m.CABundle = keyFile }, "MESH_CA_BUNDLE", ""},
		{"ca unreadable", func(m *config.MESH) { m.CABundle = filepath.Join(dir, "nope") }, "MESH_CA_BUNDLE", ""},
		{"garbage certificate", func(m *config.MESH) { m.Certificate, m.PrivateKey = garbagePEM("CERTIFICATE"), keyFile }, "MESH_CERTIFICATE", ""},
		{"garbage key", func(m *config.MESH) { m.Certificate, m.PrivateKey = string(certPEM), garbagePEM("PRIVATE KEY") }, "MESH_PRIVATE_KEY", ""},
		{"key of another certificate", func(m *config.MESH) { m.Certificate, m.PrivateKey = string(certPEM), string(otherKey(t, nil)) }, "MESH_PRIVATE_KEY", ""},
		{"wrong passphrase", func(m *config.MESH) {
			m.Certificate, m.PrivateKey, m.PrivateKeyPassphrase = string(certPEM), string(otherKey(t, []byte("right"))), "wrong"
		}, "MESH_PRIVATE_KEY_PASSPHRASE", ""},
		{"missing passphrase", func(m *config.MESH) {
			m.Certificate, m.PrivateKey = string(certPEM), string(otherKey(t, []byte("right")))
		}, "MESH_PRIVATE_KEY_PASSPHRASE", ""},
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

// garbagePEM is a PEM block of the given type whose contents are not what it says.
func garbagePEM(typ string) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: []byte("not DER at all")}))
}

// otherKey is a fresh EC key in PKCS#8 PEM, encrypted with passphrase when one is given.
func otherKey(t *testing.T, passphrase []byte) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := pkcs8.MarshalPrivateKey(key, passphrase, nil)
	if err != nil {
		t.Fatal(err)
	}
	typ := "PRIVATE KEY"
	if passphrase != nil {
		typ = "ENCRYPTED PRIVATE KEY"
	}
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// TestMESHTLSCheckedWithTheGateClosed: a service with MESH_JOBS_ENABLED=false still reads and checks
// its TLS material at start and names the variable at fault, and warns about plain http.
func TestMESHTLSCheckedWithTheGateClosed(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(bad, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := config.MESH{BaseURL: "http://localhost:8700", CABundle: bad, ChunkSize: 20 << 20, RetryBudget: 1e9}
	var logs bytes.Buffer
	log, _ := logging.New(&logs, slog.LevelInfo, logging.FormatJSON)
	client, err := NewJobsMESHClient(cfg, log)
	var ce *config.Error
	if client != nil || !errors.As(err, &ce) || ce.Var != "MESH_CA_BUNDLE" {
		t.Fatalf("client %v, error %v: want a configuration error naming MESH_CA_BUNDLE", client, err)
	}
	cfg.CABundle = ""
	if _, err := NewJobsMESHClient(cfg, log); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "plain http://") || !strings.Contains(logs.String(), `"variable":"MESH_BASE_URL"`) {
		t.Errorf("no WARN about plain http in %s", logs.String())
	}
}
