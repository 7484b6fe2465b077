package meshsandbox_test

import (
	"bufio"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/nhs-dps/dps-pipeline/pkg/meshsandbox"
)

func handshake(t *testing.T, client *http.Client, base string) (*http.Response, error) {
	t.Helper()
	hr, _ := http.NewRequestWithContext(t.Context(), "GET", base+"/messageexchange/"+mb1, nil)
	hr.Header.Set("Accept", v2)
	hr.Header.Set("mex-ClientVersion", "test==1")
	hr.Header.Set("mex-OSName", "Linux")
	hr.Header.Set("mex-OSVersion", "6")
	hr.Header.Set("Authorization", nhsmesh(sharedKey, mb1, password, uuid.NewString(), "0", time.Now().UTC().Format("200601021504")))
	resp, err := client.Do(hr)
	if err == nil {
		resp.Body.Close()
	}
	return resp, err
}

func TestMutualTLS(t *testing.T) {
	ca, err := meshsandbox.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	otherCA, err := meshsandbox.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	srv := meshsandbox.New(meshsandbox.Config{SharedKey: sharedKey, Mailboxes: defaultMailboxes(), ClientCAs: ca.Pool()})
	hs := httptest.NewUnstartedServer(srv.Handler())
	if hs.TLS, err = srv.TLSConfig(ca); err != nil {
		t.Fatal(err)
	}
	hs.StartTLS()
	t.Cleanup(hs.Close)

	pair := func(c *meshsandbox.CA) []tls.Certificate {
		certPEM, keyPEM, err := c.IssueClient("X26ABC1")
		if err != nil {
			t.Fatal(err)
		}
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return []tls.Certificate{cert}
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaCertPEM, err := ca.SignClient("X26ABC1", &rsaKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(rsaCertPEM)
	rsaPair := []tls.Certificate{{Certificate: [][]byte{block.Bytes}, PrivateKey: rsaKey}}

	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(ca.CertPEM()) {
		t.Fatal("CertPEM is not PEM")
	}
	tests := []struct {
		name    string
		certs   []tls.Certificate
		roots   *x509.CertPool
		wantErr bool
	}{
		{name: "client certificate from the CA", certs: pair(ca), roots: roots},
		{name: "RSA key signed by the CA", certs: rsaPair, roots: roots},
		{name: "no client certificate", roots: roots, wantErr: true},
		{name: "client certificate from another CA", certs: pair(otherCA), roots: roots, wantErr: true},
		{name: "server not trusted", certs: pair(ca), roots: otherCA.Pool(), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: tt.roots, Certificates: tt.certs}}}
			defer client.CloseIdleConnections()
			resp, err := handshake(t, client, hs.URL)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("handshake succeeded (%d), want a TLS failure", resp.StatusCode)
				}
				return
			}
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("handshake: %v %v", resp, err)
			}
		})
	}
}

func TestTLSConfigWithoutClientCAs(t *testing.T) {
	ca, err := meshsandbox.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	srv := meshsandbox.New(meshsandbox.Config{SharedKey: sharedKey, Mailboxes: defaultMailboxes()})
	cfg, err := srv.TLSConfig(ca, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ClientAuth != tls.NoClientCert {
		t.Fatalf("ClientAuth %v without ClientCAs", cfg.ClientAuth)
	}
	leaf, err := x509.ParseCertificate(cfg.Certificates[0].Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "localhost", Roots: ca.Pool()}); err != nil {
		t.Fatalf("server certificate does not verify: %v", err)
	}
}

// TestCommand builds cmd/mesh-sandbox, runs it and handshakes against the URL it prints.
func TestCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "mesh-sandbox")
	build := exec.CommandContext(t.Context(), "go", "build", "-o", bin, "./cmd/mesh-sandbox")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	caFile := filepath.Join(dir, "ca.pem")
	cmd := exec.Command(bin, "-addr", "127.0.0.1:0", "-ca-out", caFile,
		"-mailboxes", "X26ABC1:password:DPS;X26ABC2:password")
	cmd.Env = append(os.Environ(), "MESH_SHARED_KEY="+sharedKey)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
		})
	}
	t.Cleanup(func() {
		stop()
		_ = cmd.Wait()
	})

	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("read URL line: %v; stderr: %s", err, stderr.String())
	}
	base, ok := strings.CutPrefix(strings.TrimSpace(line), "mesh-sandbox listening on ")
	if !ok || !strings.HasPrefix(base, "https://127.0.0.1:") {
		t.Fatalf("first line %q", line)
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		t.Fatal("-ca-out file is not PEM")
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	defer client.CloseIdleConnections()
	resp, err := handshake(t, client, base)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("handshake against %s: %v %v", base, resp, err)
	}

	stop()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("mesh-sandbox did not stop cleanly on SIGTERM: %v; stderr: %s", err, stderr.String())
	}
}

func TestConcurrentUse(t *testing.T) {
	s := startSandbox(t, nil)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			// Not t.Fatal: this is not the test's goroutine.
			for i := range 20 {
				r, err := s.send(t, req{method: "POST", path: mb1 + "/outbox", body: fmt.Appendf(nil, "%d-%d", w, i),
					header: map[string]string{"mex-To": mb2, "mex-WorkflowID": "DPS"}})
				if err != nil || r.status != http.StatusAccepted {
					t.Errorf("send: %v %d", err, r.status)
					return
				}
				var sent struct {
					MessageID string `json:"message_id"`
				}
				_ = json.Unmarshal(r.body, &sent)
				id := sent.MessageID
				for _, rq := range []req{
					{method: "GET", path: mb2 + "/inbox?max_results=10"},
					{method: "GET", path: mb2 + "/inbox/" + id},
					{method: "PUT", path: mb2 + "/inbox/" + id + "/status/acknowledged"},
					{method: "GET", path: mb1 + "/outbox/tracking?messageID=" + id},
				} {
					if r, err := s.send(t, rq); err != nil || r.status != http.StatusOK {
						t.Errorf("%s %s: %v %d", rq.method, rq.path, err, r.status)
					}
				}
				_ = s.Messages(mb1)
			}
		})
	}
	wg.Wait()
	for _, m := range s.Messages(mb2) {
		if m.Status != "acknowledged" {
			t.Fatalf("message %s is %s", m.ID, m.Status)
		}
	}
}
