package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/config"
	"github.com/nhs-dps/dps-pipeline/pkg/outbox"
	"github.com/nhs-dps/dps-pipeline/pkg/process"
	"github.com/nhs-dps/dps-pipeline/pkg/replay"
	"github.com/nhs-dps/dps-pipeline/pkg/tracking"
)

// replayCommand is `tracker replay`: the handling of dps.export.sent over a stored range. By default
// accepted exports become due now and the rest are skipped; --force asks MESH at once (and so needs
// MESH_JOBS_ENABLED=true); --dry-run changes nothing.
func replayCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	opts, r, err := replay.ParseArgs("tracker replay", args, time.Now())
	if errors.Is(err, flag.ErrHelp) {
		return process.ExitOK
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return process.ExitUsage
	}
	cfg, err := config.LoadTracker()
	if err != nil {
		return process.Fatal(stderr, "tracker replay", err)
	}
	log, err := process.NewLogger(cfg.Shared, stderr)
	if err != nil {
		return process.Fatal(stderr, "tracker replay", err)
	}
	return process.Fatal(stderr, "tracker replay", runReplay(ctx, cfg, log, opts, r, stdout))
}

func runReplay(ctx context.Context, cfg config.Tracker, log *slog.Logger, opts *replay.Options, r replay.Range, stdout io.Writer) error {
	force := opts.Force && !opts.DryRun
	if force && !cfg.JobsEnabled {
		return &config.Error{Var: "MESH_JOBS_ENABLED", Problem: "must be true for replay --force, which asks MESH"}
	}
	deps, err := process.Open(ctx, log, cfg.Shared, "tracker-replay")
	if err != nil {
		return err
	}
	defer deps.Close()

	ro := tracking.ReplayOptions{Force: opts.Force, DryRun: opts.DryRun}
	if force {
		client, err := process.NewMESHClient(cfg.MESH, log)
		if err != nil {
			return err
		}
		// Only TrackNow is called: the tracker is not run, so it needs no metrics registry.
		if ro.Tracker, err = tracking.New(trackingConfig(cfg, deps, client, log)); err != nil {
			return err
		}
	}
	handle, err := tracking.ReplayHandler(deps.Pool, ro)
	if err != nil {
		return err
	}
	sum, err := replay.Run(ctx, deps.JS, bus.StreamEvents, bus.SubjectExportSent, r, handle)
	if perr := sum.Print(stdout); perr != nil && err == nil {
		err = perr
	}
	if err != nil {
		return err
	}
	if force {
		// TrackNow enqueued the events of the transitions it made; publish them before exiting.
		if _, err := outbox.NewRelay(deps.Pool, deps.JS, log).Flush(ctx); err != nil {
			log.Warn("publish events; a running tracker will", slog.Any("error", err))
		}
	}
	return sum.Err()
}
