package mesh

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/youmark/pkcs8"
)

// TLSOptions are the PEM materials for MESH's mutual TLS, as read from MESH_CERTIFICATE,
// MESH_PRIVATE_KEY, MESH_PRIVATE_KEY_PASSPHRASE and MESH_CA_BUNDLE.
type TLSOptions struct {
	// CertificatePEM is the mailbox's client certificate, optionally followed by intermediates.
	CertificatePEM []byte
	// PrivateKeyPEM is PKCS#1 ("RSA PRIVATE KEY"), SEC 1 ("EC PRIVATE KEY"), PKCS#8 ("PRIVATE KEY") or
	// encrypted PKCS#8 ("ENCRYPTED PRIVATE KEY", as from openssl genpkey -aes256).
	PrivateKeyPEM []byte
	// PrivateKeyPassphrase decrypts an encrypted PKCS#8 key.
	PrivateKeyPassphrase string
	// CABundlePEM replaces the system roots when set.
	CABundlePEM []byte
	// InsecureSkipVerify turns off server verification (MESH_DISABLE_SSL_VERIFICATION); New logs a WARN.
	InsecureSkipVerify bool
}

// TLSConfig builds the client TLS configuration for MESH.
func TLSConfig(o TLSOptions) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: o.InsecureSkipVerify} //nolint:gosec // opt-in, logged by New
	if len(o.CABundlePEM) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(o.CABundlePEM) {
			return nil, errors.New("mesh tls: CA bundle contains no PEM certificate")
		}
		tc.RootCAs = pool
	}
	switch {
	case len(o.CertificatePEM) == 0 && len(o.PrivateKeyPEM) == 0:
		return tc, nil
	case len(o.CertificatePEM) == 0:
		return nil, errors.New("mesh tls: private key given without a certificate")
	case len(o.PrivateKeyPEM) == 0:
		return nil, errors.New("mesh tls: certificate given without a private key")
	}
	key, err := parsePrivateKey(o.PrivateKeyPEM, o.PrivateKeyPassphrase)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("mesh tls: private key: %w", err)
	}
	// X509KeyPair checks that the key matches the certificate, which is the mistake operators make.
	cert, err := tls.X509KeyPair(o.CertificatePEM, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	if err != nil {
		return nil, fmt.Errorf("mesh tls: certificate and key: %w", err)
	}
	tc.Certificates = []tls.Certificate{cert}
	return tc, nil
}

// parsePrivateKey finds the first private key block in data and decodes it.
func parsePrivateKey(data []byte, passphrase string) (crypto.PrivateKey, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("mesh tls: no PEM private key found")
		}
		switch block.Type {
		case "ENCRYPTED PRIVATE KEY":
			if passphrase == "" {
				return nil, errors.New("mesh tls: private key is encrypted and no passphrase was given")
			}
			key, err := pkcs8.ParsePKCS8PrivateKey(block.Bytes, []byte(passphrase))
			if err != nil {
				return nil, fmt.Errorf("mesh tls: decrypt private key (wrong passphrase?): %w", err)
			}
			return key, nil
		case "PRIVATE KEY":
			key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("mesh tls: PKCS#8 private key: %w", err)
			}
			return key, nil
		case "RSA PRIVATE KEY":
			if _, ok := block.Headers["DEK-Info"]; ok {
				return nil, errors.New("mesh tls: legacy PEM-encrypted RSA key is not supported; " +
					"convert it with: openssl pkcs8 -topk8 -v2 aes256 -in old.key -out new.key")
			}
			key, err := x509.ParsePKCS1PrivateKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("mesh tls: PKCS#1 private key: %w", err)
			}
			return key, nil
		case "EC PRIVATE KEY":
			key, err := x509.ParseECPrivateKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("mesh tls: EC private key: %w", err)
			}
			return key, nil
		}
	}
}
