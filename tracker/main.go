// Command tracker follows each export MESH accepted until the receiver has processed it (or MESH or the
// receiver gives up on it), reading MESH tracking and our MESH inbox (reports, InfAck, BusAck),
// validates the mailbox daily, and carries the MESH operator commands that replace the mesh:* rake
// tasks. It only wires configuration, logging and pkg/tracking together.
//
//	tracker run                          track exports (the service)
//	tracker replay [replay flags]        re-run the handling of dps.export.sent
//	tracker exports [--since 7d] [--programme P] [--status S] [--json]
//	                                     list exports with their lifecycle, newest first
//	tracker records --export ID | --record UUID | --refused [--since T] [--programme P] [--json]
//	                                     each record's delivery history and the receiver's outcome
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
	"context"
	"fmt"
	"io"
	"os"

	"github.com/nhs-dps/dps-pipeline/pkg/cli"
	"github.com/nhs-dps/dps-pipeline/pkg/config"
	"github.com/nhs-dps/dps-pipeline/pkg/mesh"
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
  run                          track exports until the receiver has processed them, reading the
                               MESH inbox for reports and acknowledgement files (the service)
  replay [--since T|--from-seq N] [--until T|--to-seq N] [--force] [--dry-run]
                               re-run the handling of dps.export.sent over a stored range
  exports [--since 7d] [--programme P] [--status S] [--json]
                               list exports with their lifecycle, newest first, then totals
  records --export ID | --record UUID | --refused [--since T] [--programme P] [--json]
                               per record: export, file, MESH message, downloaded, the receiver's
                               outcome and diagnostic (UUIDs only)
  validate-mailbox             validate the MESH mailbox (handshake)
  check-inbox                  print the inbox as JSON
  get-message ID [--out FILE]  download a message to stdout or FILE
  ack-message ID               acknowledge a received message
  track MESSAGE_ID             print MESH's tracking JSON for a sent message

Configuration comes from the environment (DATABASE_URL, NATS_URL, MESH_*, TRACKER_*).
`)
}

func dispatch(args []string, stdout, stderr io.Writer) int {
	commands := map[string]cli.Command{
		"run":     process.ServiceCommand("tracker", loadConfig, run),
		"replay":  replayCommand().Command(),
		"exports": exportsCommand(),
		"records": recordsCommand(),
	}
	for _, name := range operatorCommands {
		f := meshcli.Commands()[name]
		commands[name] = process.MESHCommand("tracker "+name,
			func(ctx context.Context, _ config.MESH, c *mesh.Client, args []string, stdout, stderr io.Writer) int {
				return f(ctx, c, args, stdout, stderr)
			})
	}
	return cli.Dispatch("tracker", usage, commands, args, stdout, stderr)
}

// loadConfig reads the tracker's settings, for `run` and `replay`.
func loadConfig() (config.Tracker, config.Shared, error) {
	cfg, err := config.LoadTracker()
	return cfg, cfg.Shared, err
}
