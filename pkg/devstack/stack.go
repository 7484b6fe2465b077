package main

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nhs-dps/dps-pipeline/pkg/demodata"
	"github.com/nhs-dps/dps-pipeline/pkg/meshsandbox"
	"github.com/nhs-dps/dps-pipeline/pkg/natsserver"
	"github.com/nhs-dps/dps-pipeline/pkg/store"
)

// Config says what the stack runs. The zero value is not useful: parseFlags and the tests fill it.
type Config struct {
	// Once makes run return when every export is acknowledged, or at the first sign one will not be.
	Once bool
	// Timeout bounds a --once run.
	Timeout time.Duration
	// DataDir keeps the NATS store; empty means a temporary directory.
	DataDir string
	// Records is how many vaccination records to seed; Seed picks the random stream.
	Records int
	Seed    int64
	// Senders is how many sender processes to start.
	Senders int
	// DatabaseURL is the database the pipeline uses. RecreateDatabase drops and creates it first.
	DatabaseURL      string
	RecreateDatabase bool
	// NATSPort is the embedded server's client port; 0 picks a free one.
	NATSPort int
	// NATSCluster, when 3 or 5, runs that many real nats-server processes as one JetStream cluster
	// with the users of pkg/natsserver/conf/permissions.conf and streams replicated three times, instead of the
	// embedded server.
	NATSCluster int
	// KillNode, with NATSCluster, SIGKILLs the node leading DPS_BATCHES once batches are in flight,
	// and starts it again KillNodeDown later.
	KillNode     bool
	KillNodeDown time.Duration
	// ColdCluster, with NATSCluster, starts the children while only one node runs (no meta leader, no
	// quorum), checks that they wait saying 503 "nats", then starts the other nodes.
	ColdCluster bool
	// LogLevel is the children's LOG_LEVEL.
	LogLevel string
	// MESH, when its URL is set, is the sandbox to use instead of starting ours.
	MESH ExternalMESH
	// NoReceiver turns the DPS player's receiver mode off: it then only downloads and acknowledges, and
	// exports end acknowledged rather than processed.
	NoReceiver bool
	// Receiver, for tests, makes the DPS player refuse rows, reject files or leave them uncollected.
	Receiver ReceiverRules
	// BinDir holds the built producer, sender and tracker; empty means a directory under the work dir.
	BinDir string
	// Stdout receives the lifecycle; Stderr the children's logs, each line prefixed with its name.
	Stdout, Stderr io.Writer
}

// ExternalMESH is a MESH sandbox the stack uses instead of starting its own (--mesh-url), such as the
// official NHS one. Both mailboxes must exist there with Password.
type ExternalMESH struct {
	URL        string // http(s)://host:port; empty means start our sandbox
	SharedKey  string
	Password   string // of both mailboxes, as on the official sandbox
	OurMailbox string // the senders send from it
	DPSMailbox string // the devstack plays DPS on it
	CAFile     string // PEM CA bundle for an https URL; empty means the system roots
	Insecure   bool   // skip certificate checks: MESH_DISABLE_SSL_VERIFICATION=true
}

// The mailboxes of the stack: ours sends, the DPS one receives. The ids are the official sandbox's
// test mailboxes, so the same names work against it (compose.yaml).
const (
	ourMailbox    = "X26ABC1"
	dpsMailbox    = "X26ABC2"
	dpsWorkflowID = "DPS_VACCINATIONS"
	// sandboxSenderODS stands for our organisation's ODS code in file names: not a real one, so that
	// no file of the devstack could be taken for a real organisation's.
	sandboxSenderODS = "SANDBOX1"
)

