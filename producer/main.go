// Command producer turns export requests into DPS files: it consumes dps.export.request, runs its own
// nightly schedule, builds one file per programme into the Object Store and announces it on
// dps.export.ready. Its subcommands run the same work once, seed demo data, publish a request, replay
// past requests, and list and re-drive dead letters. The work itself lives in pkg/export and pkg/bus;
// this package only wires it up.
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/nhs-dps/dps-pipeline/pkg/config"
	"github.com/nhs-dps/dps-pipeline/pkg/process"
)

func main() {
	os.Exit(mainExit(os.Args[1:], os.Stdout, os.Stderr))
}

func mainExit(args []string, stdout, stderr io.Writer) int {
	cmd, err := parseCommand(args, stderr)
	if err == errHelp {
		return process.ExitOK
	}
	if err != nil {
		return process.Fatal(stderr, "producer", err)
	}
	cfg, err := config.LoadProducer()
	if err != nil {
		return process.Fatal(stderr, "producer", err)
	}
	log, err := process.NewLogger(cfg.Shared, stderr)
	if err != nil {
		return process.Fatal(stderr, "producer", err)
	}
	ctx, stop := process.SignalContext()
	defer stop()
	if err := run(ctx, cfg, cmd, log, stdout); err != nil {
		return process.Fatal(stderr, "producer "+cmd.name, err)
	}
	return process.ExitOK
}

const usage = `usage: producer <command> [flags]

commands:
  run                                   consume export requests, run the schedule, serve /healthz and /metrics
  migrate                               apply database migrations and exit
  seed --records N [--seed S]           add N demo vaccination records
  export --programme P|ALL [--dry-run] [--out FILE|DIR]
                                        run one export now and print a JSON summary per programme
  request --programme P|ALL [--dry-run] [--requested-by NAME] [--request-id ID]
                                        publish an export request on dps.export.request
  replay (--since T [--until T] | --from-seq N [--to-seq N]) [--force] [--dry-run]
                                        re-run request handling over DPS_REQUESTS
  dead-letters [--stage request|sender|tracker] [--since T] [--limit N] [--json [--show-payload]]
                                        list dead letters in DPS_DEADLETTER (read-only; NATS only)
  redrive SEQ [SEQ...]                  publish dead letters' original messages to their subjects again
                                        (NATS only); exit 1 if any is refused or fails

Configuration comes from the environment (DATABASE_URL, NATS_URL, PRODUCER_SCHEDULE, HTTP_ADDR, ...).
Run "producer <command> -h" for a command's flags.
`

func printUsage(w io.Writer) { fmt.Fprint(w, usage) }
