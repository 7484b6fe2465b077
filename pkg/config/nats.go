package config

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"

	"github.com/nats-io/nkeys"
)

// validateNATSAuth checks the NATS credentials file and TLS files at start, as NATS would use them, so
// that a wrong path or a key that does not match its certificate stops the process with exit code 2
// instead of looking, forever, like NATS being down.
func (s Shared) validateNATSAuth() error {
	if s.NATSCreds != "" {
		b, err := os.ReadFile(s.NATSCreds)
		if err != nil {
			return &Error{Var: "NATS_CREDS", Problem: "file cannot be read"}
		}
		// A credentials file holds the user JWT and the user's nkey seed, each between decorated lines.
		if _, err := nkeys.ParseDecoratedJWT(b); err != nil {
			return &Error{Var: "NATS_CREDS", Problem: "is not a NATS credentials file (no user JWT in it)"}
		}
		if _, err := nkeys.ParseDecoratedNKey(b); err != nil {
			return &Error{Var: "NATS_CREDS", Problem: "is not a NATS credentials file (no user nkey seed in it)"}
		}
	}
	if s.NATSCAFile != "" {
		b, err := os.ReadFile(s.NATSCAFile)
		if err != nil {
			return &Error{Var: "NATS_CA_FILE", Problem: "file cannot be read"}
		}
		if !x509.NewCertPool().AppendCertsFromPEM(b) {
			return &Error{Var: "NATS_CA_FILE", Problem: "holds no PEM certificate"}
		}
	}
	switch {
	case s.NATSCertFile != "" && s.NATSKeyFile == "":
		return &Error{Var: "NATS_KEY_FILE", Problem: "must be set when NATS_CERT_FILE is"}
	case s.NATSCertFile == "" && s.NATSKeyFile != "":
		return &Error{Var: "NATS_CERT_FILE", Problem: "must be set when NATS_KEY_FILE is"}
	case s.NATSCertFile != "":
		certPEM, err := os.ReadFile(s.NATSCertFile)
		if err != nil {
			return &Error{Var: "NATS_CERT_FILE", Problem: "file cannot be read"}
		}
		if block, _ := pem.Decode(certPEM); block == nil || block.Type != "CERTIFICATE" {
			return &Error{Var: "NATS_CERT_FILE", Problem: "holds no PEM certificate"}
		}
		keyPEM, err := os.ReadFile(s.NATSKeyFile)
		if err != nil {
			return &Error{Var: "NATS_KEY_FILE", Problem: "file cannot be read"}
		}
		// The key must be the certificate's: NATS would refuse the pair only at the handshake.
		if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
			return &Error{Var: "NATS_KEY_FILE", Problem: "is not the PEM private key of NATS_CERT_FILE's certificate"}
		}
	}
	return nil
}

// NATSTLS reports whether TLS to NATS is configured by file: a CA or a client certificate. (A tls://
// URL asks for TLS with the system roots on its own.)
func (s Shared) NATSTLS() bool { return s.NATSCAFile != "" || s.NATSCertFile != "" }
