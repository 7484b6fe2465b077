// Command devstack runs the whole DPS export pipeline on one machine with one command:
//
//	go run ./pkg/devstack --once
//
// It starts an embedded NATS server with JetStream (or, with --nats-cluster 3, a three-node cluster of
// nats-server processes, one of which --kill-node SIGKILLs and restarts mid-run), the MESH sandbox over TLS with our mailbox and the
// DPS one, uses the Postgres at DATABASE_URL (a database of its own on that server, dps_devstack by
// default, recreated each run), seeds demo data, builds and starts producer, senders and tracker as
// separate processes, asks for an export of every programme, plays DPS (downloads, checks and
// acknowledges each file) and prints each export's lifecycle as it happens.
//
// With --mesh-url it starts no sandbox and uses another one already running instead, such as the
// official NHS MESH sandbox (its test mailboxes X26ABC1 and X26ABC2, password "password", shared key
// TestKey are the defaults):
//
//	go run ./pkg/devstack --once --mesh-url http://127.0.0.1:8700
//	go run ./pkg/devstack --once --mesh-url https://localhost:8701 --mesh-insecure
//
// It is for local runs, demos and the end-to-end test. It must never be pointed at real patient data
// or a live MESH mailbox: it seeds made-up patients and, playing DPS, acknowledges whatever reaches the
// DPS mailbox. So it generates its own keys for the sandbox it starts, and refuses a --mesh-url on an
// NHS domain.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/nhs-dps/dps-pipeline/pkg/cli"
	"github.com/nhs-dps/dps-pipeline/pkg/mesh"
	"github.com/nhs-dps/dps-pipeline/pkg/store"
)

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

func realMain(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, os.Getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return cli.ExitOK
	}
	if err != nil {
		fmt.Fprintln(stderr, "devstack:", err)
		return cli.ExitUsage
	}
	cfg.Stdout, cfg.Stderr = stdout, stderr
	ctx, stop := cli.SignalContext()
	defer stop()
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintln(stderr, "devstack:", err)
		return cli.ExitFailure
	}
	return cli.ExitOK
}

// defaultServerURL is the Postgres the devstack uses when DATABASE_URL is unset: a local server with
// trust authentication, as `docker compose up -d postgres` gives.
const defaultServerURL = "postgres://postgres@127.0.0.1:5432/dps?sslmode=disable"

