package mesh_test

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/youmark/pkcs8"

	"github.com/nhs-dps/dps-pipeline/pkg/mesh"
	"github.com/nhs-dps/dps-pipeline/pkg/meshsandbox"
)

// mtlsEnv is a sandbox over real TLS that requires a client certificate signed by ca.
type mtlsEnv struct {
	ca  *meshsandbox.CA
	sb  *meshsandbox.Server
	url string
}

func newMTLSEnv(t *testing.T) *mtlsEnv {
	t.Helper()
	ca, err := meshsandbox.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	cfg := sandboxConfig()
	cfg.ClientCAs = ca.Pool()
	sb := meshsandbox.New(cfg)
	tc, err := sb.TLSConfig(ca, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(sb.Handler())
	srv.TLS = tc
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return &mtlsEnv{ca: ca, sb: sb, url: srv.URL}
}

func (m *mtlsEnv) client(t *testing.T, o mesh.TLSOptions, log *bytes.Buffer) (*mesh.Client, error) {
	t.Helper()
	tc, err := mesh.TLSConfig(o)
	if err != nil {
		return nil, err
	}
	cfg := mesh.Config{BaseURL: m.url, Mailbox: senderMB, Password: senderPW, SharedKey: sharedKey, TLS: tc, MaxRetries: 1}
	if log != nil {
		cfg.Logger = slog.New(slog.NewTextHandler(log, nil))
	}
	return mesh.New(cfg)
}

func encryptedPKCS8(t *testing.T, key crypto.PrivateKey, pass string) []byte {
	t.Helper()
	der, err := pkcs8.MarshalPrivateKey(key, []byte(pass), &pkcs8.Opts{
		Cipher:  pkcs8.AES256CBC,
		KDFOpts: pkcs8.PBKDF2Opts{SaltSize: 16, IterationCount: 2048, HMACHash: crypto.SHA256},
	})
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: der})
}

