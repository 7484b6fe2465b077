package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/config"
	"github.com/nhs-dps/dps-pipeline/pkg/delivery"
	"github.com/nhs-dps/dps-pipeline/pkg/logging"
	"github.com/nhs-dps/dps-pipeline/pkg/mesh"
	"github.com/nhs-dps/dps-pipeline/pkg/outbox"
	"github.com/nhs-dps/dps-pipeline/pkg/process"
	"github.com/nhs-dps/dps-pipeline/pkg/replay"
)

// replayCommand is `sender replay`: the sender's handling of dps.export.ready over a stored range,
// through an ordered consumer, followed by the summary table. Exit 1 when any batch failed.
func replayCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	opts, r, err := replay.ParseArgs("sender replay", args, time.Now())
	if err != nil {
		fmt.Fprintln(stderr, err)
		return process.ExitUsage
	}
	cfg, err := config.LoadSender()
	if err != nil {
		return process.Fatal(stderr, "sender replay", err)
	}
	if !opts.DryRun && !cfg.JobsEnabled {
		return process.Fatal(stderr, "sender replay", &config.Error{Var: "MESH_JOBS_ENABLED",
			Problem: "must be true for sender replay to send anything (or use --dry-run)"})
	}
	// Progress and warnings on stderr; the summary alone on stdout.
	level, _ := logging.ParseLevel(cfg.LogLevel)
	log, err := logging.New(stderr, max(level, slog.LevelWarn), cfg.LogFormat)
	if err != nil {
		return process.Fatal(stderr, "sender replay", err)
	}
	if opts.Force && !opts.DryRun {
		fmt.Fprintln(stderr, "sender replay --force: exports MESH already accepted will be RE-SENT to MESH as NEW messages (DPS receives them again)")
	}
	deps, err := process.Open(ctx, log, cfg.Shared, "sender-replay")
	if err != nil {
		return process.Fatal(stderr, "sender replay", err)
	}
	defer deps.Close()
	var client *mesh.Client
	if cfg.JobsEnabled {
		if client, err = process.NewMESHClient(cfg.MESH, log); err != nil {
			return process.Fatal(stderr, "sender replay", err)
		}
	}
	dcfg := deliveryConfig(cfg)
	if opts.DryRun {
		dcfg.JobsEnabled = false
	}
	s, err := delivery.New(ctx, dcfg, deps.Pool, deps.JS, client, log, nil)
	if err != nil {
		return process.Fatal(stderr, "sender replay", err)
	}
	sum, runErr := replay.Run(ctx, deps.JS, bus.StreamBatches, bus.SubjectExportReady, r, s.ReplayHandler(opts.Force, opts.DryRun))

	// Publish the events of what was sent before exiting.
	flushCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), flushTimeout)
	defer cancel()
	if _, ferr := outbox.NewRelay(deps.Pool, deps.JS, log).Flush(flushCtx); ferr != nil {
		log.Warn("publish pending events at exit; the next process to start will", slog.Any("error", ferr))
	}
	if err := sum.Print(stdout); err != nil {
		return process.Fatal(stderr, "sender replay", err)
	}
	if runErr != nil {
		return process.Fatal(stderr, "sender replay", runErr)
	}
	if err := sum.Err(); err != nil {
		return process.Fatal(stderr, "sender replay", err)
	}
	return process.ExitOK
}
