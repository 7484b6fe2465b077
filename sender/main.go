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
	"slices"

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
	return process.Dispatch("sender", usage, map[string]process.Command{
		"run":       process.ServiceCommand("sender", loadConfig, run),
		"replay":    process.WithSignals(replayCommand),
		"send-file": process.MESHCommand("sender send-file", sendFile),
	}, args, stdout, stderr)
}

func sendFile(ctx context.Context, cfg config.MESH, client *mesh.Client, args []string, stdout, stderr io.Writer) int {
	return meshcli.SendFile(ctx, client, withDefaultWorkflow(args, cfg.DPSWorkflowID), stdout, stderr)
}

// withDefaultWorkflow lets send-file fall back to MESH_DPS_WORKFLOW_ID, the sender's own setting, when
// neither --workflow nor meshcli's MESH_WORKFLOW_ID gives one.
func withDefaultWorkflow(args []string, dpsWorkflow string) []string {
	if dpsWorkflow == "" || os.Getenv(meshcli.WorkflowEnv) != "" {
		return args
	}
	for _, a := range args {
		if a == "--" {
			break
		}
		if a == "-workflow" || a == "--workflow" || slices.ContainsFunc([]string{"-workflow=", "--workflow="}, func(p string) bool {
			return len(a) >= len(p) && a[:len(p)] == p
		}) {
			return args
		}
	}
	return append([]string{"--workflow", dpsWorkflow}, args...)
}

// loadConfig reads the sender's settings, for `run` and `replay`.
func loadConfig() (config.Sender, config.Shared, error) {
	cfg, err := config.LoadSender()
	return cfg, cfg.Shared, err
}
