// Command mesh-sandbox runs the MESH sandbox (pkg/meshsandbox) as its own process
// for local runs and demos. It prints its URL and stops on SIGINT or SIGTERM.
// It holds messages in memory only and must never be given real patient data.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nhs-dps/dps-pipeline/pkg/cli"
	"github.com/nhs-dps/dps-pipeline/pkg/meshsandbox"
)

type config struct {
	addr             string
	tls              bool
	caOut            string
	sharedKey        string
	mailboxes        []meshsandbox.Mailbox
	clientCA         string
	hosts            []string // names the generated server certificate covers
	noNonceCheck     bool
	noTimestampCheck bool
	checkWorkflows   bool
}

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Getenv, os.Stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(cli.ExitOK)
		}
		fmt.Fprintln(os.Stderr, "mesh-sandbox:", err)
		os.Exit(cli.ExitUsage)
	}
	ctx, stop := cli.SignalContext()
	defer stop()
	if err := run(ctx, cfg, os.Stdout, slog.New(slog.NewTextHandler(os.Stderr, nil))); err != nil {
		fmt.Fprintln(os.Stderr, "mesh-sandbox:", err)
		os.Exit(cli.ExitFailure)
	}
}

const defaultMailboxes = "X26ABC1:password;X26ABC2:password;X26ABC3:password"

func parseFlags(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	env := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	envBool := func(name string, def bool) bool {
		if b, err := strconv.ParseBool(getenv(name)); err == nil {
			return b
		}
		return def
	}
	fs := flag.NewFlagSet("mesh-sandbox", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg config
	var mailboxes, hosts string
	fs.StringVar(&cfg.addr, "addr", env("MESH_SANDBOX_ADDR", "127.0.0.1:8700"), "listen address (env MESH_SANDBOX_ADDR)")
	fs.BoolVar(&cfg.tls, "tls", envBool("MESH_SANDBOX_TLS", true), "serve HTTPS with a generated CA and server certificate (env MESH_SANDBOX_TLS)")
	fs.StringVar(&hosts, "hosts", env("MESH_SANDBOX_HOSTS", "localhost,127.0.0.1"), "comma-separated host names and addresses the server certificate covers, e.g. a compose service name (env MESH_SANDBOX_HOSTS)")
	fs.StringVar(&cfg.caOut, "ca-out", env("MESH_SANDBOX_CA_OUT", ""), "write the generated CA certificate (PEM) to this file (env MESH_SANDBOX_CA_OUT)")
	fs.StringVar(&cfg.sharedKey, "shared-key", env("MESH_SHARED_KEY", "TestKey"), "NHSMESH HMAC shared key (env MESH_SHARED_KEY)")
	fs.StringVar(&mailboxes, "mailboxes", env("MESH_SANDBOX_MAILBOXES", defaultMailboxes), `mailboxes "ID:password[:workflow,workflow];..." (env MESH_SANDBOX_MAILBOXES)`)
	fs.StringVar(&cfg.clientCA, "client-ca", env("MESH_SANDBOX_CLIENT_CA", ""), "require client certificates signed by the CA in this PEM file (env MESH_SANDBOX_CLIENT_CA)")
	fs.BoolVar(&cfg.noNonceCheck, "no-nonce-check", envBool("MESH_SANDBOX_NO_NONCE_CHECK", false), "accept a reused nonce (env MESH_SANDBOX_NO_NONCE_CHECK)")
	fs.BoolVar(&cfg.noTimestampCheck, "no-timestamp-check", envBool("MESH_SANDBOX_NO_TIMESTAMP_CHECK", false), "accept any token timestamp (env MESH_SANDBOX_NO_TIMESTAMP_CHECK)")
	fs.BoolVar(&cfg.checkWorkflows, "check-workflows", envBool("MESH_SANDBOX_CHECK_WORKFLOWS", false), "refuse sends to a recipient not registered for the workflow, as live MESH does (env MESH_SANDBOX_CHECK_WORKFLOWS)")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var err error
	if cfg.mailboxes, err = parseMailboxes(mailboxes); err != nil {
		return config{}, fmt.Errorf("-mailboxes: %w", err)
	}
	for _, h := range strings.Split(hosts, ",") {
		if h = strings.TrimSpace(h); h != "" {
			cfg.hosts = append(cfg.hosts, h)
		}
	}
	if cfg.clientCA != "" && !cfg.tls {
		return config{}, errors.New("-client-ca needs -tls")
	}
	return cfg, nil
}

// officialMailboxes are the details the official sandbox gives its test mailboxes,
// so that tracking answers look the same.
var officialMailboxes = map[string]meshsandbox.Mailbox{
	"X26ABC1": {Name: "TESTMB1", ODSCode: "X26", OrgCode: "X26"},
	"X26ABC2": {Name: "TESTMB2", ODSCode: "X26", OrgCode: "X26"},
	"X26ABC3": {Name: "TESTMB3", ODSCode: "X27", OrgCode: "X27"},
}

// parseMailboxes reads "ID:password[:workflow,workflow];...".
func parseMailboxes(s string) ([]meshsandbox.Mailbox, error) {
	var out []meshsandbox.Mailbox
	for _, entry := range strings.Split(s, ";") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		parts := strings.SplitN(entry, ":", 3)
		if len(parts) < 2 || strings.TrimSpace(parts[0]) == "" {
			return nil, fmt.Errorf("mailbox %q: want ID:password[:workflow,...]", entry)
		}
		id := strings.ToUpper(strings.TrimSpace(parts[0]))
		mb := officialMailboxes[id]
		mb.ID, mb.Password = id, parts[1]
		if mb.Name == "" {
			mb.Name = id
		}
		if len(parts) == 3 {
			for _, w := range strings.Split(parts[2], ",") {
				if w = strings.TrimSpace(w); w != "" {
					mb.Workflows = append(mb.Workflows, w)
				}
			}
		}
		out = append(out, mb)
	}
	if len(out) == 0 {
		return nil, errors.New("no mailboxes")
	}
	return out, nil
}

