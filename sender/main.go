// Command sender delivers each dps.export.ready batch to the DPS mailbox through MESH, exactly once in
// effect, as one of any number of replicas sharing the durable consumer "sender". It only wires
// configuration, logging and pkg/delivery together.
//
//	sender run                                                       deliver batches (the service)
//	sender send-file --to MAILBOX [--workflow ID] [--local-id ID] FILE   send one file (mesh:send_file)
//	sender replay [replay flags]                                     re-run delivery over stored batches
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

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: sender COMMAND [ARGS]

commands:
  run                          deliver dps.export.ready batches to MESH (the service)
  send-file --to MAILBOX [--workflow ID] [--local-id ID] FILE
                               send one file through MESH; prints {"message_id": ...}
                               (--workflow defaults to $MESH_WORKFLOW_ID, then $MESH_DPS_WORKFLOW_ID)
  replay [--since T|--from-seq N] [--until T|--to-seq N] [--force] [--dry-run]
                               re-run delivery over stored batches: exports already accepted are
                               skipped; --force RE-SENDS them to MESH as NEW messages; --dry-run
                               only lists what would happen

Configuration comes from the environment (DATABASE_URL, NATS_URL, HTTP_ADDR, MESH_*, SENDER_*).
`)
}

func dispatch(args []string, stdout, stderr io.Writer) int {
	return cli.Dispatch("sender", usage, map[string]cli.Command{
		"run":       process.ServiceCommand("sender", loadConfig, run),
		"replay":    replayCommand().Command(),
		"send-file": process.MESHCommand("sender send-file", sendFile),
	}, args, stdout, stderr)
}

// sendFile is `sender send-file`: --workflow falls back to MESH_WORKFLOW_ID, then to the sender's own
// MESH_DPS_WORKFLOW_ID.
func sendFile(ctx context.Context, cfg config.MESH, client *mesh.Client, args []string, stdout, stderr io.Writer) int {
	return meshcli.SendFileWithDefault(cfg.DPSWorkflowID)(ctx, client, args, stdout, stderr)
}

// loadConfig reads the sender's settings, for `run` and `replay`.
func loadConfig() (config.Sender, config.Shared, error) {
	cfg, err := config.LoadSender()
	return cfg, cfg.Shared, err
}