// Stack is a running pipeline: NATS, the MESH sandbox, a database, the child processes, DPS and the
// lifecycle watcher.
type Stack struct {
	cfg     Config
	workDir string
	out     *lineWriter // lifecycle lines on cfg.Stdout
	logs    *lockedWriter

	natsMu   sync.Mutex
	natsOpts server.Options
	natsSrv  *server.Server
	natsURL  string
	cluster  *natsserver.Cluster // with --nats-cluster, instead of natsSrv
	natsUser map[string]string   // with a cluster: user → password of pkg/natsserver/conf/permissions.conf

	nc   *nats.Conn
	js   jetstream.JetStream
	pool *pgxpool.Pool

	sharedKey    string
	ourPassword  string
	dpsPassword  string
	ourMailbox   string
	dpsMailbox   string
	meshURL      string
	caFile       string // empty: the system roots (or plain http)
	certFile     string // our mailbox's client certificate and key (PEM files); empty: none (external MESH)
	keyFile      string
	dpsCertPEM   []byte // the DPS mailbox's client certificate and key, for the DPS player
	dpsKeyPEM    []byte
	meshInsecure bool // MESH_DISABLE_SSL_VERIFICATION=true for the children and DPS
	external     bool // the sandbox is not ours: nothing to start or stop, no admin API
	sandbox      *meshsandbox.Server
	meshServer   *http.Server

	env      []string // the children's environment (ours only, without the inherited part)
	binDir   string
	children []*child
	exited   chan childExit

	board    *board
	dps      *dpsPlayer
	bg       sync.WaitGroup
	bgCancel context.CancelFunc
	seeded   demodata.Summary
	closed   sync.Once
}

// errNoPostgres is returned, as its one-line message, when nothing answers at DATABASE_URL.
type errNoPostgres struct{ where string }

func (e *errNoPostgres) Error() string {
	return fmt.Sprintf("no PostgreSQL at %s: start one (docker compose up -d postgres) or set DATABASE_URL", e.where)
}

// start brings the whole stack up: database, NATS, sandbox, binaries, children, DPS and the watcher.
// On error everything already started is stopped again.
func start(ctx context.Context, cfg Config) (_ *Stack, err error) {
	if cfg.Stdout == nil {
		cfg.Stdout = io.Discard
	}
	if cfg.Stderr == nil {
		cfg.Stderr = io.Discard
	}
	if cfg.Senders < 1 {
		cfg.Senders = 1
	}
	if cfg.LogLevel == "" {
		cfg.LogLevel = "info"
	}
	s := &Stack{cfg: cfg, out: &lineWriter{w: cfg.Stdout}, logs: &lockedWriter{w: cfg.Stderr}, exited: make(chan childExit, 16)}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	s.workDir, err = os.MkdirTemp("", "dps-devstack-")
	if err != nil {
		return nil, fmt.Errorf("work directory: %w", err)
	}
	bgCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.bgCancel = cancel

	// Fail fast, before compiling anything, when there is no Postgres: the commonest first-run problem.
	if err := s.checkPostgres(ctx); err != nil {
		return nil, err
	}

	// Build while the rest starts: compiling is the slowest step of a first run.
	type built struct {
		dir string
		err error
	}
	buildCtx, cancelBuild := context.WithCancel(ctx)
	defer cancelBuild()
	buildDone := make(chan built, 1)
	go func() {
		dir := cfg.BinDir
		if dir == "" {
			dir = filepath.Join(s.workDir, "bin")
		}
		buildDone <- built{dir, buildBinaries(buildCtx, dir, cfg.NATSCluster > 0)}
	}()
	var b built
	gotBuild := false
	abandonBuild := func() {
		if !gotBuild {
			cancelBuild()
			<-buildDone
		}
	}

	if err := s.openDatabase(ctx); err != nil {
		abandonBuild()
		return nil, err
	}
	if cfg.NATSCluster > 0 {
		// The nodes are nats-server processes: they need the build.
		s.out.printf("building      nats-server, producer, sender, tracker")
		b, gotBuild = <-buildDone, true
		if b.err != nil {
			return nil, b.err
		}
		if err := s.startCluster(ctx, b.dir); err != nil {
			return nil, err
		}
	} else if err := s.startNATS(); err != nil {
		abandonBuild()
		return nil, err
	}
	if cfg.MESH.URL != "" {
		s.useExternalMESH(cfg.MESH)
	} else if err := s.startSandbox(); err != nil {
		abandonBuild()
		return nil, err
	}
	if s.cluster != nil {
		s.out.printf("NATS          %d-node JetStream cluster %s, streams R%d, users of pkg/natsserver/conf/permissions.conf", cfg.NATSCluster, s.natsURL, s.replicas())
	} else {
		s.out.printf("NATS          %s (store %s)", s.natsURL, s.natsOpts.StoreDir)
	}
	if s.external {
		s.out.printf("MESH          %s, not started by the devstack (mailboxes %s ours, %s DPS; %s)", s.meshURL, s.ourMailbox, s.dpsMailbox, s.meshTLSDescription())
		if s.meshInsecure {
			s.out.printf("MESH          certificate verification OFF: MESH_DISABLE_SSL_VERIFICATION=true for the children and DPS")
		}
	} else {
		s.out.printf("MESH sandbox  %s (mailboxes %s ours, %s DPS; CA %s; mutual TLS, our certificate %s)", s.meshURL, s.ourMailbox, s.dpsMailbox, s.caFile, s.certFile)
	}
	s.out.printf("Postgres      %s", redactURL(cfg.DatabaseURL))

	s.board = newBoard(s.out)
	if s.dps, err = newDPSPlayer(s); err != nil {
		abandonBuild()
		return nil, err
	}
	if s.external {
		// A sandbox that outlives the devstack may hold messages from earlier runs or other tests;
		// they are not this run's, and checking them would fail it. This also proves, before
		// anything is built, that the URL, TLS settings and DPS mailbox credentials work.
		n, err := s.dps.skipExisting(ctx)
		if err != nil {
			abandonBuild()
			return nil, fmt.Errorf("MESH at %s: %w%s", s.meshURL, err, tlsHint(err))
		}
		if n > 0 {
			s.out.printf("DPS           %d messages already in %s before this run: left alone", n, s.dpsMailbox)
		}
	}
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		s.dps.run(bgCtx)
	}()

	if !gotBuild {
		s.out.printf("building      producer, sender, tracker")
		b, gotBuild = <-buildDone, true
		if b.err != nil {
			return nil, b.err
		}
	}
	s.binDir = b.dir
	s.env = s.childEnv()
	if err := s.writeEnvFile(); err != nil {
		return nil, err
	}
	if err := s.startChildren(ctx); err != nil {
		return nil, err
	}
	// The children have declared the streams by now (none is healthy before): the stack follows the
	// events from here, before anything is requested.
	if err := s.connectNATS(); err != nil {
		return nil, err
	}
	if err := s.watchEvents(bgCtx); err != nil {
		return nil, err
	}
	return s, nil
}

