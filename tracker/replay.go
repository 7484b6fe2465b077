package main

import (
	"context"
	"log/slog"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/config"
	"github.com/nhs-dps/dps-pipeline/pkg/process"
	"github.com/nhs-dps/dps-pipeline/pkg/replay"
	"github.com/nhs-dps/dps-pipeline/pkg/tracking"
)

// replayCommand is `tracker replay`: the handling of dps.export.sent over a stored range. By default
// accepted exports become due now and the rest are skipped; --force asks MESH at once (and so needs
// MESH_JOBS_ENABLED=true); --dry-run changes nothing.
func replayCommand() process.ReplayCommand[config.Tracker] {
	return process.ReplayCommand[config.Tracker]{
		Name: "tracker replay", Stream: bus.StreamEvents, Subject: bus.SubjectExportSent,
		Load: loadConfig,
		Refuse: func(cfg config.Tracker, opts *replay.Options) error {
			if opts.Force && !opts.DryRun && !cfg.JobsEnabled {
				return &config.Error{Var: "MESH_JOBS_ENABLED", Problem: "must be true for replay --force, which asks MESH"}
			}
			return nil
		},
		Handler: replayHandler,
	}
}

func replayHandler(ctx context.Context, cfg config.Tracker, deps *process.Deps, log *slog.Logger, opts *replay.Options) (replay.Handler, error) {
	ro := tracking.ReplayOptions{Force: opts.Force, DryRun: opts.DryRun}
	if opts.Force && !opts.DryRun {
		client, err := process.NewMESHClient(cfg.MESH, log)
		if err != nil {
			return nil, err
		}
		// Only TrackNow is called: the tracker is not run, so it needs no metrics registry.
		if ro.Tracker, err = tracking.New(trackingConfig(cfg, deps, client, log)); err != nil {
			return nil, err
		}
	}
	return tracking.ReplayHandler(deps.Pool, ro)
}