func TestMutualTLS(t *testing.T) {
	m := newMTLSEnv(t)
	ctx := t.Context()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaCert, err := m.ca.SignClient(senderMB, &rsaKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	ecCert, ecKey, err := m.ca.IssueClient(senderMB)
	if err != nil {
		t.Fatal(err)
	}
	pkcs1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)})

	good := []struct {
		name string
		opts mesh.TLSOptions
	}{
		{"encrypted PKCS#8 RSA made in Go", mesh.TLSOptions{CertificatePEM: rsaCert, PrivateKeyPEM: encryptedPKCS8(t, rsaKey, "s3cret pass"), PrivateKeyPassphrase: "s3cret pass"}},
		{"PKCS#1 RSA", mesh.TLSOptions{CertificatePEM: rsaCert, PrivateKeyPEM: pkcs1}},
		{"PKCS#8 ECDSA", mesh.TLSOptions{CertificatePEM: ecCert, PrivateKeyPEM: ecKey}},
	}
	if path, err := exec.LookPath("openssl"); err == nil {
		dir := t.TempDir()
		keyFile := filepath.Join(dir, "client.key")
		const pass = "openssl-pass"
		if out, err := exec.Command(path, "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
			"-aes256", "-pass", "pass:"+pass, "-out", keyFile).CombinedOutput(); err != nil {
			t.Fatalf("openssl genpkey: %v\n%s", err, out)
		}
		pubPEM, err := exec.Command(path, "pkey", "-in", keyFile, "-passin", "pass:"+pass, "-pubout").Output()
		if err != nil {
			t.Fatalf("openssl pkey -pubout: %v", err)
		}
		block, _ := pem.Decode(pubPEM)
		pub, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		cert, err := m.ca.SignClient(senderMB, pub)
		if err != nil {
			t.Fatal(err)
		}
		keyPEM, _ := os.ReadFile(keyFile)
		if !bytes.Contains(keyPEM, []byte("ENCRYPTED PRIVATE KEY")) {
			t.Fatalf("openssl did not make an encrypted PKCS#8 key:\n%s", keyPEM[:60])
		}
		good = append(good, struct {
			name string
			opts mesh.TLSOptions
		}{"encrypted PKCS#8 from openssl genpkey -aes256", mesh.TLSOptions{CertificatePEM: cert, PrivateKeyPEM: keyPEM, PrivateKeyPassphrase: pass}})
	} else {
		t.Log("openssl not on PATH: the openssl-made key case is skipped")
	}
	for _, tc := range good {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.CABundlePEM = m.ca.CertPEM()
			c, err := m.client(t, tc.opts, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Handshake(ctx); err != nil {
				t.Fatalf("handshake over mTLS: %v", err)
			}
			if _, err := c.Send(ctx, mesh.OutboundMessage{To: receiverMB, WorkflowID: workflow, Compress: true, Body: strings.NewReader("over mTLS")}); err != nil {
				t.Fatalf("send over mTLS: %v", err)
			}
		})
	}

	t.Run("rejected without a client certificate", func(t *testing.T) {
		before := m.sb.Requests("handshake")
		c, err := m.client(t, mesh.TLSOptions{CABundlePEM: m.ca.CertPEM()}, nil)
		if err != nil {
			t.Fatal(err)
		}
		err = c.Handshake(ctx)
		if err == nil {
			t.Fatal("handshake without a client certificate succeeded")
		}
		t.Logf("refused as: %v", err)
		if !mesh.IsPermanent(err) {
			t.Errorf("err %v: want permanent (retrying cannot add a certificate)", err)
		}
		if got := m.sb.Requests("handshake") - before; got != 0 {
			t.Errorf("sandbox handled %d requests from a client without a certificate", got)
		}
	})

	t.Run("rejected with a certificate from another CA", func(t *testing.T) {
		other, err := meshsandbox.NewCA()
		if err != nil {
			t.Fatal(err)
		}
		cert, key, err := other.IssueClient(senderMB)
		if err != nil {
			t.Fatal(err)
		}
		c, err := m.client(t, mesh.TLSOptions{CertificatePEM: cert, PrivateKeyPEM: key, CABundlePEM: m.ca.CertPEM()}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Handshake(ctx); err == nil || !mesh.IsPermanent(err) {
			t.Fatalf("handshake with a foreign certificate: %v", err)
		}
	})

	t.Run("server not trusted without the CA bundle", func(t *testing.T) {
		c, err := m.client(t, mesh.TLSOptions{CertificatePEM: ecCert, PrivateKeyPEM: ecKey}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Handshake(ctx); err == nil || !mesh.IsPermanent(err) {
			t.Fatalf("handshake with an unknown server CA: %v", err)
		}
	})

	t.Run("verification disabled works and says so", func(t *testing.T) {
		var log bytes.Buffer
		c, err := m.client(t, mesh.TLSOptions{CertificatePEM: ecCert, PrivateKeyPEM: ecKey, InsecureSkipVerify: true}, &log)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(log.String(), "level=WARN") || !strings.Contains(log.String(), "verification is DISABLED") {
			t.Fatalf("no WARN about disabled verification; log: %s", log.String())
		}
		if err := c.Handshake(ctx); err != nil {
			t.Fatal(err)
		}
	})
}

func TestTLSConfigRejectsBadKeys(t *testing.T) {
	ca, err := meshsandbox.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := ca.SignClient(senderMB, &key.PublicKey)
	otherCert, _, _ := ca.IssueClient(senderMB)
	enc := encryptedPKCS8(t, key, "right")
	cases := map[string]mesh.TLSOptions{
		"wrong passphrase":        {CertificatePEM: cert, PrivateKeyPEM: enc, PrivateKeyPassphrase: "wrong"},
		"missing passphrase":      {CertificatePEM: cert, PrivateKeyPEM: enc},
		"key does not match cert": {CertificatePEM: otherCert, PrivateKeyPEM: enc, PrivateKeyPassphrase: "right"},
		"cert without key":        {CertificatePEM: cert},
		"key without cert":        {PrivateKeyPEM: enc, PrivateKeyPassphrase: "right"},
		"not PEM":                 {CertificatePEM: cert, PrivateKeyPEM: []byte("garbage")},
		"CA bundle not PEM":       {CABundlePEM: []byte("garbage")},
	}
	for name, o := range cases {
		if _, err := mesh.TLSConfig(o); err == nil {
			t.Errorf("%s: accepted", name)
		} else if strings.Contains(err.Error(), "right") {
			t.Errorf("%s: error text contains the passphrase: %v", name, err)
		}
	}
	if _, err := mesh.TLSConfig(mesh.TLSOptions{CertificatePEM: cert, PrivateKeyPEM: enc, PrivateKeyPassphrase: "right"}); err != nil {
		t.Fatalf("good key refused: %v", err)
	}
}