// checkPostgres connects to the server's maintenance database, and with RecreateDatabase drops the
// stack's database so that the run starts clean.
func (s *Stack) checkPostgres(ctx context.Context) error {
	cfg, err := pgx.ParseConfig(s.cfg.DatabaseURL)
	if err != nil {
		return fmt.Errorf("DATABASE_URL: %w", err)
	}
	where := fmt.Sprintf("%s:%d", cfg.Host, cfg.Port)
	admin := cfg.Copy()
	admin.Database = "postgres"
	pingCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	conn, err := pgx.ConnectConfig(pingCtx, admin)
	cancel()
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) {
			// The server answered and refused: say what it said, not that it is missing.
			return fmt.Errorf("PostgreSQL at %s: %s (SQLSTATE %s)", where, pgErr.Message, pgErr.Code)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &errNoPostgres{where: where}
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if s.cfg.RecreateDatabase {
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{cfg.Database}.Sanitize()+" WITH (FORCE)"); err != nil {
			return fmt.Errorf("drop database %s: %w", cfg.Database, err)
		}
	}
	return nil
}

// openDatabase creates the database if needed, migrates it and seeds it.
func (s *Stack) openDatabase(ctx context.Context) error {
	var err error
	if err := store.EnsureDatabase(ctx, s.cfg.DatabaseURL); err != nil {
		return err
	}
	if err := store.Migrate(ctx, s.cfg.DatabaseURL); err != nil {
		return err
	}
	if s.pool, err = store.Connect(ctx, s.cfg.DatabaseURL); err != nil {
		return err
	}
	started := time.Now()
	if s.seeded, err = demodata.Seed(ctx, s.pool, demodata.Options{Records: s.cfg.Records, Seed: s.cfg.Seed}); err != nil {
		return err
	}
	s.out.printf("seeded        %d records for %d patients, %d exportable, in %s", s.seeded.Records, s.seeded.Patients, s.seeded.Exportable, time.Since(started).Round(time.Millisecond))
	return nil
}

