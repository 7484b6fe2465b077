// Command tracker follows each export MESH accepted until DPS acknowledges it (or MESH gives up on it),
// validates the mailbox daily, and carries the MESH operator commands that replace the mesh:* rake
// tasks. It only wires configuration, logging and pkg/tracking together.
//
//	tracker run                          track exports (the service)
//	tracker replay [replay flags]        re-run the handling of dps.export.sent
//	tracker validate-mailbox             MESH handshake
//	tracker check-inbox                  print the inbox as JSON
//	tracker get-message ID [--out FILE]  download a message
//	tracker ack-message ID               acknowledge a message
//	tracker track MESSAGE_ID             print MESH's tracking JSON
//
// Exit codes: 0 done, 1 failure (MESH said no: its code and text are printed), 2 bad usage or
// configuration (the message names the variable).
package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"

	"github.com/nhs-dps/dps-pipeline/pkg/config"
	"github.com/nhs-dps/dps-pipeline/pkg/logging"
	"github.com/nhs-dps/dps-pipeline/pkg/meshcli"
	"github.com/nhs-dps/dps-pipeline/pkg/process"
)

func main() {
	os.Exit(dispatch(os.Args[1:], os.Stdout, os.Stderr))
}

// operatorCommands are the meshcli commands the tracker carries (send-file belongs to the sender).
var operatorCommands = []string{"validate-mailbox", "check-inbox", "get-message", "ack-message", "track"}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: tracker COMMAND [ARGS]

commands:
  run                          track accepted exports until DPS acknowledges them (the service)
  replay [--since T|--from-seq N] [--until T|--to-seq N] [--force] [--dry-run]
                               re-run the handling of dps.export.sent over a stored range
  validate-mailbox             validate the MESH mailbox (handshake)
  check-inbox                  print the inbox as JSON
  get-message ID [--out FILE]  download a message to stdout or FILE
  ack-message ID               acknowledge a received message
  track MESSAGE_ID             print MESH's tracking JSON for a sent message

Configuration comes from the environment (DATABASE_URL, NATS_URL, MESH_*, TRACKER_*).
`)
}

func dispatch(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return process.ExitUsage
	}
	name, rest := args[0], args[1:]
	switch {
	case name == "-h" || name == "--help" || name == "help":
		usage(stdout)
		return process.ExitOK
	case name == "run":
		if len(rest) != 0 {
			fmt.Fprintf(stderr, "tracker run: takes no arguments, got %q\n", rest)
			return process.ExitUsage
		}
		cfg, err := config.LoadTracker()
		if err != nil {
			return process.Fatal(stderr, "tracker", err)
		}
		log, err := process.NewLogger(cfg.Shared, stderr)
		if err != nil {
			return process.Fatal(stderr, "tracker", err)
		}
		ctx, stop := process.SignalContext()
		defer stop()
		return process.Fatal(stderr, "tracker", run(ctx, cfg, log))
	case name == "replay":
		ctx, stop := process.SignalContext()
		defer stop()
		return replayCommand(ctx, rest, stdout, stderr)
	case slices.Contains(operatorCommands, name):
		cfg, err := config.LoadMESH()
		if err != nil {
			return process.Fatal(stderr, "tracker "+name, err)
		}
		// Operator commands print results on stdout; only warnings (TLS verification off) go to stderr.
		log, err := logging.New(stderr, slog.LevelWarn, logging.FormatAuto)
		if err != nil {
			return process.Fatal(stderr, "tracker "+name, err)
		}
		client, err := process.NewMESHClient(cfg, log)
		if err != nil {
			return process.Fatal(stderr, "tracker "+name, err)
		}
		ctx, stop := process.SignalContext()
		defer stop()
		return meshcli.Commands()[name](ctx, client, rest, stdout, stderr)
	}
	fmt.Fprintf(stderr, "tracker: unknown command %q\n\n", name)
	usage(stderr)
	return process.ExitUsage
}
