// Package process holds the start-up and shut-down every main package shares: signals, the logger,
// connections to Postgres and NATS with the schema and topology in place, the MESH client, exit codes,
// subcommand dispatch, a service's life around its work (health server, outbox relay, drain, flush),
// the shape of the replay commands, and test failpoints. It holds no business logic.
package process

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/config"
	"github.com/nhs-dps/dps-pipeline/pkg/failpoint"
	"github.com/nhs-dps/dps-pipeline/pkg/health"
	"github.com/nhs-dps/dps-pipeline/pkg/logging"
	"github.com/nhs-dps/dps-pipeline/pkg/mesh"
	"github.com/nhs-dps/dps-pipeline/pkg/meshwatch"
	"github.com/nhs-dps/dps-pipeline/pkg/store"
)

// Exit codes shared by every command.
const (
	ExitOK        = 0
	ExitFailure   = 1
	ExitUsage     = 2
	ExitFailpoint = failpoint.ExitCode
)

// UsageError is a command-line mistake; it exits 2.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// Usagef builds a UsageError.
func Usagef(format string, args ...any) error { return &UsageError{Msg: fmt.Sprintf(format, args...)} }

// SignalContext is cancelled on SIGINT or SIGTERM, which starts a graceful drain.
func SignalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// NewLogger builds the process logger from LOG_LEVEL and LOG_FORMAT and makes it slog's default, so
// that what libraries log through slog.Default (NATS connection events) has the same format and passes
// through the same redaction.
func NewLogger(cfg config.Shared, w io.Writer) (*slog.Logger, error) {
	level, err := logging.ParseLevel(cfg.LogLevel)
	if err != nil {
		return nil, &config.Error{Var: "LOG_LEVEL", Problem: err.Error()}
	}
	log, err := logging.New(w, level, cfg.LogFormat)
	if err != nil {
		return nil, &config.Error{Var: "LOG_FORMAT", Problem: err.Error()}
	}
	slog.SetDefault(log)
	return log, nil
}

// ExitCode maps an error from run to the process's exit status.
func ExitCode(err error) int {
	var ce *config.Error
	var ue *UsageError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ce), errors.As(err, &ue):
		return ExitUsage
	}
	return ExitFailure
}

// Fatal prints err as one line on w (scrubbed of secrets) and returns its exit code.
func Fatal(w io.Writer, name string, err error) int {
	if err == nil {
		return ExitOK
	}
	var ce *config.Error
	prefix := name + ": "
	if errors.As(err, &ce) {
		prefix += "configuration: "
	}
	fmt.Fprintln(w, prefix+logging.ScrubString(strings.ReplaceAll(err.Error(), "\n", " ")))
	return ExitCode(err)
}

// Deps are the connections a service holds for its whole life.
type Deps struct {
	NC   *nats.Conn
	JS   jetstream.JetStream
	Pool *pgxpool.Pool

	certWarner *meshwatch.Warner // set by OpenWithMESH; run by Service.Run
}

// Open makes sure the database exists and is migrated, connects to it and to NATS, and creates or
// updates the streams, consumers and bucket. Any process may be the first to start.
func Open(ctx context.Context, log *slog.Logger, cfg config.Shared, name string) (*Deps, error) {
	if err := store.EnsureDatabase(ctx, cfg.DatabaseURL); err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	if err := store.Migrate(ctx, cfg.DatabaseURL); err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	pool, err := store.Connect(ctx, cfg.DatabaseURL)
	if err != nil {
		return nil, err
	}
	nc, js, err := bus.Connect(ctx, cfg.NATSURL, cfg.NATSCreds, name)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("nats: %w", err)
	}
	if err := bus.EnsureTopology(ctx, js, bus.WithReplicas(cfg.StreamReplicas)); err != nil {
		nc.Close()
		pool.Close()
		return nil, fmt.Errorf("nats topology: %w", err)
	}
	log.Info("connected", slog.String("nats", nc.ConnectedUrlRedacted()), slog.Int("stream_replicas", cfg.StreamReplicas))
	return &Deps{NC: nc, JS: js, Pool: pool}, nil
}

