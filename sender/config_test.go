package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nhs-dps/dps-pipeline/pkg/testenv"
)

// TestTLSAndURLCheckedWithTheGateClosed: `sender run` with MESH_JOBS_ENABLED=false still stops at start
// with exit 2 naming the variable of bad TLS material, and refuses http:// and disabled verification
// for an nhs.uk host.
func TestTLSAndURLCheckedWithTheGateClosed(t *testing.T) {
	e := testenv.New(t, testenv.Options{})
	bad := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(bad, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		env     []string
		wantVar string
	}{
		{"unusable CA bundle", []string{"MESH_CA_BUNDLE=" + bad}, "MESH_CA_BUNDLE"},
		{"unreadable CA bundle", []string{"MESH_CA_BUNDLE=" + bad + ".missing"}, "MESH_CA_BUNDLE"},
		{"garbage certificate", []string{"MESH_CERTIFICATE=" + bad, "MESH_PRIVATE_KEY=-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"}, "MESH_CERTIFICATE"},
		{"http to nhs.uk", []string{"MESH_BASE_URL=http://msg.intspineservices.nhs.uk"}, "MESH_BASE_URL"},
		{"verification off for nhs.uk", []string{"MESH_BASE_URL=https://msg.intspineservices.nhs.uk", "MESH_DISABLE_SSL_VERIFICATION=true"}, "MESH_DISABLE_SSL_VERIFICATION"},
		{"empty value", []string{"MESH_CHUNK_SIZE="}, "MESH_CHUNK_SIZE"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			env := append(e.ProcessEnv(), "MESH_JOBS_ENABLED=false")
			env = append(env, c.env...)
			p := start(t, env, "sender", "run")
			if code := p.exitCode(t, 30*time.Second); code != 2 || !strings.Contains(p.stderr.String(), c.wantVar) {
				t.Fatalf("exit %d, want 2 naming %s; output:\n%s", code, c.wantVar, p.stderr.String())
			}
		})
	}
}
