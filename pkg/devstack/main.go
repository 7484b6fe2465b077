// Command devstack runs the whole DPS export pipeline on one machine with one command:
//
//	go run ./pkg/devstack --once
//
// It starts an embedded NATS server with JetStream, the MESH sandbox over TLS with our mailbox and the
// DPS one, uses the Postgres at DATABASE_URL (a database of its own on that server, dps_devstack by
// default, recreated each run), seeds demo data, builds and starts producer, senders and tracker as
// separate processes, asks for an export of every programme, plays DPS (downloads, checks and
// acknowledges each file) and prints each export's lifecycle as it happens.
//
// It is for local runs, demos and the end-to-end test. It must never be pointed at real patient data
// or a live MESH mailbox: it generates its own keys and talks only to the sandbox it starts.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/nhs-dps/dps-pipeline/pkg/process"
	"github.com/nhs-dps/dps-pipeline/pkg/store"
)

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

func realMain(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, os.Getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "devstack:", err)
		return 2
	}
	cfg.Stdout, cfg.Stderr = stdout, stderr
	ctx, stop := process.SignalContext()
	defer stop()
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintln(stderr, "devstack:", err)
		return 1
	}
	return 0
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

Flags:
`)
		fs.PrintDefaults()
	}
	cfg := Config{}
	var dbName string
	var keepDB bool
	fs.BoolVar(&cfg.Once, "once", false, "exit when every export is acknowledged (0) or as soon as one cannot be (non-zero)")
	fs.StringVar(&cfg.DataDir, "data", "", "keep NATS data in this directory (default: a temporary directory removed at exit)")
	fs.IntVar(&cfg.Records, "records", 2000, "vaccination records to seed")
	fs.IntVar(&cfg.Senders, "senders", 2, "sender processes sharing the durable consumer")
	fs.DurationVar(&cfg.Timeout, "timeout", 5*time.Minute, "with --once, give up after this long")
	fs.StringVar(&dbName, "db", "dps_devstack", "database to use on the DATABASE_URL server (dropped and created again at start)")
	fs.BoolVar(&keepDB, "keep-db", false, "use the --db database as it is instead of starting it clean")
	fs.IntVar(&cfg.NATSPort, "nats-port", 0, "NATS client port (default: a free port)")
	fs.StringVar(&cfg.LogLevel, "log-level", "info", "LOG_LEVEL of the child processes (debug, info, warn, error)")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q", fs.Arg(0))
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
