// Package process holds the start-up and shut-down every main package shares beyond pkg/cli's command
// framework: connections to Postgres and NATS with the schema and topology in place, the MESH client,
// a service's life around its work (health server, outbox relay, drain, flush), and the service,
// MESH-operator and replay commands built on cli.Spec. It holds no business logic.
package process

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/config"
	"github.com/nhs-dps/dps-pipeline/pkg/health"
	"github.com/nhs-dps/dps-pipeline/pkg/mesh"
	"github.com/nhs-dps/dps-pipeline/pkg/meshwatch"
	"github.com/nhs-dps/dps-pipeline/pkg/store"
)

// Deps are the connections a service holds for its whole life.
type Deps struct {
	NC   *nats.Conn
	JS   jetstream.JetStream
	Pool *pgxpool.Pool

	certWarner *meshwatch.Warner // set by OpenWithMESH; run by Service.Run

	// NATS is what the process waits for from NATS while it starts, for the nats health check.
	NATS *bus.Status
	// Retry is how the process waits for NATS: WARN lines on its logger, progress on NATS.
	Retry bus.Retry

	mu         sync.Mutex // guards the fields above while Open fills them and a health probe reads them
	health     *health.Server
	stopHealth func() // stops the health server Service.Open started; nil when none
}

// NATSOptions are the connect options of cfg for the client name.
func NATSOptions(cfg config.Shared, name string, log *slog.Logger, status *bus.Status) bus.ConnectOptions {
	return bus.ConnectOptions{
		URL: cfg.NATSURL, Name: name, Creds: cfg.NATSCreds,
		CAFile: cfg.NATSCAFile, CertFile: cfg.NATSCertFile, KeyFile: cfg.NATSKeyFile,
		Status: status, Log: log,
	}
}

// Open makes sure the database exists and is migrated, and connects to it and to NATS, waiting for
// NATS as long as ctx allows. It declares no streams or consumers: one-shot commands use what the
// services (or `producer topology`) declared. A service uses Service.Open instead.
func Open(ctx context.Context, log *slog.Logger, cfg config.Shared, name string) (*Deps, error) {
	d := newDeps(log)
	if err := d.open(ctx, log, cfg, name, false); err != nil {
		return nil, err
	}
	return d, nil
}

func newDeps(log *slog.Logger) *Deps {
	status := &bus.Status{}
	return &Deps{NATS: status, Retry: bus.Retry{Log: log, Status: status}}
}

// open fills d; with declare it also creates or updates the streams, consumers and bucket, waiting
// while NATS is slow, electing or away. On error everything opened is closed again.
func (d *Deps) open(ctx context.Context, log *slog.Logger, cfg config.Shared, name string, declare bool) error {
	// The database must exist: a service never creates one, so that a mistyped name fails here
	// instead of becoming a new, empty database that exports nothing.
	pool, err := store.Connect(ctx, cfg.DatabaseURL)
	if err != nil {
		return DatabaseError(err)
	}
	if err := store.MigratePool(ctx, pool); err != nil {
		pool.Close()
		return DatabaseError(fmt.Errorf("migrate: %w", err))
	}
	d.mu.Lock()
	d.Pool = pool
	d.mu.Unlock()
	nc, js, err := bus.Connect(ctx, NATSOptions(cfg, name, log, d.NATS))
	if err != nil {
		d.closeConns()
		return fmt.Errorf("nats: %w", err)
	}
	d.mu.Lock()
	d.NC, d.JS = nc, js
	d.mu.Unlock()
	if declare {
		// Not healthy until every stream, consumer and the bucket is there.
		d.NATS.Waiting("the streams, consumers and bucket to be declared", nil)
		changes, err := bus.DeclareTopology(ctx, js, bus.NewTopology(bus.WithReplicas(cfg.StreamReplicas)), d.Retry, false)
		if err != nil {
			d.closeConns()
			return fmt.Errorf("nats topology: %w", err)
		}
		d.NATS.Ready()
		for _, c := range changes {
			if c.Action != bus.ActionUnchanged {
				log.Info("nats topology: "+c.String(), slog.String("kind", c.Kind), slog.String("name", c.Name), slog.String("action", string(c.Action)))
			}
		}
	}
	log.Info("connected", slog.String("nats", nc.ConnectedUrlRedacted()), slog.Int("stream_replicas", cfg.StreamReplicas))
	return nil
}

// DatabaseError turns a database that does not exist into a configuration error naming DATABASE_URL
// (exit 2) and says how to create it; other errors are returned as they are.
func DatabaseError(err error) error {
	var missing *store.MissingDatabaseError
	if errors.As(err, &missing) {
		return &config.Error{Var: "DATABASE_URL", Problem: fmt.Sprintf(
			"names database %q, which does not exist at %s; services do not create databases: check the name, or create it with `producer migrate --create-database`",
			missing.Database, missing.Where)}
	}
	return err
}

// Close drains NATS (finishing in-flight acks) and closes the pool.
func (d *Deps) closeConns() {
	d.mu.Lock()
	nc, pool := d.NC, d.Pool
	d.mu.Unlock()
	if nc != nil {
		_ = nc.Drain()
	}
	if pool != nil {
		pool.Close()
	}
}

// Close drains NATS (finishing in-flight acks), closes the pool and stops the health server.
func (d *Deps) Close() {
	d.closeConns()
	if d.stopHealth != nil {
		d.stopHealth()
	}
}

// Checks are the health probes for NATS and Postgres. While the process is still connecting, or
// waiting for a stream or consumer, the nats probe says what it waits for.
func (d *Deps) Checks() []health.Check {
	return []health.Check{
		{Name: "nats", Probe: func(ctx context.Context) error {
			if err := d.NATS.Err(); err != nil {
				return err
			}
			d.mu.Lock()
			nc, js := d.NC, d.JS
			d.mu.Unlock()
			if nc == nil {
				return errors.New("not connected yet")
			}
			if !nc.IsConnected() {
				return fmt.Errorf("not connected (%s)", nc.Status())
			}
			_, err := js.AccountInfo(ctx)
			return err
		}},
		{Name: "postgres", Probe: func(ctx context.Context) error {
			d.mu.Lock()
			pool := d.Pool
			d.mu.Unlock()
			if pool == nil {
				return errors.New("not connected yet")
			}
			return pool.Ping(ctx)
		}},
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
	tlsConfig, err := MESHTLSConfig(cfg)
	if err != nil {
		return nil, err
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

// MESHTLSConfig reads and checks the TLS material of the MESH_* settings. An error is a *config.Error
// naming the variable at fault: MESH_CERTIFICATE, MESH_PRIVATE_KEY, MESH_PRIVATE_KEY_PASSPHRASE or
// MESH_CA_BUNDLE.
func MESHTLSConfig(cfg config.MESH) (*tls.Config, error) {
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
		name := "MESH_CERTIFICATE"
		var te *mesh.TLSError
		if errors.As(err, &te) {
			switch te.Part {
			case mesh.PartPrivateKey:
				name = "MESH_PRIVATE_KEY"
			case mesh.PartPassphrase:
				name = "MESH_PRIVATE_KEY_PASSPHRASE"
			case mesh.PartCABundle:
				name = "MESH_CA_BUNDLE"
			}
		}
		return nil, &config.Error{Var: name, Problem: err.Error()}
	}
	return tlsConfig, nil
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
