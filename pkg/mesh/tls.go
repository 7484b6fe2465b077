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

// TLSPart names the piece of TLS material a TLSError is about, so that the caller can name the
// setting that holds it.
type TLSPart int

// The parts of TLSOptions.
const (
	PartCertificate TLSPart = iota + 1
	PartPrivateKey
	PartPassphrase
	PartCABundle
)

// TLSError is a problem with one piece of the TLS material.
type TLSError struct {
	Part TLSPart
	Err  error
}

func (e *TLSError) Error() string { return e.Err.Error() }
func (e *TLSError) Unwrap() error { return e.Err }

func tlsError(part TLSPart, err error) error { return &TLSError{Part: part, Err: err} }

// TLSConfig builds the client TLS configuration for MESH. Every error is a *TLSError naming the part
// at fault: an unusable CA bundle, certificate or key, or a wrong or missing passphrase.
func TLSConfig(o TLSOptions) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: o.InsecureSkipVerify} //nolint:gosec // opt-in, logged by New
	if len(o.CABundlePEM) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(o.CABundlePEM) {
			return nil, tlsError(PartCABundle, errors.New("mesh tls: CA bundle contains no PEM certificate"))
		}
		tc.RootCAs = pool
	}
	switch {
	case len(o.CertificatePEM) == 0 && len(o.PrivateKeyPEM) == 0:
		return tc, nil
	case len(o.CertificatePEM) == 0:
		return nil, tlsError(PartCertificate, errors.New("mesh tls: private key given without a certificate"))
	case len(o.PrivateKeyPEM) == 0:
		return nil, tlsError(PartPrivateKey, errors.New("mesh tls: certificate given without a private key"))
	}
	if err := checkCertificate(o.CertificatePEM); err != nil {
		return nil, tlsError(PartCertificate, err)
	}
	key, err := parsePrivateKey(o.PrivateKeyPEM, o.PrivateKeyPassphrase)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, tlsError(PartPrivateKey, fmt.Errorf("mesh tls: private key: %w", err))
	}
	// X509KeyPair checks that the key matches the certificate, which is the mistake operators make;
	// the certificate itself parsed above, so what is wrong here is the key.
	cert, err := tls.X509KeyPair(o.CertificatePEM, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	if err != nil {
		return nil, tlsError(PartPrivateKey, fmt.Errorf("mesh tls: the private key does not go with the certificate: %w", err))
	}
	tc.Certificates = []tls.Certificate{cert}
	return tc, nil
}

// checkCertificate checks that data starts with a parsable PEM certificate.
func checkCertificate(data []byte) error {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return errors.New("mesh tls: no PEM certificate found")
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return fmt.Errorf("mesh tls: certificate: %w", err)
		}
		return nil
	}
}

// parsePrivateKey finds the first private key block in data and decodes it. Errors are *TLSError: a
// missing or wrong passphrase is PartPassphrase, anything else PartPrivateKey.
func parsePrivateKey(data []byte, passphrase string) (crypto.PrivateKey, error) {
	key, err := decodePrivateKey(data, passphrase)
	if err != nil {
		var te *TLSError
		if !errors.As(err, &te) {
			err = tlsError(PartPrivateKey, err)
		}
		return nil, err
	}
	return key, nil
}

func decodePrivateKey(data []byte, passphrase string) (crypto.PrivateKey, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("mesh tls: no PEM private key found")
		}
		switch block.Type {
		case "ENCRYPTED PRIVATE KEY":
			if passphrase == "" {
				return nil, tlsError(PartPassphrase, errors.New("mesh tls: private key is encrypted and no passphrase was given"))
			}
			key, err := pkcs8.ParsePKCS8PrivateKey(block.Bytes, []byte(passphrase))
			if err != nil {
				return nil, tlsError(PartPassphrase, fmt.Errorf("mesh tls: decrypt private key (wrong passphrase?): %w", err))
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