// startNATS starts the embedded server.
func (s *Stack) startNATS() error {
	opts := natsserver.DefaultOptions()
	opts.ServerName = "devstack"
	opts.Port = s.cfg.NATSPort
	if opts.Port == 0 {
		opts.Port = server.RANDOM_PORT
	}
	opts.StoreDir = filepath.Join(s.workDir, "nats")
	if s.cfg.DataDir != "" {
		opts.StoreDir = filepath.Join(s.cfg.DataDir, "nats")
	}
	if err := os.MkdirAll(opts.StoreDir, 0o700); err != nil {
		return fmt.Errorf("nats store: %w", err)
	}
	srv, err := natsserver.Start(opts)
	if err != nil {
		return fmt.Errorf("start nats: %w", err)
	}
	// Keep the port the server got, so that a restart comes back where the clients look for it.
	if addr, ok := srv.Addr().(*net.TCPAddr); ok {
		opts.Port = addr.Port
	}
	s.natsOpts, s.natsSrv, s.natsURL = *opts, srv, srv.ClientURL()
	return nil
}

// connectNATS connects the stack's own client (as the producer user on a cluster: it follows the
// events and asks for exports).
func (s *Stack) connectNATS() error {
	var err error
	s.nc, err = nats.Connect(s.natsURLFor("producer"), nats.Name("devstack"), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		return fmt.Errorf("connect to nats: %w", err)
	}
	if s.js, err = jetstream.New(s.nc); err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	return nil
}

// RestartNATS stops the embedded server and starts it again on the same port with the same store,
// as an operator restarting NATS would; every client has to reconnect by itself.
func (s *Stack) RestartNATS() error {
	s.natsMu.Lock()
	defer s.natsMu.Unlock()
	s.natsSrv.Shutdown()
	s.natsSrv.WaitForShutdown()
	opts := s.natsOpts
	srv, err := natsserver.Start(&opts)
	if err != nil {
		return fmt.Errorf("restart nats: %w", err)
	}
	s.natsSrv = srv
	s.out.printf("NATS          restarted on %s", s.natsURL)
	return nil
}

// useExternalMESH points the stack at a sandbox somebody else runs (--mesh-url).
func (s *Stack) useExternalMESH(m ExternalMESH) {
	s.external = true
	s.meshURL = strings.TrimRight(m.URL, "/")
	s.sharedKey, s.ourPassword, s.dpsPassword = m.SharedKey, m.Password, m.Password
	s.ourMailbox, s.dpsMailbox = m.OurMailbox, m.DPSMailbox
	s.caFile, s.meshInsecure = m.CAFile, m.Insecure
}

// meshTLSDescription says how the stack talks to an external MESH, for the start-up line.
func (s *Stack) meshTLSDescription() string {
	switch {
	case strings.HasPrefix(s.meshURL, "http://"):
		return "plain HTTP"
	case s.meshInsecure:
		return "TLS, certificate NOT verified"
	case s.caFile != "":
		return "TLS, CA " + s.caFile
	default:
		return "TLS, system CA roots"
	}
}

// tlsHint explains the one certificate failure everybody meets with the official sandbox: its
// entrypoint.sh makes a certificate that names localhost only in the Common Name, and Go accepts
// host names only from the subjectAltName, whatever CA it is given.
func tlsHint(err error) string {
	var hostErr x509.HostnameError
	if errors.As(err, &hostErr) && hostErr.Certificate != nil && len(hostErr.Certificate.DNSNames) == 0 && len(hostErr.Certificate.IPAddresses) == 0 {
		return " (the certificate has no subjectAltName, as the official sandbox's own has not: use --mesh-insecure, or give the sandbox a certificate with one)"
	}
	return ""
}

