package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// TestNATSAuthFiles: NATS_CREDS, NATS_CA_FILE, NATS_CERT_FILE and NATS_KEY_FILE are read and parsed at
// start, and every mistake names its variable.
func TestNATSAuthFiles(t *testing.T) {
	dir := t.TempDir()
	file := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	certPEM, keyPEM := selfSigned(t)
	_, otherKeyPEM := selfSigned(t)
	cert, key, otherKey := file("cert.pem", certPEM), file("key.pem", keyPEM), file("other-key.pem", otherKeyPEM)
	notPEM := file("not.pem", []byte("hello"))
	creds := file("user.creds", userCreds(t))

	tests := []struct {
		name    string
		env     map[string]string
		wantVar string // empty: loads
	}{
		{"all set and right", map[string]string{"NATS_CREDS": creds, "NATS_CA_FILE": cert, "NATS_CERT_FILE": cert, "NATS_KEY_FILE": key}, ""},
		{"CA only", map[string]string{"NATS_CA_FILE": cert}, ""},
		{"creds missing", map[string]string{"NATS_CREDS": filepath.Join(dir, "missing")}, "NATS_CREDS"},
		{"creds not a creds file", map[string]string{"NATS_CREDS": cert}, "NATS_CREDS"},
		{"CA missing", map[string]string{"NATS_CA_FILE": filepath.Join(dir, "missing")}, "NATS_CA_FILE"},
		{"CA not PEM", map[string]string{"NATS_CA_FILE": notPEM}, "NATS_CA_FILE"},
		{"certificate without key", map[string]string{"NATS_CERT_FILE": cert}, "NATS_KEY_FILE"},
		{"key without certificate", map[string]string{"NATS_KEY_FILE": key}, "NATS_CERT_FILE"},
		{"certificate not PEM", map[string]string{"NATS_CERT_FILE": notPEM, "NATS_KEY_FILE": key}, "NATS_CERT_FILE"},
		{"key of another certificate", map[string]string{"NATS_CERT_FILE": cert, "NATS_KEY_FILE": otherKey}, "NATS_KEY_FILE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearEnv(t)
			t.Setenv("DPS_SENDER_ODS_CODE", "X26SBX")
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			for _, load := range []func() error{loadProducer, loadSender, loadTracker} {
				err := load()
				if tt.wantVar == "" {
					if err != nil {
						t.Fatal(err)
					}
					continue
				}
				var ce *Error
				if !errors.As(err, &ce) || ce.Var != tt.wantVar {
					t.Fatalf("got %v, want an error naming %s", err, tt.wantVar)
				}
			}
		})
	}
}

func selfSigned(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "nats test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

// userCreds is a credentials file as `nsc` writes one: a user JWT signed by an account, and the seed.
func userCreds(t *testing.T) []byte {
	t.Helper()
	account, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	user, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := user.PublicKey()
	seed, _ := user.Seed()
	token, err := jwt.NewUserClaims(pub).Encode(account)
	if err != nil {
		t.Fatal(err)
	}
	b, err := jwt.FormatUserConfig(token, seed)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