func parseFlags(args []string, getenv func(string) string, stderr io.Writer) (Config, error) {
	fs := flag.NewFlagSet("devstack", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: go run ./pkg/devstack [flags]

Runs NATS (embedded), the MESH sandbox, producer, senders and tracker against the Postgres at
DATABASE_URL (default `+defaultServerURL+`), using a database of its
own on that server (--db), exports every programme and plays DPS. Ctrl-C stops everything.
With --mesh-url it starts no MESH sandbox and uses the one there, e.g. the official NHS sandbox:
  go run ./pkg/devstack --once --mesh-url http://127.0.0.1:8700
  go run ./pkg/devstack --once --mesh-url https://localhost:8701 --mesh-insecure

Flags:
`)
		fs.PrintDefaults()
	}
	cfg := Config{}
	var dbName string
	var keepDB bool
	fs.BoolVar(&cfg.Once, "once", false, "exit when every export is processed (acknowledged with --no-dps-receiver) and checked (0), or as soon as one cannot be (non-zero)")
	fs.StringVar(&cfg.DataDir, "data", "", "keep NATS data in this directory (default: a temporary directory removed at exit)")
	fs.IntVar(&cfg.Records, "records", 2000, "vaccination records to seed")
	fs.IntVar(&cfg.Senders, "senders", 2, "sender processes sharing the durable consumer")
	fs.DurationVar(&cfg.Timeout, "timeout", 5*time.Minute, "with --once, give up after this long")
	fs.StringVar(&dbName, "db", "dps_devstack", "database to use on the DATABASE_URL server (dropped and created again at start)")
	fs.BoolVar(&keepDB, "keep-db", false, "use the --db database as it is instead of starting it clean")
	fs.IntVar(&cfg.NATSPort, "nats-port", 0, "NATS client port (default: a free port)")
	fs.IntVar(&cfg.NATSCluster, "nats-cluster", 0, "run a JetStream cluster of this many nats-server processes (3 or 5) with the users of pkg/natsserver/conf/permissions.conf and R3 streams, instead of one embedded server")
	fs.BoolVar(&cfg.KillNode, "kill-node", false, "with --nats-cluster: SIGKILL the node leading DPS_BATCHES once batches are in flight, and restart it after --kill-node-down")
	fs.DurationVar(&cfg.KillNodeDown, "kill-node-down", 5*time.Second, "with --kill-node: how long the killed node stays down")
	fs.BoolVar(&cfg.NoReceiver, "no-dps-receiver", false, "DPS only downloads and acknowledges, sending back no InfAck or BusAck: exports end acknowledged, not processed")
	fs.StringVar(&cfg.LogLevel, "log-level", "info", "LOG_LEVEL of the child processes (debug, info, warn, error)")
	m := &cfg.MESH
	fs.StringVar(&m.URL, "mesh-url", "", "use the MESH sandbox at this http(s)://host:port (e.g. the official NHS one) instead of starting ours")
	fs.StringVar(&m.SharedKey, "mesh-shared-key", defaultMESHSharedKey, "with --mesh-url: the sandbox's shared key for the NHSMESH token")
	fs.StringVar(&m.Password, "mesh-password", defaultMESHPassword, "with --mesh-url: the password of both mailboxes")
	fs.StringVar(&m.OurMailbox, "mesh-ours", ourMailbox, "with --mesh-url: the mailbox the senders send from")
	fs.StringVar(&m.DPSMailbox, "mesh-dps", dpsMailbox, "with --mesh-url: the DPS mailbox the devstack receives and acknowledges on")
	fs.StringVar(&m.CAFile, "mesh-ca", "", "with an https --mesh-url: PEM file of the CA that signed the sandbox's certificate (default: system roots)")
	fs.BoolVar(&m.Insecure, "mesh-insecure", false, "with an https --mesh-url: do not verify the sandbox's certificate (sets MESH_DISABLE_SSL_VERIFICATION=true)")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if err := checkMESHFlags(fs, m); err != nil {
		return cfg, err
	}
	switch {
	case cfg.Records < 0:
		return cfg, errors.New("--records must not be negative")
	case cfg.Senders < 1:
		return cfg, errors.New("--senders must be at least 1")
	case cfg.Timeout <= 0:
		return cfg, errors.New("--timeout must be positive")
	case dbName == "":
		return cfg, errors.New("--db must not be empty")
	case cfg.NATSCluster != 0 && cfg.NATSCluster != 3 && cfg.NATSCluster != 5:
		return cfg, errors.New("--nats-cluster must be 3 or 5")
	case cfg.NATSCluster != 0 && cfg.NATSPort != 0:
		return cfg, errors.New("--nats-port is for the embedded server; a --nats-cluster picks its own ports")
	case cfg.KillNode && cfg.NATSCluster == 0:
		return cfg, errors.New("--kill-node needs --nats-cluster 3 (or 5)")
	case cfg.KillNodeDown <= 0:
		return cfg, errors.New("--kill-node-down must be positive")
	}
	server := getenv("DATABASE_URL")
	if server == "" {
		server = defaultServerURL
	}
	url, err := store.WithDatabase(server, dbName)
	if err != nil {
		return cfg, fmt.Errorf("DATABASE_URL: %w", err)
	}
	cfg.DatabaseURL = url
	cfg.RecreateDatabase = !keepDB
	return cfg, nil
}

// The official NHS MESH sandbox's test credentials: every mailbox's password and the shared key of
// the NHSMESH token. They are the defaults of the --mesh-* flags.
const (
	defaultMESHSharedKey = "TestKey"
	defaultMESHPassword  = "password"
)

// checkMESHFlags validates the --mesh-* flags and normalises them (mailbox ids upper-cased as MESH
// does, the URL without a trailing slash). Without --mesh-url none of the others may be given: they
// would be silently ignored by the sandbox the devstack starts.
func checkMESHFlags(fs *flag.FlagSet, m *ExternalMESH) error {
	if m.URL == "" {
		var set []string
		fs.Visit(func(f *flag.Flag) {
			if strings.HasPrefix(f.Name, "mesh-") && f.Name != "mesh-url" {
				set = append(set, "--"+f.Name)
			}
		})
		if len(set) > 0 {
			return fmt.Errorf("%s given without --mesh-url", strings.Join(set, ", "))
		}
		*m = ExternalMESH{}
		return nil
	}
	u, err := url.Parse(m.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("--mesh-url %q must be http(s)://host[:port]", m.URL)
	}
	// A live or integration MESH holds real mailboxes: the devstack would send made-up patients to
	// them and acknowledge other people's messages as DPS.
	if host := strings.ToLower(strings.TrimSuffix(u.Hostname(), ".")); host == "nhs.uk" || strings.HasSuffix(host, ".nhs.uk") {
		return fmt.Errorf("--mesh-url %s is an NHS MESH environment: the devstack only talks to a sandbox", u.Host)
	}
	m.URL = u.Scheme + "://" + u.Host
	m.OurMailbox = strings.ToUpper(strings.TrimSpace(m.OurMailbox))
	m.DPSMailbox = strings.ToUpper(strings.TrimSpace(m.DPSMailbox))
	switch {
	case m.SharedKey == "":
		return errors.New("--mesh-shared-key must not be empty")
	case m.Password == "":
		return errors.New("--mesh-password must not be empty")
	case m.OurMailbox == "" || strings.ContainsAny(m.OurMailbox, ":/?# "):
		return fmt.Errorf("--mesh-ours %q is not a mailbox id", m.OurMailbox)
	case m.DPSMailbox == "" || strings.ContainsAny(m.DPSMailbox, ":/?# "):
		return fmt.Errorf("--mesh-dps %q is not a mailbox id", m.DPSMailbox)
	case m.OurMailbox == m.DPSMailbox:
		return fmt.Errorf("--mesh-ours and --mesh-dps are both %s: the export must go to another mailbox", m.OurMailbox)
	case m.CAFile != "" && m.Insecure:
		return errors.New("--mesh-ca and --mesh-insecure exclude each other")
	case u.Scheme == "http" && (m.CAFile != "" || m.Insecure):
		return fmt.Errorf("--mesh-ca and --mesh-insecure need an https --mesh-url, not %s", m.URL)
	}
	if m.CAFile != "" {
		pem, err := os.ReadFile(m.CAFile)
		if err != nil {
			return fmt.Errorf("--mesh-ca: %w", err)
		}
		if _, err := mesh.TLSConfig(mesh.TLSOptions{CABundlePEM: pem}); err != nil {
			return fmt.Errorf("--mesh-ca %s: %w", m.CAFile, err)
		}
	}
	return nil
}