// startSandbox starts the MESH sandbox over TLS with a fresh CA, shared key and passwords.
func (s *Stack) startSandbox() error {
	s.sharedKey, s.ourPassword, s.dpsPassword = randomSecret(), randomSecret(), randomSecret()
	s.ourMailbox, s.dpsMailbox = ourMailbox, dpsMailbox
	ca, err := meshsandbox.NewCA()
	if err != nil {
		return err
	}
	// Mutual TLS as on live MESH: the sandbox asks for a client certificate signed by its CA, and each
	// mailbox has one (ours in files the children read, DPS's in memory).
	s.sandbox = meshsandbox.New(meshsandbox.Config{
		ClientCAs: ca.Pool(),
		SharedKey: s.sharedKey,
		Mailboxes: []meshsandbox.Mailbox{
			// Ours receives the receiver's acknowledgement files on the same workflow.
			{ID: ourMailbox, Password: s.ourPassword, Workflows: []string{dpsWorkflowID}, Name: "DPS EXPORT (devstack)", ODSCode: "X26", OrgCode: "X26"},
			{ID: dpsMailbox, Password: s.dpsPassword, Workflows: []string{dpsWorkflowID}, Name: "DPS (devstack)", ODSCode: "X26", OrgCode: "X26"},
		},
		// A send with the wrong workflow id fails here as it would on live MESH.
		CheckWorkflows: true,
		Logger:         slog.New(slog.DiscardHandler),
	})
	tlsConfig, err := s.sandbox.TLSConfig(ca, "localhost", "127.0.0.1")
	if err != nil {
		return err
	}
	s.caFile = filepath.Join(s.workDir, "mesh-ca.pem")
	if err := os.WriteFile(s.caFile, ca.CertPEM(), 0o600); err != nil {
		return fmt.Errorf("write mesh ca: %w", err)
	}
	certPEM, keyPEM, err := ca.IssueClient(ourMailbox)
	if err != nil {
		return err
	}
	s.certFile, s.keyFile = filepath.Join(s.workDir, "mesh-client.pem"), filepath.Join(s.workDir, "mesh-client-key.pem")
	for file, data := range map[string][]byte{s.certFile: certPEM, s.keyFile: keyPEM} {
		if err := os.WriteFile(file, data, 0o600); err != nil {
			return fmt.Errorf("write mesh client certificate: %w", err)
		}
	}
	if s.dpsCertPEM, s.dpsKeyPEM, err = ca.IssueClient(dpsMailbox); err != nil {
		return err
	}
	ln, err := s.listenLocal()
	if err != nil {
		return fmt.Errorf("mesh sandbox listen: %w", err)
	}
	s.meshServer = &http.Server{Handler: s.sandbox.Handler(), TLSConfig: tlsConfig, ReadHeaderTimeout: 10 * time.Second,
		// Clients that hang up mid-handshake at shutdown are not worth a line.
		ErrorLog: log.New(io.Discard, "", 0)}
	go func() { _ = s.meshServer.ServeTLS(ln, "", "") }()
	s.meshURL = "https://localhost:" + fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
	return nil
}

// Close stops the children (SIGTERM, then SIGKILL after a grace period), DPS, the watcher, NATS, the
// sandbox and the database pool, and removes the work directory. It is safe on a half-started stack.
func (s *Stack) Close() { s.closed.Do(s.close) }

func (s *Stack) close() {
	s.stopChildren()
	if s.bgCancel != nil {
		s.bgCancel()
	}
	s.bg.Wait()
	if s.nc != nil {
		s.nc.Close()
	}
	s.natsMu.Lock()
	if s.natsSrv != nil {
		s.natsSrv.Shutdown()
		s.natsSrv.WaitForShutdown()
	}
	if s.cluster != nil {
		s.cluster.Stop()
	}
	s.natsMu.Unlock()
	if s.meshServer != nil {
		_ = s.meshServer.Close()
	}
	if s.pool != nil {
		s.pool.Close()
	}
	if s.workDir != "" {
		_ = os.RemoveAll(s.workDir)
	}
}

func randomSecret() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms.
	return hex.EncodeToString(b[:])
}

// redactURL hides the password of a database URL for printing.
func redactURL(u string) string {
	if i := strings.Index(u, "://"); i >= 0 {
		rest := u[i+3:]
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			if colon := strings.Index(rest[:at], ":"); colon >= 0 {
				return u[:i+3] + rest[:colon] + ":xxxxx" + rest[at:]
			}
		}
	}
	return u
}
