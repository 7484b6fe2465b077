// Command producer turns export requests into DPS files: it consumes dps.export.request, runs its own
// nightly schedule, builds one file per programme into the Object Store and announces it on
// dps.export.ready. Its subcommands run the same work once, seed demo data, publish a request, replay
// past requests, and list and re-drive dead letters. The work itself lives in pkg/export, pkg/bus and
// pkg/deadlettercli, the command framework in pkg/cli, the start-up and the service's life in
// pkg/process; this package only wires them up.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/nhs-dps/dps-pipeline/pkg/cli"
	"github.com/nhs-dps/dps-pipeline/pkg/config"
)

func main() {
	os.Exit(dispatch(os.Args[1:], os.Stdout, os.Stderr))
}

func dispatch(args []string, stdout, stderr io.Writer) int {
	return cli.Dispatch("producer", printUsage, map[string]cli.Command{
		"run":          subcommand("run", runService),
		"migrate":      subcommand("migrate", runMigrate),
		"seed":         subcommand("seed", runSeed),
		"export":       subcommand("export", runExport),
		"request":      subcommand("request", runRequest),
		"replay":       replayCommand().Command(),
		"refused":      subcommand("refused", runRefused),
		"dead-letters": subcommand("dead-letters", runDeadLetters),
		"redrive":      subcommand("redrive", runRedrive),
		"topology":     subcommand("topology", runTopology),
		// The producer has always taken the flag package's -help as well as -h and --help.
		"-help": func(_ []string, stdout, _ io.Writer) int { printUsage(stdout); return cli.ExitOK },
	}, args, stdout, stderr)
}

// subcommand is the cli.Spec of `producer <name>`: its flags are parsed first, so that a mistake exits
// 2 before any configuration is read, then the configuration and the logger are loaded and f runs
// until it returns or SIGINT/SIGTERM.
func subcommand(name string, f func(context.Context, config.Producer, command, *slog.Logger, io.Writer) error) cli.Command {
	return func(args []string, stdout, stderr io.Writer) int {
		var cmd command
		return cli.Spec[config.Producer]{
			Name: "producer " + name,
			Parse: func(args []string, stderr io.Writer) (err error) {
				cmd, err = parseCommand(name, args, stderr)
				return err
			},
			Load: func() (config.Producer, config.Shared, error) {
				cfg, shared, err := loadConfig()
				if err == nil && buildsFiles[name] {
					err = cfg.RequireSenderODS()
				}
				return cfg, shared, err
			},
			Run: func(ctx context.Context, cfg config.Producer, log *slog.Logger, stdout, _ io.Writer) error {
				return f(ctx, cfg, cmd, log, stdout)
			},
		}.Main(args, stdout, stderr)
	}
}

// buildsFiles are the subcommands that name DPS files, and so need DPS_SENDER_ODS_CODE.
var buildsFiles = map[string]bool{"run": true, "export": true}

// loadConfig reads the producer's settings, for every subcommand.
func loadConfig() (config.Producer, config.Shared, error) {
	cfg, err := config.LoadProducer()
	return cfg, cfg.Shared, err
}

const usage = `usage: producer <command> [flags]

commands:
  run                                   consume export requests, run the schedule, serve /healthz and /metrics
  migrate [--create-database]           apply database migrations and exit; create the database first if asked
  seed --records N [--seed S]           add N demo vaccination records
  export --programme P|ALL [--dry-run] [--out FILE|DIR] [--wait 2m]
                                        run one export now and print a JSON summary per programme
  request --programme P|ALL [--dry-run] [--requested-by NAME] [--request-id ID] [--wait 2m]
                                        publish an export request on dps.export.request
  refused [--programme P] [--json]      list records left out of files because the receiver would refuse
                                        their row (by UUID, with the rule); they stay queued
  replay (--since T [--until T] | --from-seq N [--to-seq N]) [--force] [--dry-run]
                                        re-run request handling over DPS_REQUESTS
  dead-letters [--stage request|sender|tracker] [--since T] [--limit N] [--json [--show-payload]]
                                        list dead letters in DPS_DEADLETTER (read-only; NATS only)
  topology [--dry-run] [--wait 2m]      create or update the streams, durable consumers and export bucket
                                        (NATS only) and print what changed; --dry-run prints the diff only
  redrive SEQ [SEQ...]                  publish dead letters' original messages to their subjects again
                                        (NATS only); exit 1 if any is refused or fails

Configuration comes from the environment (DATABASE_URL, NATS_URL, DPS_SENDER_ODS_CODE, PRODUCER_SCHEDULE,
HTTP_ADDR, ...).
Run "producer <command> -h" for a command's flags.
`

func printUsage(w io.Writer) { fmt.Fprint(w, usage) }