// Close drains NATS (finishing in-flight acks) and closes the pool.
func (d *Deps) Close() {
	if d.NC != nil {
		_ = d.NC.Drain()
	}
	if d.Pool != nil {
		d.Pool.Close()
	}
}

// Checks are the health probes for NATS and Postgres.
func (d *Deps) Checks() []health.Check {
	return []health.Check{
		{Name: "nats", Probe: func(ctx context.Context) error {
			if !d.NC.IsConnected() {
				return fmt.Errorf("not connected (%s)", d.NC.Status())
			}
			_, err := d.JS.AccountInfo(ctx)
			return err
		}},
		{Name: "postgres", Probe: func(ctx context.Context) error { return d.Pool.Ping(ctx) }},
	}
}

// MESHOption adjusts the MESH client NewMESHClient builds.
type MESHOption func(*mesh.Config)

// WithMESHErrors hands every failed MESH attempt to f, for metrics.
func WithMESHErrors(f func(*mesh.Error)) MESHOption {
	return func(c *mesh.Config) { c.OnError = f }
}

// NewMESHClient builds the MESH client from the MESH_* settings; mesh.New itself logs the WARN when
// MESH_DISABLE_SSL_VERIFICATION turns server verification off. Certificate, key and CA bundle may be
// given as PEM text or as a path to a PEM file.
func NewMESHClient(cfg config.MESH, log *slog.Logger, opts ...MESHOption) (*mesh.Client, error) {
	certPEM, err := pemOrFile("MESH_CERTIFICATE", cfg.Certificate)
	if err != nil {
		return nil, err
	}
	keyPEM, err := pemOrFile("MESH_PRIVATE_KEY", cfg.PrivateKey)
	if err != nil {
		return nil, err
	}
	caPEM, err := pemOrFile("MESH_CA_BUNDLE", cfg.CABundle)
	if err != nil {
		return nil, err
	}
	tlsConfig, err := mesh.TLSConfig(mesh.TLSOptions{
		CertificatePEM:       certPEM,
		PrivateKeyPEM:        keyPEM,
		PrivateKeyPassphrase: cfg.PrivateKeyPassphrase,
		CABundlePEM:          caPEM,
		InsecureSkipVerify:   cfg.DisableSSLVerification,
	})
	if err != nil {
		return nil, &config.Error{Var: "MESH_CERTIFICATE", Problem: err.Error()}
	}
	mc := mesh.Config{
		BaseURL:     cfg.BaseURL,
		Mailbox:     cfg.Mailbox,
		Password:    cfg.Password,
		SharedKey:   cfg.SharedKey,
		TLS:         tlsConfig,
		ChunkSize:   cfg.ChunkSize,
		RetryBudget: cfg.RetryBudget,
		Logger:      log,
	}
	for _, o := range opts {
		o(&mc)
	}
	return mesh.New(mc)
}

// MESHCertificates reads the client certificate and the CA bundle of the MESH_* settings, for the
// expiry warnings and metrics.
func MESHCertificates(cfg config.MESH) (meshwatch.Certificates, error) {
	var certs meshwatch.Certificates
	certPEM, err := pemOrFile("MESH_CERTIFICATE", cfg.Certificate)
	if err != nil {
		return certs, err
	}
	client, err := meshwatch.ParseCertificates(certPEM)
	if err != nil {
		return certs, &config.Error{Var: "MESH_CERTIFICATE", Problem: err.Error()}
	}
	if len(client) > 0 {
		certs.Client = client[0]
	}
	caPEM, err := pemOrFile("MESH_CA_BUNDLE", cfg.CABundle)
	if err != nil {
		return certs, err
	}
	if certs.CABundle, err = meshwatch.ParseCertificates(caPEM); err != nil {
		return certs, &config.Error{Var: "MESH_CA_BUNDLE", Problem: err.Error()}
	}
	return certs, nil
}

func pemOrFile(name, v string) ([]byte, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return nil, nil
	}
	if strings.HasPrefix(v, "-----BEGIN") {
		return []byte(v), nil
	}
	b, err := os.ReadFile(v)
	if err != nil {
		return nil, &config.Error{Var: name, Problem: "is neither PEM text nor a readable file"}
	}
	return b, nil
}