func run(ctx context.Context, cfg config, stdout io.Writer, log *slog.Logger) error {
	sbCfg := meshsandbox.Config{
		SharedKey:             cfg.sharedKey,
		Mailboxes:             cfg.mailboxes,
		DisableNonceCheck:     cfg.noNonceCheck,
		DisableTimestampCheck: cfg.noTimestampCheck,
		CheckWorkflows:        cfg.checkWorkflows,
		Logger:                log,
	}
	if cfg.clientCA != "" {
		b, err := os.ReadFile(cfg.clientCA)
		if err != nil {
			return fmt.Errorf("read client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return fmt.Errorf("client CA %s: no PEM certificates", cfg.clientCA)
		}
		sbCfg.ClientCAs = pool
	}
	sb := meshsandbox.New(sbCfg)
	srv := &http.Server{Handler: sb.Handler(), ReadHeaderTimeout: 30 * time.Second}
	// HTTP/1.1 only: fault injection drops connections by hijacking them.
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetHTTP1(true)

	scheme := "http"
	if cfg.tls {
		ca, err := meshsandbox.NewCA()
		if err != nil {
			return err
		}
		if cfg.caOut != "" {
			if err := os.WriteFile(cfg.caOut, ca.CertPEM(), 0o644); err != nil {
				return fmt.Errorf("write CA: %w", err)
			}
		}
		if srv.TLSConfig, err = sb.TLSConfig(ca, cfg.hosts...); err != nil {
			return err
		}
		scheme = "https"
	}
	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if cfg.tls {
		srv.TLSConfig.NextProtos = []string{"http/1.1"}
		ln = tls.NewListener(ln, srv.TLSConfig)
	}
	fmt.Fprintf(stdout, "mesh-sandbox listening on %s://%s\n", scheme, ln.Addr())
	log.Info("mesh sandbox started", slog.String("addr", ln.Addr().String()), slog.Int("mailboxes", len(cfg.mailboxes)),
		slog.Bool("tls", cfg.tls), slog.Bool("client_certificates", cfg.clientCA != ""),
		slog.Bool("nonce_check", !cfg.noNonceCheck), slog.Bool("timestamp_check", !cfg.noTimestampCheck))

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shut down: %w", err)
	}
	log.Info("mesh sandbox stopped")
	return nil
}
